"""The decoder baselines of the error-pixel paper's Tab. 3 (Gong et al., 2021, Sec. 5.1-5.2).

Each trains a :class:`~segmend.nets.gau_decoder.GAUDecoderNet` (DeepLabV3+ whose decoder is the
error-pixel detail branch, with the detail branch's widths and parameters) end to end, in one fit,
with no cascade of branches:

* **DeepLabV3+-GAU-Decoder** (:class:`GAUDecoderModule`): cross-entropy over every labelled pixel.
  Does the detail branch's larger decoder alone explain the gain?
* **DeepLabV3+-Hard-mining** (:class:`GAUDecoderModule` with ``hard_fraction=0.2``): loss-rank
  mining (Yu et al., 2018), only the 20% labelled pixels of highest cross-entropy count
  (:func:`~segmend.losses.pixel.loss_rank_cross_entropy`).
* **LC-GAU-Decoder** (:class:`LayerCascadeModule`): Li et al.'s deep layer cascade (2017) over the
  GAU blocks, as in the paper's Fig. 4: a classifier after every block; stage ``k + 1`` is trained
  on, and at inference labels, only the pixels every earlier stage is unconfident about (maximum
  softmax probability below ``rho = 0.95``).

The remaining rows of Tab. 3 are elsewhere: DeepLabV3+ is a plain :class:`SegmentationModule`, the
bagging baseline is :class:`~segmend.modules.ErrorPixelModule` with ``detail_pixels="all"``, and
"Ours" is :class:`~segmend.modules.ErrorPixelModule`. DUpsampling (Tian et al., 2019) is not implemented.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar, get_args

import torch
from torch import Tensor

from segmend.losses.error_pixel import reduce_loss
from segmend.losses.pixel import cross_entropy_map, loss_rank_cross_entropy
from segmend.modules.segmentation import SegmentationModule, Stage, refuse_net
from segmend.nets.features import SegmentationFeatures
from segmend.nets.gau_decoder import (
    CASCADE_CONFIDENCE,
    GAUDecoderFeatures,
    GAUDecoderNet,
    HighLevel,
    cascade_reach,
    cascade_select,
    check_rho,
)


class GAUDecoderModule(SegmentationModule):
    """DeepLabV3+-GAU-Decoder (and, with ``hard_fraction``, DeepLabV3+-Hard-mining) of the error-pixel paper's Tab. 3.

    The net is a :class:`~segmend.nets.gau_decoder.GAUDecoderNet` of ``arch`` / ``encoder_name`` /
    ``encoder_weights`` / ``net_kwargs``: the architecture's encoder and context module (DeepLabV3+'s
    ASPP) decoded by the error-pixel detail branch, whose high-level and skip features are chosen as
    :class:`~segmend.modules.ErrorPixelModule` chooses them, so for the same ``decoder_widths`` it
    has the detail branch's decoder parameters. Everything trains end to end with the optimizer
    and schedule given (the paper: the training strategy of DeepLabV3+).

    Args:
        decoder_widths: Widths of the GAU blocks, deep to shallow (256, 128, 64 as the detail branch);
            the first ``min(len(decoder_widths), available skips)`` are used.
        branch_convs: 3x3 convolutions after each GAU (2 in the paper's Fig. 2).
        groups: GroupNorm groups (32 in the paper); widths must be multiples.
        high_level: ``"context"`` (the architecture's context module: DeepLabV3Plus, DeepLabV3 and
            PSPNet have one) or ``"encoder"`` (the deepest encoder map, for any architecture).
        hard_fraction: ``None``: cross-entropy over every labelled pixel (DeepLabV3+-GAU-Decoder). A
            value in (0, 1]: loss-rank hard mining, the mean cross-entropy of that share of the
            batch's labelled pixels with the highest loss (0.2 in the paper's Hard-mining row).
        **kwargs: Arguments of :class:`SegmentationModule` (``num_classes``, ``arch``,
            ``encoder_name``, ``encoder_weights``, ``net_kwargs``, optimizer, schedule, ...).

    Raises:
        ValueError: For a bad ``hard_fraction``, ``high_level`` or ``decoder_widths``, a custom ``net``,
            or an architecture without a context module under ``high_level="context"``.

    """

    #: Whether the net gets a classifier after every GAU block.
    with_stage_heads: ClassVar[bool] = False

    def __init__(
        self,
        decoder_widths: tuple[int, ...] = (256, 128, 64),
        branch_convs: int = 2,
        groups: int = 32,
        high_level: HighLevel = "context",
        hard_fraction: float | None = None,
        **kwargs: Any,
    ) -> None:
        if hard_fraction is not None and not 0.0 < hard_fraction <= 1.0:
            raise ValueError(
                f"hard_fraction must be in (0, 1] (0.2 in the paper's Hard-mining row) or null for plain "
                f"cross-entropy; got {hard_fraction}."
            )
        if high_level not in get_args(HighLevel):
            raise ValueError(f"high_level must be one of {get_args(HighLevel)}, got {high_level!r}.")
        if not decoder_widths:
            raise ValueError("decoder_widths must name at least one width (one GAU block per skip feature).")
        refuse_net(
            kwargs,
            type(self).__name__,
            "its GAUDecoderNet itself from arch / encoder_name / encoder_weights / net_kwargs",
            "or train your own net with SegmentationModule",
        )
        super().__init__(**kwargs)

    def configure_models(self) -> None:
        """Build the :class:`~segmend.nets.gau_decoder.GAUDecoderNet`."""
        hp = self.hparams
        self.net = GAUDecoderNet(
            self.num_classes,
            arch=hp.arch,
            encoder_name=hp.encoder_name,
            encoder_weights=hp.encoder_weights,
            widths=tuple(hp.decoder_widths),
            convs=hp.branch_convs,
            groups=hp.groups,
            high_level=hp.high_level,
            stage_heads=self.with_stage_heads,
            **(hp.net_kwargs or {}),
        )

    def configure_losses(self) -> None:
        """Set ``self.criterion``: cross-entropy, or loss-rank cross-entropy when ``hard_fraction`` is set."""
        fraction = self.hparams.hard_fraction
        if fraction is None:
            super().configure_losses()
        else:
            self.criterion = partial(loss_rank_cross_entropy, fraction=fraction, ignore_index=self.ignore_index)


def layer_cascade_losses(
    stage_logits: Sequence[Tensor], target: Tensor, reach: Sequence[Tensor], ignore_index: int = 255
) -> list[Tensor]:
    """Each stage's cross-entropy over the labelled pixels it handles in the layer cascade.

    Args:
        stage_logits: One (B, C, H, W) logits map per stage, first to last.
        target: (B, H, W) labels, ``ignore_index`` where unlabeled.
        reach: One (B, H, W) bool mask per stage, the pixels it handles
            (:func:`~segmend.nets.gau_decoder.cascade_reach`).
        ignore_index: Label of unlabeled pixels.

    Returns:
        One fp32 scalar per stage: the mean over its labelled pixels; a zero connected to its
        logits (zero gradient) when it handles none.

    Raises:
        ValueError: If the numbers of stages and masks differ.

    """
    if len(stage_logits) != len(reach):
        raise ValueError(f"Got {len(stage_logits)} stages' logits but {len(reach)} masks of the pixels they handle.")
    labelled = target != ignore_index  # (B, H, W)
    losses = []
    for logits, handled in zip(stage_logits, reach, strict=True):
        counted = handled & labelled
        ce = cross_entropy_map(logits, target, ignore_index)  # (B, H, W) fp32
        losses.append(reduce_loss(torch.where(counted, ce, torch.zeros_like(ce)), counted, "mean"))
    return losses


class LayerCascadeModule(GAUDecoderModule):
    """LC-GAU-Decoder of the error-pixel paper's Tab. 3: a deep layer cascade (Li et al., 2017) over the GAU blocks.

    The net has a 1x1 classifier after each GAU block (stage ``k``, coarse to fine; the last is the
    decoder's own classifier). Training: stage 1's cross-entropy counts every labelled pixel; stage
    ``k + 1``'s only the labelled pixels every earlier stage left unconfident (maximum softmax
    probability below ``rho``, decided without gradient); the loss is the sum of the stage losses,
    each a mean over its pixels (``train/loss``; ``train/stage<k>_loss`` and
    ``train/stage<k>_pixel_share``, the share of the labelled pixels stage ``k`` handles, are logged
    too). ``val/loss`` and ``test/loss`` are that same sum. Inference (:meth:`forward`, validation
    metrics, predict): each pixel takes the label of the first stage whose confidence is at least
    ``rho``, the last stage's otherwise.

    Unlike LC, whose later stages convolve only the region of unconfident pixels (the features of
    settled pixels are zeroed there), every stage's features are computed densely and the routing
    applies to the losses and the labels only: a later stage still sees its settled neighbours'
    features, so near a region's border its outputs can differ from LC's, and LC's speed-up is not
    reproduced. The GAU blocks read whole-image pooled features anyway (the paper's Fig. 4 adapts LC
    to them).

    Args:
        rho: The confidence threshold (0.95 in LC and in the paper), in (0, 1].
        **kwargs: Arguments of :class:`GAUDecoderModule` (``hard_fraction`` must stay unset).

    Raises:
        ValueError: For ``rho`` outside (0, 1], a ``hard_fraction``, or any error of
            :class:`GAUDecoderModule`.

    """

    with_stage_heads: ClassVar[bool] = True

    def __init__(self, rho: float = CASCADE_CONFIDENCE, **kwargs: Any) -> None:
        check_rho(rho)
        if kwargs.get("hard_fraction") is not None:
            raise ValueError(
                "LayerCascadeModule trains with the layer-cascade loss; hard_fraction applies to GAUDecoderModule "
                "only. Remove hard_fraction."
            )
        super().__init__(**kwargs)

    def stage_output_logits(self, features: SegmentationFeatures, image: Tensor) -> list[Tensor]:
        """Each stage's (B, C, H, W) fp32 logits at the resolution of ``image``, as :meth:`output_logits` gives logits.

        Raises:
            ValueError: If ``features`` carry no stage logits (not those of this module's net).

        """
        if not isinstance(features, GAUDecoderFeatures) or not features.stage_logits:
            raise ValueError(
                "LayerCascadeModule needs the stage logits of a GAUDecoderNet with stage heads; got "
                f"{type(features).__name__} without them."
            )
        outputs = []
        for logits in features.stage_logits:
            outputs.append(super().output_logits(SegmentationFeatures(logits=logits), image))
        return outputs

    def output_logits(self, features: SegmentationFeatures, image: Tensor) -> Tensor:
        """(B, C, H, W) fp32 logits of the cascade's prediction: the first confident stage's, per pixel."""
        return cascade_select(self.stage_output_logits(features, image), self.hparams.rho)

    def shared_step(self, batch: dict[str, Any], stage: Stage) -> Tensor:
        """Stage logits, the cascade loss (logged as ``<stage>/loss``), and (val/test) the metrics of the cascade."""
        image = batch["image"]
        batch_size = image.shape[0]
        rho = self.hparams.rho
        target = self.targets(batch)
        features = self.batch_features(batch)
        stage_logits = self.stage_output_logits(features, image)
        reach = cascade_reach(stage_logits, rho)
        stage_losses = layer_cascade_losses(stage_logits, target, reach, self.ignore_index)
        loss = torch.stack(stage_losses).sum()
        if stage == "train":
            labelled = target != self.ignore_index
            for k, (stage_loss, handled) in enumerate(zip(stage_losses, reach, strict=True), start=1):
                share = (handled & labelled).sum() / labelled.sum().clamp_min(1)
                self.log(f"train/stage{k}_loss", stage_loss.detach(), batch_size=batch_size)
                self.log(f"train/stage{k}_pixel_share", share.float(), batch_size=batch_size)
            loss = self.with_aux_loss(loss, batch, features)
        self.log_loss(stage, loss, batch_size)
        if stage != "train":
            tta = self._tta_active(stage)
            scores = self.predict_probabilities(image, stage) if tta else cascade_select(stage_logits, rho)
            self._metrics(stage).update(scores.argmax(dim=1), target)
        return loss
