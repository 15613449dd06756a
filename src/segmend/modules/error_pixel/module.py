"""ErrorPixelModule: the cascade of branches, its losses and steps (stages and reporting in their own files)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from segmend.frozen import FrozenModel
from segmend.losses.error_pixel import balanced_error_loss, detail_loss, error_target
from segmend.modules.error_pixel.reporting import ErrorPixelReporting
from segmend.modules.error_pixel.stages import ErrorPixelStages, Phase
from segmend.modules.segmentation import SegmentationModule, Stage, refuse_net
from segmend.nets.error_pixel import (
    DetailBranch,
    ErrorBranch,
    ErrorMass,
    check_threshold,
    error_mask,
    fuse,
    skip_candidates,
)
from segmend.nets.error_pixel import error_mass as compute_error_mass
from segmend.nets.factory import build_smp_net, input_size_divisor
from segmend.nets.features import SegmentationFeatures
from segmend.nets.tta import resize_logits, tta_probabilities
from segmend.precision import fp32

HighLevel = Literal["context", "encoder"]
DetailPixels = Literal["predicted_error", "all"]
Fusion = Literal["error_mask", "average"]

#: Architectures whose features have a ``context`` (the paper's high-level features).
CONTEXT_ARCHITECTURES = ("DeepLabV3Plus", "DeepLabV3", "PSPNet")


@dataclass
class ErrorPixelOutputs:
    """What the cascade computed for a batch, each at the image resolution, fp32.

    Attributes:
        semantic_logits: (B, C, H, W) logits of the frozen semantic branch.
        error_logits: (B, 1, H, W) logits of the error branch (``sigmoid`` gives ``P_ep``).
        detail_logits: (B, C, H, W) logits of the detail branch, ``None`` when it was not run.

    """

    semantic_logits: Tensor
    error_logits: Tensor
    detail_logits: Tensor | None = None

    @property
    def semantic_probs(self) -> Tensor:
        """(B, C, H, W) semantic class probabilities ``P_sb``."""
        return self.semantic_logits.softmax(dim=1)

    @property
    def error_prob(self) -> Tensor:
        """(B, 1, H, W) predicted error probabilities ``P_ep``."""
        return torch.sigmoid(self.error_logits)


class ErrorPixelModule(ErrorPixelStages, ErrorPixelReporting, SegmentationModule):
    """Erroneous pixel prediction over a frozen semantic segmentation network.

    The semantic branch is ``self.net``, a :class:`~segmend.frozen.FrozenModel` (always in eval
    mode, BatchNorm and Dropout included, run without gradients, outside the optimizer). Its
    weights come from ``semantic_checkpoint`` (any smp architecture: the net is rebuilt from the
    checkpoint's hyper-parameters, and ``arch`` / ``encoder_name`` / ``net_kwargs`` are then unused)
    or from the ``semantic`` stage, which fits a plain :class:`SegmentationModule` of ``arch`` /
    ``encoder_name`` / ``net_kwargs`` first.

    The branch widths are read from one dry-run forward of the semantic net at construction: the
    error branch and the detail branch take its ``context`` (or, with ``high_level="encoder"``,
    its deepest encoder map) as high-level features; the detail branch has one GAU block per skip
    feature, ``min(len(detail_widths), available)`` of them, chosen by
    :func:`~segmend.nets.error_pixel.select_skips` (the encoder maps finer than the high-level
    features, coarsest first).

    Which branch trains is the **phase** (:meth:`set_phase`, set by the stages): ``"error"`` trains
    the error branch with Eq. 2; ``"detail"`` trains the detail branch with Eqs. 3-4, the error
    branch frozen. The optimizer (Adam and a poly(0.9) schedule in the shipped configs) holds the
    training branch only. :meth:`forward` returns the fused logits of Eq. 5 once the detail stage
    has started (the ``detail_active`` flag, saved in checkpoints); before that there is no trained
    detail branch, and the semantic logits are returned.

    Logged at each validation (and test, with ``test/``): ``val/mIoU`` (with ``aAcc``, ``mAcc`` and
    per-class IoU) of the fused prediction, ``val/semantic_mIoU`` (...) of the semantic branch on the
    same images, ``val/error_IoU``, ``val/error_hard_recall``, ``val/error_precision``,
    ``val/error_recall`` at ``t`` and ``val/error_fraction`` (erroneous share of the labelled pixels);
    the threshold sweep of the paper's Tab. 1 is written to ``<stage folder>/error_sweep/val.md`` and
    ``.png`` and, with a W&B logger, logged as ``val/error_sweep`` (image) and
    ``val/error_sweep_table``.

    Args:
        semantic_checkpoint: A :class:`SegmentationModule` checkpoint of the semantic network (read
            with tensors only). ``None``: ``segmend fit`` trains it first (stage ``semantic``).
        high_level: The high-level features: ``"context"`` (the paper's: ASPP / pyramid pooling
            output; DeepLabV3+, DeepLabV3 and PSPNet have one) or ``"encoder"`` (the deepest
            encoder map, for any architecture).
        threshold: ``t``, the binarisation threshold of the error map (Eq. 4; 0.7 in the paper).
        rho: The semantic confidence above which an error is hard (0.95 in the paper).
        easy_weight: ``w1`` of Eq. 2 (1.0).
        hard_weight: ``w2`` of Eq. 2 (1.5).
        detail_pixels: The pixels the detail loss counts: ``"predicted_error"`` (Eqs. 3-4: labelled
            pixels with ``P_ep > t``) or ``"all"`` (every labelled pixel, as the bagging baseline trains it).
        fusion: How the semantic and detail predictions combine: ``"error_mask"`` (Eq. 5) or
            ``"average"`` (the mean of both branches' probabilities, the paper's bagging baseline of
            Tab. 3 with ``detail_pixels="all"``; the error branch is still trained and reported, and
            not used by the prediction).
        error_width: Width of the error branch's GAU stage.
        error_prob_channels: Channels of the error branch's probability-map features.
        error_image_channels: Channels of the error branch's image stem.
        error_stride: Working stride of the error branch (4: the resolution of DeepLabV3+'s decoder).
        detail_widths: Widths of the detail branch's GAU blocks, deep to shallow (three in the paper);
            the first ``min(len(detail_widths), available skips)`` are used.
        branch_convs: 3x3 convolutions after each GAU (2 in the paper's Fig. 2).
        groups: GroupNorm groups of both branches (32 in the paper); widths must be multiples.
        semantic_steps: ``max_steps`` of the ``semantic`` stage (``None``: the trainer's setting).
        semantic_epochs: ``max_epochs`` of the ``semantic`` stage (give steps or epochs, not both).
        error_steps: ``max_steps`` of the ``error`` stage (60k in the paper).
        error_epochs: ``max_epochs`` of the ``error`` stage.
        detail_steps: ``max_steps`` of the ``detail`` stage (90k in the paper).
        detail_epochs: ``max_epochs`` of the ``detail`` stage.
        **kwargs: Arguments of :class:`SegmentationModule`: ``num_classes``, ``class_names``,
            ``ignore_index``, the optimizer and schedule (every stage's, each stage gets a fresh
            one), test-time augmentation, and the semantic stage's ``arch``, ``encoder_name``,
            ``encoder_weights``, ``net_kwargs`` and ``aux_weight``.

    Raises:
        ValueError: For bad thresholds or weights, both steps and epochs for one stage, a custom
            ``net``, a semantic net without the requested high-level features (naming the
            architecture and those that have them), or a checkpoint whose classes differ.

    """

    def __init__(
        self,
        semantic_checkpoint: str | None = None,
        high_level: HighLevel = "context",
        threshold: float = 0.7,
        rho: float = 0.95,
        easy_weight: float = 1.0,
        hard_weight: float = 1.5,
        detail_pixels: DetailPixels = "predicted_error",
        fusion: Fusion = "error_mask",
        error_width: int = 64,
        error_prob_channels: int = 32,
        error_image_channels: int = 32,
        error_stride: int = 4,
        detail_widths: tuple[int, ...] = (256, 128, 64),
        branch_convs: int = 2,
        groups: int = 32,
        semantic_steps: int | None = None,
        semantic_epochs: int | None = None,
        error_steps: int | None = None,
        error_epochs: int | None = None,
        detail_steps: int | None = None,
        detail_epochs: int | None = None,
        **kwargs: Any,
    ) -> None:
        check_threshold(threshold)
        check_threshold(rho, "hard confidence rho")
        if easy_weight < 0 or hard_weight < 0:
            raise ValueError(f"easy_weight and hard_weight must be >= 0; got {easy_weight} and {hard_weight}.")
        for name, value, allowed in (
            ("high_level", high_level, HighLevel),
            ("detail_pixels", detail_pixels, DetailPixels),
            ("fusion", fusion, Fusion),
        ):
            if value not in get_args(allowed):
                raise ValueError(f"{name} must be one of {get_args(allowed)}, got {value!r}.")
        if not detail_widths:
            raise ValueError("detail_widths must name at least one width (one GAU block per skip feature).")
        lengths = {
            "semantic": (semantic_steps, semantic_epochs),
            "error": (error_steps, error_epochs),
            "detail": (detail_steps, detail_epochs),
        }
        for stage, (steps, epochs) in lengths.items():
            if steps is not None and epochs is not None:
                raise ValueError(
                    f"{stage}_steps={steps} and {stage}_epochs={epochs} both set the length of stage '{stage}'; "
                    "give one of them (the other null)."
                )
            if any(value is not None and value < 1 for value in (steps, epochs)):
                raise ValueError(f"{stage}_steps and {stage}_epochs must be >= 1 or null; got {steps} and {epochs}.")
        refuse_net(
            kwargs,
            "ErrorPixelModule",
            "its semantic net itself, from semantic_checkpoint or from arch / encoder_name / net_kwargs",
            "save your trained net as a SegmentationModule checkpoint and give it as semantic_checkpoint",
        )
        super().__init__(**kwargs)
        self.phase: Phase = "error"
        self.set_phase("error")

    # ------------------------------------------------------------------ construction
    def configure_models(self) -> None:
        """Build the frozen semantic branch, then the error and detail branches at the widths it gives."""
        hp = self.hparams
        path = hp.semantic_checkpoint
        if path is not None:
            self.net = FrozenModel.from_checkpoint(path)
        else:  # trained by the semantic stage (or loaded with this module's weights); no pretrained file needed
            net_kwargs = dict(hp.net_kwargs or {})
            self.net = FrozenModel(build_smp_net(hp.arch, hp.encoder_name, self.num_classes, None, **net_kwargs))
        # persistent flags: what the checkpoint's weights are (resumed fits and predict read them)
        self.register_buffer("semantic_ready", torch.tensor(path is not None))
        self.register_buffer("error_ready", torch.tensor(False))
        self.register_buffer("detail_active", torch.tensor(False))
        features = self.probe_features()
        logit_channels = features.logits.shape[1]
        if logit_channels != self.num_classes:
            source = f"semantic_checkpoint {path}" if path is not None else f"the {hp.arch} net"
            raise ValueError(
                f"{source} predicts {logit_channels} classes but the data has num_classes={self.num_classes}; "
                "give the checkpoint of a semantic net trained on this data's classes."
            )
        high = self.high_level_features(features)
        candidates = skip_candidates([tuple(f.shape) for f in features.encoder], tuple(high.shape))
        count = min(len(hp.detail_widths), len(candidates))
        if count == 0:
            raise ValueError(
                f"The {self.semantic_architecture} net's encoder has no feature map finer than its high-level "
                f"features {tuple(high.shape[1:])} (C, h, w), so the detail branch has no skip feature to decode "
                "with; use another encoder or architecture."
            )
        self.skip_indices = candidates[:count]
        skip_channels = [int(features.encoder[i].shape[1]) for i in self.skip_indices]
        self.error_branch = ErrorBranch(
            self.num_classes,
            int(high.shape[1]),
            width=hp.error_width,
            prob_channels=hp.error_prob_channels,
            image_channels=hp.error_image_channels,
            stride=hp.error_stride,
            convs=hp.branch_convs,
            groups=hp.groups,
        )
        self.detail_branch = DetailBranch(
            self.num_classes,
            int(high.shape[1]),
            skip_channels,
            widths=tuple(hp.detail_widths)[:count],
            convs=hp.branch_convs,
            groups=hp.groups,
        )

    @property
    def semantic(self) -> FrozenModel:
        """The frozen semantic branch (``self.net``)."""
        return self.net

    @property
    def semantic_architecture(self) -> str:
        """Class name of the semantic net (``DeepLabV3Plus``, ``PSPNet``, ...)."""
        inner = self.net.segmentation_model
        return type(inner if inner is not None else self.net.module).__name__

    def probe_features(self) -> SegmentationFeatures:
        """The semantic net's features of one blank image, for the branch widths (a dry run on the CPU)."""
        divisor = input_size_divisor(self.net) or 32
        size = max(128, 4 * divisor)
        device = next(self.net.parameters()).device
        return self.net.forward_features(torch.zeros(1, 3, size, size, device=device))

    def high_level_features(self, features: SegmentationFeatures) -> Tensor:
        """The semantic branch's high-level features: its ``context``, or its deepest encoder map.

        Raises:
            ValueError: If ``high_level="context"`` and the net has no context (naming the architecture,
                those that have one, and the ``"encoder"`` fallback).

        """
        if self.hparams.high_level == "encoder":
            return features.encoder[-1]
        if features.context is None:
            raise ValueError(
                f"The semantic net ({self.semantic_architecture}) has no high-level context features: only "
                f"{', '.join(CONTEXT_ARCHITECTURES)} expose one (ASPP / pyramid pooling output, the paper's "
                "high-level features). Use one of those architectures, or set high_level: encoder to take the "
                "deepest encoder features instead."
            )
        return features.context

    def configure_aux_head(self) -> None:
        """No auxiliary head here: ``aux_weight`` applies to the semantic stage's net."""
        self.aux_head = None

    # ------------------------------------------------------------------ optimisation
    def parameter_groups(self) -> list[dict[str, Any]]:
        """One group: the parameters of the branch that trains in this phase."""
        return [{"params": list(self.trainable_branch().parameters()), "name": f"{self.phase}_branch"}]

    # ------------------------------------------------------------------ forward
    def cascade(self, image: Tensor, detail: bool = True) -> ErrorPixelOutputs:
        """Run the semantic branch, the error branch and (if ``detail``) the detail branch.

        Outside training, images whose sides are not multiples of the semantic net's divisor are
        padded (bottom/right) for every branch and the outputs cropped back.

        Args:
            image: (B, 3, H, W) images.
            detail: Whether to run the detail branch.

        Returns:
            The branches' outputs at the image resolution, fp32.

        Raises:
            ValueError: For a training batch whose size the semantic net cannot take.

        """
        height, width = image.shape[-2:]
        pad_rows, pad_cols = self._padding(image)
        padded = F.pad(image, (0, pad_cols, 0, pad_rows)) if pad_rows or pad_cols else image
        size = (height + pad_rows, width + pad_cols)
        features = self.forward_features(padded)  # the frozen net's: no gradient
        self._check_logits(features.logits)
        semantic_logits = resize_logits(fp32(features.logits), size)  # (B, C, Hp, Wp)
        high = self.high_level_features(features)  # (B, H_c, h, w)
        error_logits = fp32(self.error_branch(semantic_logits.softmax(dim=1), high, padded))  # (B, 1, Hp, Wp)
        detail_logits = None
        if detail:
            skips = [features.encoder[index] for index in self.skip_indices]
            detail_logits = fp32(self.detail_branch(high, skips, size))[..., :height, :width]  # (B, C, H, W)
        return ErrorPixelOutputs(
            semantic_logits[..., :height, :width], error_logits[..., :height, :width], detail_logits
        )

    def fused_logits(self, outputs: ErrorPixelOutputs) -> Tensor:
        """(B, C, H, W) logits of Eq. 5: the detail branch's where ``P_ep > t``, the semantic branch's elsewhere.

        A pixel's softmax is that of the logits chosen for it, so the softmax of these logits is
        ``P_f = E_ep P_db + (1 - E_ep) P_sb`` exactly. With ``fusion="average"``, the logarithm of
        ``(P_sb + P_db) / 2``, whose softmax is that average. Before the detail stage
        (``detail_active`` false) or without detail logits, the semantic logits.
        """
        if outputs.detail_logits is None or not bool(self.detail_active):
            return outputs.semantic_logits
        if self.hparams.fusion == "average":
            return ((outputs.semantic_probs + outputs.detail_logits.softmax(dim=1)) / 2).log()
        return fuse(outputs.semantic_logits, outputs.detail_logits, outputs.error_prob, self.hparams.threshold)

    def forward(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) images -> (B, C, H, W) fp32 fused logits (Eq. 5; the semantic ones before the detail stage)."""
        return self.fused_logits(self.cascade(image, detail=bool(self.detail_active)))

    def semantic_logits(self, image: Tensor) -> Tensor:
        """(B, C, H, W) fp32 logits of the frozen semantic branch at the image resolution."""
        return self.cascade(image, detail=False).semantic_logits

    @torch.no_grad()
    def error_mass(self, image: Tensor) -> ErrorMass:
        """Per-image error mass: the mean predicted error probability and the error mask's area (``P_ep > t``).

        An acquisition score that needs no competing model (MAD troubleshooting). Every branch
        normalises with GroupNorm and the semantic net is always in eval mode, so the result does
        not depend on the module's train/eval mode (in train mode image sizes must suit the net).

        Args:
            image: (B, 3, H, W) images.

        Returns:
            ``mean`` and ``area`` (fraction of the image's pixels), each (B,) fp32.

        """
        return compute_error_mass(self.cascade(image, detail=False).error_prob, self.hparams.threshold)

    # ------------------------------------------------------------------ losses
    def error_targets(self, outputs: ErrorPixelOutputs, target: Tensor) -> Tensor:
        """(B, H, W) ``M_err`` of Eq. 1: 1 where the semantic label differs from ``target``; ignored stay ignored."""
        return error_target(outputs.semantic_logits, target, self.ignore_index)

    def detail_weighting(self, outputs: ErrorPixelOutputs) -> Tensor | None:
        """The error map selecting the detail loss's pixels (``detail_pixels``); ``None`` counts every labelled pixel.

        The place where other pixel selections (the paper's Tab. 3 baselines) plug in.
        """
        if self.hparams.detail_pixels == "all":
            return None
        return outputs.error_prob.detach()

    def branch_losses(self, outputs: ErrorPixelOutputs, target: Tensor) -> dict[str, Tensor]:
        """The losses of the branches that ran, by branch name: ``error`` (Eq. 2) and ``detail`` (Eqs. 3-4).

        Args:
            outputs: What :meth:`cascade` computed.
            target: (B, H, W) labels, ``ignore_index`` where unlabeled.

        Returns:
            ``{"error": ..., "detail": ...}`` (``detail`` only when the detail branch ran), fp32 scalars.

        """
        hp = self.hparams
        losses = {
            "error": balanced_error_loss(
                outputs.error_logits,
                outputs.semantic_probs,
                target,
                hp.rho,
                hp.easy_weight,
                hp.hard_weight,
                self.ignore_index,
            )
        }
        if outputs.detail_logits is not None:
            losses["detail"] = detail_loss(
                outputs.detail_logits, target, self.detail_weighting(outputs), hp.threshold, self.ignore_index
            )
        return losses

    # ------------------------------------------------------------------ steps
    def shared_step(self, batch: dict[str, Any], stage: Stage) -> Tensor:
        """The cascade, the loss of the training branch, and (val/test) the fused, semantic and error metrics.

        In training only the branches the phase needs run (the detail branch not in the error phase).
        """
        image = batch["image"]
        target = self.targets(batch)
        batch_size = image.shape[0]
        detail = self.phase == "detail" or (stage != "train" and bool(self.detail_active))
        outputs = self.cascade(image, detail=detail)
        losses = self.branch_losses(outputs, target)
        loss = losses.get("detail", losses["error"])  # the last branch that ran: in training, the phase's
        self.log_loss(stage, loss, batch_size)
        if stage == "train":
            self.log(f"train/{self.phase}_loss", loss.detach(), batch_size=batch_size)
            if self.phase == "detail":
                labelled = target != self.ignore_index
                flagged = error_mask(outputs.error_prob, self.hparams.threshold) & labelled
                share = flagged.sum() / labelled.sum().clamp_min(1)
                self.log("train/detail_pixel_share", share.float(), batch_size=batch_size)
            return loss
        if self._tta_active(stage):
            fused = self.predict_probabilities(image, stage)
            semantic = self.tta(self.semantic_logits, image)
        else:
            fused, semantic = self.fused_logits(outputs), outputs.semantic_logits
        self._metrics(stage).update(fused.argmax(dim=1), target)
        self.semantic_metrics(stage).update(semantic.argmax(dim=1), target)
        self.error_sweep(stage).update(outputs.error_prob, outputs.semantic_probs, target)
        return loss

    def tta(self, forward: Any, image: Tensor) -> Tensor:
        """(B, C, H, W) probabilities of ``forward`` averaged over the configured test-time augmentation."""
        return tta_probabilities(forward, image, tuple(self.hparams.tta_scales), bool(self.hparams.tta_flip))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Fused label maps and probabilities, with each image's error mass.

        Returns:
            ``{"id", "labels": (B, H, W), "probs": (B, C, H, W), "error_mean": (B,), "error_area": (B,)}``.

        """
        image = batch["image"]
        outputs = self.cascade(image, detail=bool(self.detail_active))
        if self._tta_active("predict"):
            probs = self.predict_probabilities(image, "predict")
        else:
            probs = self.fused_logits(outputs).softmax(dim=1)
        mass = compute_error_mass(outputs.error_prob, self.hparams.threshold)
        return {
            "id": batch.get("id"),
            "labels": probs.argmax(dim=1),
            "probs": probs,
            "error_mean": mass.mean,
            "error_area": mass.area,
        }
