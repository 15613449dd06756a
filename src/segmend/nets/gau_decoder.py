"""DeepLabV3+ with the error-pixel detail branch as its decoder: the Tab. 3 decoder baselines' net.

The error-pixel paper (Gong et al., 2021, Sec. 5.1-5.2) checks that its gain does not come from
the detail branch's larger decoder alone: *DeepLabV3+-GAU-Decoder* replaces DeepLabV3+'s 1-stage
decoder with the detail branch's three GAU blocks (:class:`~segmend.nets.error_pixel.DetailBranch`)
and trains the whole net end to end with cross-entropy; the same net trained with loss-rank hard
mining is the *Hard-mining* row, and with a classifier after every GAU block and Li et al.'s deep
layer cascade (2017) the *LC-GAU-Decoder* row (Fig. 4).

:class:`GAUDecoderNet` keeps only the parts of the smp model it reads, the encoder and the
high-level context module (DeepLabV3+'s ASPP, PSPNet's pyramid pooling, DeepLabV3's decoder), in a
:class:`ContextBackbone`, so every parameter takes part in the loss (DDP finds no unused one). The
high-level features and the skip features are exactly those :class:`~segmend.modules.ErrorPixelModule`
gives its detail branch, so the decoder has the detail branch's parameters for the same widths.

:func:`cascade_reach` and :func:`cascade_select` are the layer cascade's pixel routing over per-stage
logits: which pixels each stage is trained on, and which stage labels each pixel at inference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn

from segmend.nets.error_pixel import DetailBranch, skip_candidates
from segmend.nets.factory import build_smp_net, input_size_divisor
from segmend.nets.features import SegmentationFeatures, smp_features
from segmend.nets.gau import resize
from segmend.precision import fp32

HighLevel = Literal["context", "encoder"]

#: Li et al.'s confidence threshold of the layer cascade (0.95, also the error-pixel paper's ``rho``).
CASCADE_CONFIDENCE = 0.95

#: The smp decoder's context module of each architecture that has one, and whether it reads the
#: whole feature list (``True``) or only the deepest map (the same modules
#: :func:`segmend.nets.features.forward_features` reads the ``context`` from).
CONTEXT_MODULES: dict[str, Callable[[nn.Module], tuple[nn.Module, bool]]] = {
    "DeepLabV3Plus": lambda decoder: (decoder.aspp, False),
    "DeepLabV3": lambda decoder: (decoder, True),  # ASPP, 3x3 conv, BN, ReLU: its whole decoder
    "PSPNet": lambda decoder: (decoder.psp, False),
}


class HighLevelFeatures(nn.Module):
    """The encoder's feature list -> the high-level features: a context module's output, or the deepest map.

    Args:
        context: The context module; ``None`` takes the deepest encoder map as it is.
        reads_list: Whether ``context`` takes the whole feature list (else the deepest map).

    """

    def __init__(self, context: nn.Module | None = None, reads_list: bool = False) -> None:
        super().__init__()
        self.context = context
        self.reads_list = reads_list

    def forward(self, features: list[Tensor]) -> Tensor:
        """Encoder maps, shallow to deep -> (B, D, h, w) high-level features."""
        if self.context is None:
            return features[-1]
        return self.context(features if self.reads_list else features[-1])


class ContextBackbone(smp.base.SegmentationModel):
    """The encoder and high-level features of an smp model, as an smp model whose output is those features.

    Its ``decoder`` is a :class:`HighLevelFeatures` and its segmentation head the identity, so
    ``backbone(image)`` and :func:`~segmend.nets.features.smp_features` (``decoder``, ``logits``)
    give the high-level features. Being an smp ``SegmentationModel`` with the source model's
    encoder, it keeps smp's input check and what
    :func:`~segmend.nets.factory.input_size_divisor` and the auxiliary head read.

    Args:
        model: The smp model whose encoder (and context module) is taken; its other parts are dropped.
        high_level: ``"context"`` keeps the context module (the architecture must have one, see
            :data:`CONTEXT_MODULES`), ``"encoder"`` only the encoder.

    Raises:
        ValueError: For ``high_level="context"`` on an architecture without a context module.

    """

    def __init__(self, model: smp.base.SegmentationModel, high_level: HighLevel = "context") -> None:
        super().__init__()
        arch = type(model).__name__
        self.source_architecture = arch
        self.requires_divisible_input_shape = bool(model.requires_divisible_input_shape)
        self.encoder = model.encoder
        if high_level == "context":
            if arch not in CONTEXT_MODULES:
                raise ValueError(
                    f"{arch} has no high-level context module: only {', '.join(CONTEXT_MODULES)} have one (ASPP / "
                    "pyramid pooling output, the paper's high-level features). Use one of those architectures, or "
                    "set high_level: encoder to take the deepest encoder features instead."
                )
            self.decoder = HighLevelFeatures(*CONTEXT_MODULES[arch](model.decoder))
        else:
            self.decoder = HighLevelFeatures()
        self.segmentation_head = nn.Identity()
        self.classification_head = None


@dataclass
class GAUDecoderFeatures(SegmentationFeatures):
    """:class:`~segmend.nets.features.SegmentationFeatures` of a :class:`GAUDecoderNet`, with its stage logits.

    Attributes:
        stage_logits: One (B, C, H, W) logits map per GAU block, coarse to fine, at the image
            resolution (the last equals ``logits``); empty for a net without stage heads.

    """

    stage_logits: list[Tensor] = field(default_factory=list)


class GAUDecoderNet(nn.Module):
    """An smp encoder and context module decoded by the error-pixel detail branch (DeepLabV3+-GAU-Decoder).

    The high-level features (``high_level="context"``: the architecture's context module, e.g.
    DeepLabV3+'s ASPP; ``"encoder"``: the deepest encoder map, for any architecture) and the skip
    features are chosen as :class:`~segmend.modules.ErrorPixelModule` chooses its detail branch's:
    from one dry run on a blank image, the encoder maps finer than the high-level features
    (:func:`~segmend.nets.error_pixel.skip_candidates`), coarsest first, one GAU block per width up
    to the number available. The decoder (``self.decoder``) is a
    :class:`~segmend.nets.error_pixel.DetailBranch`; the logits are bilinearly upsampled from the
    last block's resolution to the image's.

    With ``stage_heads`` every block but the last also gets a 1x1 classifier (the last block's is
    the detail branch's own): :meth:`stage_logits` gives one prediction per block, for the layer
    cascade (:class:`~segmend.modules.LayerCascadeModule`).

    Args:
        num_classes: Output classes.
        arch: segmentation-models-pytorch architecture whose encoder (and context module) is used.
        encoder_name: segmentation-models-pytorch encoder.
        encoder_weights: Pretrained encoder weights from the local cache; ``None`` is random initialisation.
        widths: Widths of the GAU blocks, deep to shallow (multiples of ``groups``; the paper's detail
            branch: 256, 128, 64).
        convs: 3x3 convolutions after each GAU (2 in the paper's Fig. 2).
        groups: GroupNorm groups (32 in the paper).
        high_level: ``"context"`` or ``"encoder"`` (see above).
        stage_heads: Add a classifier after every GAU block.
        in_channels: Image channels.
        **net_kwargs: Further arguments of the smp architecture (e.g. ``encoder_output_stride``).

    Raises:
        ValueError: For an unknown ``high_level``, no width, an architecture without a context
            module under ``high_level="context"``, or an encoder with no map finer than the
            high-level features.

    """

    def __init__(
        self,
        num_classes: int,
        arch: str = "DeepLabV3Plus",
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        widths: Sequence[int] = (256, 128, 64),
        convs: int = 2,
        groups: int = 32,
        high_level: HighLevel = "context",
        stage_heads: bool = False,
        in_channels: int = 3,
        **net_kwargs: Any,
    ) -> None:
        super().__init__()
        if high_level not in get_args(HighLevel):
            raise ValueError(f"high_level must be one of {get_args(HighLevel)}, got {high_level!r}.")
        widths = tuple(widths)
        if not widths:
            raise ValueError("GAUDecoderNet needs at least one width (one GAU block per skip feature).")
        model = build_smp_net(arch, encoder_name, num_classes, encoder_weights, in_channels, **net_kwargs)
        self.backbone = ContextBackbone(model, high_level)
        self.high_level = high_level
        probe = self.probe_features(in_channels)
        high = probe.decoder  # (1, D, h, w)
        candidates = skip_candidates([tuple(f.shape) for f in probe.encoder], tuple(high.shape))
        count = min(len(widths), len(candidates))
        if count == 0:
            raise ValueError(
                f"The {arch} net's encoder ({encoder_name}) has no feature map finer than its high-level features "
                f"{tuple(high.shape[1:])} (C, h, w), so the GAU decoder has no skip feature to decode with; use "
                "another encoder or architecture."
            )
        self.skip_indices = candidates[:count]
        self.decoder = DetailBranch(
            num_classes,
            int(high.shape[1]),
            [int(probe.encoder[i].shape[1]) for i in self.skip_indices],
            widths=widths[:count],
            convs=convs,
            groups=groups,
        )
        blocks = self.decoder.blocks
        self.stage_classifiers = (
            nn.ModuleList(nn.Conv2d(block.out_channels, num_classes, 1) for block in blocks[:-1])
            if stage_heads
            else None
        )

    @property
    def segmentation_model(self) -> ContextBackbone:
        """The smp model inside (:class:`~segmend.nets.features.FeatureNet`): encoder and context module."""
        return self.backbone

    @property
    def has_stage_heads(self) -> bool:
        """Whether every GAU block has a classifier (:meth:`stage_logits`)."""
        return self.stage_classifiers is not None

    @torch.no_grad()
    def probe_features(self, in_channels: int = 3) -> SegmentationFeatures:
        """The backbone's features of one blank image (in eval mode, so no BatchNorm statistic moves).

        The image is as large as :class:`~segmend.modules.ErrorPixelModule`'s probe, so the skips
        are chosen from the same shapes.
        """
        divisor = input_size_divisor(self.backbone) or 32
        size = max(128, 4 * divisor)
        device = next(self.backbone.parameters()).device
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            return smp_features(self.backbone, torch.zeros(1, in_channels, size, size, device=device))
        finally:
            self.backbone.train(was_training)

    def forward_features(self, image: Tensor, boxes: Tensor | None = None) -> GAUDecoderFeatures:
        """(B, in_channels, H, W) images -> features, with the stage logits when the net has stage heads.

        ``encoder`` holds the encoder maps, ``context`` the high-level features (``None`` under
        ``high_level="encoder"``), ``decoder`` the last GAU block's output, ``logits`` the
        (B, C, H, W) logits at the image resolution.

        Args:
            image: (B, in_channels, H, W) images; H and W must suit the encoder (smp's check).
            boxes: Not read; must be ``None``.

        Raises:
            ValueError: If ``boxes`` are given.

        """
        if boxes is not None:
            raise ValueError("GAUDecoderNet does not read box masks; call it with the images only.")
        base = smp_features(self.backbone, image)
        high = base.decoder  # (B, D, h, w) context module output or deepest encoder map
        skips = [base.encoder[index] for index in self.skip_indices]
        blocks = self.decoder.block_features(high, skips)  # (B, widths[k], h_k, w_k), coarse to fine
        size = (int(image.shape[-2]), int(image.shape[-1]))
        logits = resize(self.decoder.classifier(blocks[-1]), size)  # (B, C, H, W)
        stage_logits = []
        if self.stage_classifiers is not None:
            heads = zip(self.stage_classifiers, blocks[:-1], strict=True)
            stage_logits = [resize(head(f), size) for head, f in heads]
            stage_logits.append(logits)  # (B, C, H, W) each
        return GAUDecoderFeatures(
            logits=logits,
            encoder=base.encoder,
            decoder=blocks[-1],
            context=high if self.high_level == "context" else None,
            stage_logits=stage_logits,
        )

    def forward(self, image: Tensor) -> Tensor:
        """(B, in_channels, H, W) images -> (B, C, H, W) logits of the last GAU block."""
        return self.forward_features(image).logits

    def stage_logits(self, image: Tensor) -> list[Tensor]:
        """(B, in_channels, H, W) images -> one (B, C, H, W) logits map per GAU block, coarse to fine.

        Raises:
            ValueError: If the net was built without stage heads.

        """
        if self.stage_classifiers is None:
            raise ValueError("This GAUDecoderNet has no stage heads; build it with stage_heads=True.")
        return self.forward_features(image).stage_logits


def check_rho(rho: float) -> None:
    """Raise unless the cascade's confidence threshold ``rho`` lies in (0, 1].

    Raises:
        ValueError: If it does not.

    """
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"The layer cascade's confidence threshold rho must be in (0, 1] (0.95 in LC), got {rho}.")


def stage_confidence(logits: Tensor) -> Tensor:
    """(B, C, H, W) logits -> (B, H, W) fp32 maximum softmax probability, without gradient."""
    return fp32(logits.detach()).softmax(dim=1).amax(dim=1)


def _check_stages(stage_logits: Sequence[Tensor], rho: float) -> None:
    check_rho(rho)
    if not stage_logits:
        raise ValueError("The layer cascade needs the logits of at least one stage.")
    shapes = {tuple(logits.shape) for logits in stage_logits}
    if len(shapes) != 1 or stage_logits[0].ndim != 4:
        raise ValueError(
            f"Every stage's logits must have one shape (B, C, H, W); got {[tuple(s.shape) for s in stage_logits]}."
        )


def cascade_reach(stage_logits: Sequence[Tensor], rho: float = CASCADE_CONFIDENCE) -> list[Tensor]:
    """The pixels each stage of a layer cascade handles: those every earlier stage is unconfident about.

    Stage 1 handles every pixel; stage ``k + 1`` the pixels of stage ``k`` whose maximum softmax
    probability is below ``rho`` (Li et al., 2017). Computed without gradient.

    Args:
        stage_logits: One (B, C, H, W) logits map per stage, first to last.
        rho: The confidence threshold.

    Returns:
        One (B, H, W) bool mask per stage.

    Raises:
        ValueError: For no stage, stages of different shapes, or ``rho`` outside (0, 1].

    """
    _check_stages(stage_logits, rho)
    reach = torch.ones_like(stage_logits[0][:, 0], dtype=torch.bool)  # (B, H, W)
    masks = []
    for logits in stage_logits:
        masks.append(reach)
        reach = reach & (stage_confidence(logits) < rho)
    return masks


def cascade_select(stage_logits: Sequence[Tensor], rho: float = CASCADE_CONFIDENCE) -> Tensor:
    """The layer cascade's prediction: each pixel takes the first stage confident about it (>= ``rho``).

    A pixel no stage is confident about takes the last stage's logits. The logits of the chosen
    stage are returned per pixel (as :func:`~segmend.nets.error_pixel.fuse` picks a branch's), so
    their argmax is the cascade's label and their softmax the chosen stage's probabilities.

    Args:
        stage_logits: One (B, C, H, W) logits map per stage, first to last.
        rho: The confidence threshold.

    Returns:
        (B, C, H, W) logits.

    Raises:
        ValueError: For no stage, stages of different shapes, or ``rho`` outside (0, 1].

    """
    _check_stages(stage_logits, rho)
    selected = stage_logits[-1]
    for logits in reversed(stage_logits[:-1]):
        confident = stage_confidence(logits) >= rho  # (B, H, W)
        selected = torch.where(confident.unsqueeze(1), logits, selected)  # (B, C, H, W)
    return selected
