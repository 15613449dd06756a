"""Self-correcting networks (Ibrahim et al.): a primary model trained on F and on W with corrected labels."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from segmend.frozen import FrozenModel, trainable_parameters
from segmend.modules.ancillary import AncillaryModule
from segmend.modules.segmentation import SegmentationModule
from segmend.nets.box_attention import BoxAttentionNet
from segmend.nets.self_correction import (
    AlphaShape,
    ConvSelfCorrection,
    alpha_schedule,
    em_fixed_labels,
    linear_self_correction,
    soft_cross_entropy,
)
from segmend.nets.tta import resize_logits
from segmend.precision import fp32

Correction = Literal["none", "linear", "conv", "em_fixed"]


class SelfCorrectionModule(SegmentationModule):
    """The primary model ``p(y | x)`` of self-correcting networks, with a frozen ancillary model.

    Training batches mix F samples (``has_mask`` true: image, mask, boxes) and W samples
    (``has_mask`` false: image and boxes; their mask is never used). The loss is
    ``(sum_F CE(l, y) + weak_weight * sum_W H(q, p)) / (#F pixels + #W pixels)`` with ``q`` a
    detached soft target (Eqs. 2 and 5); ``correction="conv"`` adds the mean cross-entropy of the
    self-correction net's ``q_conv`` on F (the last term of Eq. 6). W pixels where no box-mask
    channel is set (crop padding) are left out.

    * ``none``: ``q = p_anc(y | x, b)`` (Eq. 2).
    * ``linear``: ``q = softmax((l + alpha l_anc) / (alpha + 1))`` (Eq. 4), alpha decaying from
      ``alpha_start`` to ``alpha_end`` over the fit (logged as ``train/alpha``).
    * ``conv``: ``q = softmax(ConvSC(l, l_anc))`` (Eq. 6), the 2-layer CNN trained on F only.
    * ``em_fixed``: the EM-fixed baseline (Papandreou et al.): hard labels from the primary's own
      biased, box-constrained predictions; needs no ancillary model.

    The ancillary :class:`~segmend.nets.BoxAttentionNet` is loaded from ``ancillary_checkpoint``
    (an :class:`AncillaryModule` checkpoint, read with tensors only) or by the stage runner
    (:func:`segmend.modules.stages.run_self_correction`), then frozen as a
    :class:`~segmend.frozen.FrozenModel` (``self.ancillary``): ``requires_grad`` false, always in
    eval mode (BN statistics fixed), outside the optimizer, run under ``no_grad``. Only
    the primary model is evaluated, used for prediction and is what ``val/mIoU`` measures.

    Args:
        correction: ``"none"``, ``"linear"``, ``"conv"`` or ``"em_fixed"``.
        ancillary_checkpoint: Path of a trained :class:`AncillaryModule` checkpoint; ``None`` lets
            ``segmend fit`` train one first (stage 1: on all of F, or on half of F for ``conv``).
        ancillary_arch: smp architecture of the ancillary model; ``None``: same as ``arch``.
        ancillary_encoder_name: Its encoder; ``None``: same as ``encoder_name``.
        ancillary_net_kwargs: Its extra smp arguments; ``None``: same as ``net_kwargs``.
        attention_stages: Encoder features the box attention gates; ``None``: those the decoder reads.
        alpha_start: Linear self-correction's alpha at the first step (30 in the paper).
        alpha_end: Alpha at the last step (0.5 in the paper).
        alpha_shape: ``"geometric"`` (the paper's exponential decay), ``"linear"`` or ``"constant"``.
        sc_hidden: Channels of the conv self-correction net's first layer (128 in the paper).
        weak_weight: Weight of the W term relative to the F term (1 in the paper).
        em_fg_bias: EM-fixed bias of foreground classes inside their boxes.
        em_bg_bias: EM-fixed bias of background.
        ancillary_epochs: ``max_epochs`` of stage 1 in the stage runner; ``None``: the trainer's.
        pretrain_epochs: ``max_epochs`` of stage 2 (conv only); ``None``: the trainer's.
        **kwargs: Arguments of :class:`SegmentationModule` (primary ``arch``, ``encoder_name``,
            optimizer, schedule, ...). The ancillary stage uses the same optimizer and schedule.

    Raises:
        ValueError: For bad alpha settings or a missing / incompatible ``ancillary_checkpoint``.

    """

    def __init__(
        self,
        correction: Correction = "linear",
        ancillary_checkpoint: str | None = None,
        ancillary_arch: str | None = None,
        ancillary_encoder_name: str | None = None,
        ancillary_net_kwargs: dict[str, Any] | None = None,
        attention_stages: Sequence[int] | None = None,
        alpha_start: float = 30.0,
        alpha_end: float = 0.5,
        alpha_shape: AlphaShape = "geometric",
        sc_hidden: int = 128,
        weak_weight: float = 1.0,
        em_fg_bias: float = 5.0,
        em_bg_bias: float = 3.0,
        ancillary_epochs: int | None = None,
        pretrain_epochs: int | None = None,
        **kwargs: Any,
    ) -> None:
        alpha_schedule(0.0, alpha_start, alpha_end, alpha_shape)  # validates the settings
        if weak_weight < 0:
            raise ValueError(f"weak_weight must be >= 0, got {weak_weight}.")
        if correction not in ("none", "linear", "conv", "em_fixed"):
            raise ValueError(f"correction must be 'none', 'linear', 'conv' or 'em_fixed', got {correction!r}.")
        super().__init__(**kwargs)
        self._total_steps: int | None = None
        if ancillary_checkpoint is not None:
            self.load_ancillary(ancillary_checkpoint)

    # ------------------------------------------------------------------ construction
    @property
    def needs_ancillary(self) -> bool:
        """Whether the correction uses the ancillary model (all but ``em_fixed``)."""
        return self.hparams.correction != "em_fixed"

    def ancillary_arguments(self) -> dict[str, Any]:
        """Architecture arguments of the ancillary model (its own, else the primary's)."""
        hp = self.hparams
        return {
            "arch": hp.ancillary_arch or hp.arch,
            "encoder_name": hp.ancillary_encoder_name or hp.encoder_name,
            "encoder_weights": hp.encoder_weights,
            "net_kwargs": dict(hp.ancillary_net_kwargs if hp.ancillary_net_kwargs is not None else hp.net_kwargs or {}),
            "attention_stages": hp.attention_stages,
        }

    def configure_models(self) -> None:
        """Build the primary net, the frozen ancillary net and (for ``conv``) the self-correction net."""
        super().configure_models()
        args = self.ancillary_arguments()
        self.ancillary: FrozenModel | None = None
        if self.needs_ancillary:
            net = BoxAttentionNet(
                self.num_classes,
                args["arch"],
                args["encoder_name"],
                args["encoder_weights"],
                attention_stages=args["attention_stages"],
                **args["net_kwargs"],
            )
            self.ancillary = FrozenModel(net)
        # persistent flag so a resumed fit knows the ancillary weights in the checkpoint are trained
        self.register_buffer("ancillary_ready", torch.tensor(False))
        self.sc_net = ConvSelfCorrection(self.num_classes, self.hparams.sc_hidden) if self.is_conv else None

    @property
    def is_conv(self) -> bool:
        """Whether the correction is the convolutional one."""
        return self.hparams.correction == "conv"

    def build_ancillary_module(self) -> AncillaryModule:
        """A fresh :class:`AncillaryModule` with this module's ancillary architecture, classes and optimizer."""
        return AncillaryModule(**self.stage_module_arguments(), **self.ancillary_arguments())

    def set_ancillary(self, source: AncillaryModule | BoxAttentionNet | dict[str, Tensor]) -> None:
        """Copy trained ancillary weights (a module, its net, or the net's state dict) into the frozen model."""
        if self.ancillary is None:
            raise ValueError(f"correction={self.hparams.correction!r} uses no ancillary model.")
        if isinstance(source, AncillaryModule):
            source = source.net
        state = source.state_dict() if isinstance(source, nn.Module) else source
        self.ancillary.module.load_state_dict(state)
        self.ancillary_ready.fill_(True)

    def load_ancillary(self, path: str | Path) -> None:
        """Load the ancillary model from an :class:`AncillaryModule` checkpoint (tensors only).

        Raises:
            ValueError: If the file is missing or refused (it holds more than tensors and plain
                data), or its weights do not fit this ancillary model.

        """
        path = Path(path)
        if self.ancillary is None:
            return
        if not path.is_file():
            raise ValueError(
                f"ancillary_checkpoint {path} does not exist. Give the checkpoint of a trained "
                "AncillaryModule, or set ancillary_checkpoint: null so `segmend fit` trains one first."
            )
        args = self.ancillary_arguments()
        self.ancillary.load_checkpoint(
            path,
            prefix="net.",
            expected=f"this ancillary model ({args['arch']}, {args['encoder_name']}, {self.num_classes} classes)",
            hint="Set ancillary_arch / ancillary_encoder_name / ancillary_net_kwargs to the checkpoint's settings.",
        )
        self.ancillary_ready.fill_(True)

    def training_stages(self, datamodule: Any) -> Iterable[Any]:
        """The training stages (ancillary, pretrain, main) for :func:`segmend.runs.run_stages`.

        ``segmend fit`` runs them because this method exists (:class:`segmend.runs.HasTrainingStages`).

        Raises:
            ValueError: If the DataModule cannot switch training sets (``use_train_set``).

        """
        from segmend.modules.stages import self_correction_stages

        return self_correction_stages(self, datamodule)

    # ------------------------------------------------------------------ optimisation
    def parameter_groups(self) -> Iterable[Any]:
        """Trainable parameters: the primary net (and aux head), and the conv self-correction net."""
        sc_ids = {id(p) for p in self.sc_net.parameters()} if self.sc_net is not None else set()
        primary = [p for p in trainable_parameters(self) if id(p) not in sc_ids]
        groups = [{"params": primary, "name": "primary"}]
        if self.sc_net is not None:
            groups.append({"params": list(self.sc_net.parameters()), "name": "self_correction"})
        return groups

    # ------------------------------------------------------------------ self-correction
    def on_train_start(self) -> None:
        """Check that the ancillary model is trained, and fix the number of steps alpha decays over.

        Raises:
            ValueError: If the correction needs the ancillary model and none was loaded.

        """
        if self.needs_ancillary and not bool(self.ancillary_ready):
            raise ValueError(
                "SelfCorrectionModule has no trained ancillary model: set ancillary_checkpoint, or train "
                "with `segmend fit` / segmend.modules.stages.run_self_correction, which train it first."
            )
        self._total_steps = int(self.trainer.estimated_stepping_batches)

    def current_alpha(self) -> float:
        """Alpha of linear self-correction at the current step of the fit."""
        hp = self.hparams
        total = self._total_steps or 1
        progress = self.global_step / max(1, total - 1) if self.attached_trainer() is not None else 0.0
        return alpha_schedule(progress, hp.alpha_start, hp.alpha_end, hp.alpha_shape)

    @torch.no_grad()
    def ancillary_logits(self, image: Tensor, boxes: Tensor) -> Tensor:
        """(B, C, H, W) fp32 logits of the frozen ancillary model at the image resolution.

        Under mixed precision the ancillary net runs in bf16/fp16 like the primary one; its logits
        are cast to fp32 before they are resized and mixed into the soft targets.
        """
        if self.ancillary is None:
            raise ValueError(f"correction={self.hparams.correction!r} uses no ancillary model.")
        return resize_logits(fp32(self.ancillary(image, boxes)), tuple(image.shape[-2:]))

    @torch.no_grad()
    def soft_targets(
        self, logits: Tensor, ancillary_logits: Tensor | None, boxes: Tensor, alpha: float | None = None
    ) -> Tensor:
        """The detached target of W samples: (B, C, H, W) fp32 probabilities, or (B, H, W) labels for EM-fixed.

        The softmax runs in fp32 on fp32 logits (bf16/fp16 ones are cast first). The conv
        self-correction net itself runs in the training precision, as any layer of a network
        does; its logits are cast to fp32.

        Args:
            logits: (B, C, H, W) primary logits.
            ancillary_logits: (B, C, H, W) ancillary logits (unused by ``em_fixed``).
            boxes: (B, C, H, W) box masks.
            alpha: Linear self-correction's alpha; ``None`` takes :meth:`current_alpha`.

        """
        correction = self.hparams.correction
        if correction == "em_fixed":
            return em_fixed_labels(logits, boxes, self.hparams.em_fg_bias, self.hparams.em_bg_bias, self.ignore_index)
        if correction == "none":
            return fp32(ancillary_logits).softmax(dim=1)
        if correction == "linear":
            return linear_self_correction(logits, ancillary_logits, self.current_alpha() if alpha is None else alpha)
        return fp32(self.sc_net(logits, ancillary_logits)).softmax(dim=1)

    def compute_loss(self, logits: Tensor, batch: dict[str, Any]) -> Tensor:
        """Eqs. 2 / 5 / 6 in training; plain cross-entropy on masks in evaluation."""
        if not self.training:
            return super().compute_loss(logits, batch)
        target = self.targets(batch)  # (B, H, W): W samples all ignore
        batch_size = logits.shape[0]
        has_mask = batch.get("has_mask")
        if has_mask is None:
            has_mask = torch.ones(batch_size, dtype=torch.bool, device=logits.device)
        weak = ~has_mask
        full_valid = target != self.ignore_index
        loss_full = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="sum")
        count = full_valid.sum()
        total = loss_full
        self.log("train/loss_full", loss_full.detach() / count.clamp(min=1), batch_size=batch_size)
        needs_boxes = bool(weak.any()) or self.is_conv
        if needs_boxes and "boxes" not in batch:
            raise ValueError(
                "SelfCorrectionModule got a training batch without 'boxes'; set with_boxes: true in the "
                f"DataModule (batch keys: {sorted(batch)})."
            )
        anc = None
        if self.needs_ancillary and needs_boxes:
            rows = slice(None) if self.is_conv else weak
            anc = torch.zeros_like(logits)
            anc[rows] = self.ancillary_logits(batch["image"][rows], batch["boxes"][rows])
        if bool(weak.any()):
            boxes = batch["boxes"][weak]
            weak_logits = logits[weak]
            weak_valid = boxes.sum(dim=1) > 0  # (b, H, W): crop padding has no channel set
            q = self.soft_targets(weak_logits, anc[weak] if anc is not None else None, boxes)
            if q.ndim == 3:  # EM-fixed hard labels
                weak_valid = weak_valid & (q != self.ignore_index)
                loss_weak = F.cross_entropy(weak_logits, q, ignore_index=self.ignore_index, reduction="sum")
            else:
                loss_weak = soft_cross_entropy(weak_logits, q, weak_valid)
            weak_count = weak_valid.sum()
            total = total + self.hparams.weak_weight * loss_weak
            count = count + weak_count
            self.log("train/loss_weak", loss_weak.detach() / weak_count.clamp(min=1), batch_size=batch_size)
        if self.hparams.correction == "linear":
            self.log("train/alpha", self.current_alpha(), batch_size=batch_size)
        loss = total / count.clamp(min=1)
        if self.is_conv and bool(has_mask.any()):
            # last term of Eq. 6: q_conv against the F masks, gradient into the SC net only
            sc_logits = fp32(self.sc_net(logits[has_mask], anc[has_mask]))
            sc_target = target[has_mask]
            if bool((sc_target != self.ignore_index).any()):
                loss_sc = F.cross_entropy(sc_logits, sc_target, ignore_index=self.ignore_index)
                self.log("train/loss_sc", loss_sc.detach(), batch_size=batch_size)
                loss = loss + loss_sc
        return loss
