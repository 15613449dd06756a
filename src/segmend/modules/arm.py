"""ARM: segmentation with an adversarially trained pixel reweighting (Liu et al., 2021)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim import Optimizer

from segmend.frozen import trainable_parameters
from segmend.init_streams import own_stream
from segmend.losses.confidence import confidence_map, uncertainty_confidence
from segmend.losses.pixel import cross_entropy_map, gce_map, kl_uncertainty_map
from segmend.losses.reweighting import LossByConfidence, normalise_weights, weighted_sum
from segmend.modules.segmentation import SegmentationModule
from segmend.nets.arm import ARM, LinearARM, evaluate_by_table
from segmend.nets.features import SegmentationFeatures
from segmend.nets.uncertainty import HeadInput, UncertaintyHead, head_input_channels
from segmend.precision import fp32

ConfidenceInput = Literal["var", "std", "logvar", "entropy", "uncertainty"]


class ARMModule(SegmentationModule):
    """Segmentation trained on ``sum_i w_i l_i`` with weights ``w = W(confidence)``.

    With ``reweighting="arm"`` the 53-parameter :class:`~segmend.nets.arm.ARM` learns ``W``
    in its own optimizer parameter group whose learning rate is the main group's times
    ``-arm_lr_multiplier`` (weight decay 0): it maximises the weighted loss the network
    minimises. The groups are built in :meth:`build_optimizer` from the injected optimizer (any
    optimizer that keeps named parameter groups). Schedules do not all preserve a negative lr
    (``ReduceLROnPlateau`` never lowers it, ``OneCycleLR`` and ``CyclicLR`` set it to their own
    positive values), so ARM's lr is not left to the schedule: :meth:`follow_net_lr` sets it to
    ``-arm_lr_multiplier`` times the network group's current lr after the schedule is built, after
    every schedule step and before every optimizer step; any schedule of the network's lr then
    applies to ARM's as well. During the first ``isolation_fraction`` of the training
    steps the network learns from the plain mean loss while ARM already learns from the detached
    losses; then both train jointly.

    Under mixed precision only the segmentation net runs in bf16/fp16: the confidence, the weight
    mapping (autocast off), the normalisation, the pixel losses and ``log s`` are fp32. The
    negative-lr group needs nothing special there: ``bf16-mixed`` uses no gradient scaler, and
    ``16-mixed``'s ``GradScaler`` only multiplies the loss and divides the gradients by the same
    positive scale (before :meth:`on_before_optimizer_step`) and skips steps with non-finite
    gradients; it never reads or changes a learning rate.

    Args:
        reweighting: ``"arm"`` (learned), ``"linear"`` (fixed ``k * v + b``), ``"ohem"`` (online hard
            example mining baseline: mean loss of pixels whose true-class probability is below
            ``ohem_threshold``, at least ``ohem_min_kept`` of them) or ``"none"``.
        linear_k: Slope of the linear mapping (-0.5 suppresses confident pixels, 0.5 focuses).
        linear_b: Intercept of the linear mapping.
        confidence: Statistic fed to the mapping: ``var`` (paper), ``std``, ``logvar``, ``entropy``
            of the class probabilities, or ``uncertainty``: the KL loss's predicted ``s`` as
            ``2 exp(-s/2) - 1`` (needs ``pixel_loss="kl"``; the paper's KL + ARM row).
        detach_confidence: Compute the confidence on detached probabilities.
        norm_p: Norm the weight map is divided by before the detached L1 rescale (2 in the paper).
        arm_lr_multiplier: Magnitude of ARM's learning rate relative to the main group's.
        isolation_fraction: Fraction of the training steps before joint training starts.
        pixel_loss: ``"ce"``, ``"gce"`` (generalised cross-entropy) or ``"kl"`` (``CE / s + 0.5 log s``
            with ``log s`` from an :class:`~segmend.nets.uncertainty.UncertaintyHead` trained with the
            network, in the network's parameter group). The head reads the input of an smp net's
            ``segmentation_head`` (the decoder features) or, for any other net, the logits.
        gce_q: The q of GCE.
        ohem_threshold: OHEM keeps pixels whose true-class probability is below this.
        ohem_min_kept: OHEM keeps at least this many pixels per batch (the hardest ones).
        uncertainty_hidden: Width of the uncertainty head's hidden convolution (``pixel_loss="kl"``).
        weight_table_size: Evaluate the mapping on this many grid points and interpolate per pixel
            (same weights, far cheaper than running ARM on every pixel); ``None`` runs it per pixel.
        **kwargs: Arguments of :class:`SegmentationModule`.

    """

    def __init__(
        self,
        reweighting: Literal["arm", "linear", "ohem", "none"] = "arm",
        linear_k: float = -0.5,
        linear_b: float = 0.5,
        confidence: ConfidenceInput = "var",
        detach_confidence: bool = True,
        norm_p: float = 2.0,
        arm_lr_multiplier: float = 1.0,
        isolation_fraction: float = 0.05,
        pixel_loss: Literal["ce", "gce", "kl"] = "ce",
        gce_q: float = 0.1,
        ohem_threshold: float = 0.7,
        ohem_min_kept: int = 10000,
        uncertainty_hidden: int = 32,
        weight_table_size: int | None = 1025,
        **kwargs: Any,
    ) -> None:
        if arm_lr_multiplier <= 0:
            raise ValueError(
                f"arm_lr_multiplier is the magnitude of ARM's (negative) learning rate; got "
                f"{arm_lr_multiplier}, give a positive number."
            )
        if not 0 <= isolation_fraction < 1:
            raise ValueError(f"isolation_fraction must be in [0, 1), got {isolation_fraction}.")
        if confidence == "uncertainty" and pixel_loss != "kl":
            raise ValueError(
                f"confidence='uncertainty' feeds the KL loss's predicted s to the weight mapping, so it "
                f"needs pixel_loss='kl' (got pixel_loss={pixel_loss!r}); use confidence='var' otherwise."
            )
        super().__init__(**kwargs)

    def configure_models(self) -> None:
        """Build the network and the weight mapping."""
        super().configure_models()
        hp = self.hparams
        with own_stream("weight_map"):  # CE and ARM of one seed keep the same net and global stream
            self.weight_map = ARM() if hp.reweighting == "arm" else LinearARM(hp.linear_k, hp.linear_b)
        self.loss_by_confidence = LossByConfidence()
        self.track_loss_by_confidence = False  # switched on by ARMCurveLogger; costs a histogram per step
        self.last_weight_map: Tensor | None = None
        self.uncertainty_head: UncertaintyHead | None = None
        self._uncertainty_tap: HeadInput | None = None
        if hp.pixel_loss == "kl":
            channels = head_input_channels(self.net)  # smp net: the decoder features entering the class head
            self._uncertainty_tap = HeadInput("decoder" if channels is not None else "logits")
            with own_stream("uncertainty_head"):
                self.uncertainty_head = UncertaintyHead(channels or self.num_classes, hp.uncertainty_hidden)

    def forward_features(self, image: Tensor, boxes: Tensor | None = None) -> SegmentationFeatures:
        """The base class's features; with an uncertainty head, also kept for :meth:`log_uncertainty`."""
        features = super().forward_features(image, boxes)
        if self._uncertainty_tap is not None:
            self._uncertainty_tap.keep(features)
        return features

    # ------------------------------------------------------------------ optimisation
    def parameter_groups(self) -> list[dict[str, Any]]:
        """The network's parameters, and ARM's in a group of their own."""
        arm_params = list(self.weight_map.parameters())
        arm_ids = {id(p) for p in arm_params}
        groups = [{"params": [p for p in trainable_parameters(self) if id(p) not in arm_ids], "name": "net"}]
        if arm_params:
            groups.append({"params": arm_params, "name": "arm"})
        return groups

    def build_optimizer(self) -> Optimizer:
        """Give ARM's group a negative learning rate and no weight decay.

        Raises:
            ValueError: If the optimizer dropped or merged the parameter groups.

        """
        optimizer = super().build_optimizer()
        groups = {group.get("name"): group for group in optimizer.param_groups}
        if self.hparams.reweighting == "arm":
            if set(groups) != {"net", "arm"}:
                raise ValueError(
                    "ARMModule needs the optimizer to keep its two parameter groups (net, arm); the "
                    f"configured optimizer has groups {list(groups)}. Pass the optimizer as "
                    "model.init_args.optimizer, not as a top-level optimizer."
                )
            groups["arm"]["weight_decay"] = 0.0
            self.follow_net_lr(optimizer)
        return optimizer

    def follow_net_lr(self, optimizer: Optimizer) -> None:
        """Set the ARM group's lr to ``-arm_lr_multiplier`` times the network group's current lr.

        A no-op without an ARM group (``reweighting`` other than ``"arm"``).

        Args:
            optimizer: The optimizer built by :meth:`build_optimizer`.

        """
        groups = {group.get("name"): group for group in optimizer.param_groups}
        if "arm" not in groups or "net" not in groups:
            return
        groups["arm"]["lr"] = -self.hparams.arm_lr_multiplier * groups["net"]["lr"]

    def build_lr_scheduler(self, optimizer: Optimizer) -> Any:
        """Build the injected schedule, then give ARM's group the network group's lr, negated and scaled."""
        scheduler = super().build_lr_scheduler(optimizer)
        self.follow_net_lr(optimizer)
        return scheduler

    def lr_scheduler_step(self, scheduler: Any, metric: Any | None) -> None:
        """Step the schedule (Lightning calls this per step or per epoch), then let ARM's lr follow."""
        super().lr_scheduler_step(scheduler, metric)
        for optimizer in self.trainer.optimizers:
            self.follow_net_lr(optimizer)

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Let ARM's lr follow the network's also when something other than the schedule changed it."""
        super().on_before_optimizer_step(optimizer)
        self.follow_net_lr(optimizer)

    # ------------------------------------------------------------------ loss
    def log_uncertainty(self, logits: Tensor) -> Tensor:
        """(B, 1, H, W) ``log s`` of the KL loss for the last forward, at the logits' resolution.

        The head reads the features :meth:`forward_features` kept of the latest forward (the
        decoder features of an smp net, else the net's own logits), or ``logits`` before any forward.

        Raises:
            ValueError: If the module was not built with ``pixel_loss="kl"``.

        """
        if self.uncertainty_head is None:
            raise ValueError("log_uncertainty needs an uncertainty head: build ARMModule with pixel_loss='kl'.")
        tap = self._uncertainty_tap
        features = tap.features if tap is not None and tap.features is not None else logits
        log_s = self.uncertainty_head(features)
        if log_s.shape[-2:] != logits.shape[-2:]:
            log_s = F.interpolate(log_s, size=logits.shape[-2:], mode="bilinear", align_corners=False)
        return log_s

    def pixel_losses(self, logits: Tensor, target: Tensor, log_s: Tensor | None = None) -> Tensor:
        """(B, H, W) loss per pixel, 0 on ignored pixels (``log_s``: the KL loss's, computed if omitted)."""
        if self.hparams.pixel_loss == "gce":
            return gce_map(logits, target, self.hparams.gce_q, self.ignore_index)
        if self.hparams.pixel_loss == "kl":
            log_s = self.log_uncertainty(logits) if log_s is None else log_s
            return kl_uncertainty_map(logits, log_s, target, self.ignore_index)
        return cross_entropy_map(logits, target, self.ignore_index)

    def ohem_loss(self, logits: Tensor, target: Tensor, pixel: Tensor, valid: Tensor) -> Tensor:
        """Mean loss of the hard pixels: true-class probability under the threshold, at least min_kept."""
        with torch.no_grad():
            safe = target.masked_fill(~valid, 0)
            p_gt = fp32(logits).softmax(dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)[valid]
            threshold = self.hparams.ohem_threshold
            kept = min(self.hparams.ohem_min_kept, p_gt.numel())
            if kept > 0:
                threshold = max(threshold, p_gt.kthvalue(kept).values.item())
        losses = pixel[valid]
        hard = p_gt <= threshold
        return losses[hard].mean()

    def confidence(self, logits: Tensor, log_s: Tensor | None = None) -> Tensor:
        """(B, 1, H, W) confidence in [-1, 1] fed to the weight mapping."""
        if self.hparams.confidence == "uncertainty":
            log_s = self.log_uncertainty(logits) if log_s is None else log_s
            return uncertainty_confidence(log_s, self.hparams.detach_confidence)
        probs = fp32(logits).softmax(dim=1)
        return confidence_map(probs, self.hparams.confidence, self.hparams.detach_confidence)

    def pixel_weights(self, confidence: Tensor, valid: Tensor) -> Tensor:
        """(B, H, W) normalised weights (sum 1 over the batch's valid pixels)."""
        size = self.hparams.weight_table_size
        raw = evaluate_by_table(self.weight_map, confidence, size) if size else self.weight_map(confidence)
        return normalise_weights(raw, valid, self.hparams.norm_p)

    def in_isolation(self) -> bool:
        """Whether training is still in its first phase (network on the plain loss)."""
        if not self.training or self.attached_trainer() is None:
            return False
        return self.global_step < self.hparams.isolation_fraction * self.trainer.estimated_stepping_batches

    def compute_loss(self, logits: Tensor, batch: dict[str, Any]) -> Tensor:
        """Weighted loss in training; the plain mean loss in evaluation."""
        target = self.targets(batch)
        valid = target != self.ignore_index
        if not bool(valid.any()):
            return logits.sum() * 0.0
        log_s = self.log_uncertainty(logits) if self.hparams.pixel_loss == "kl" else None
        pixel = self.pixel_losses(logits, target, log_s)
        if self.hparams.reweighting == "none" or not self.training:
            return pixel[valid].mean()
        if self.hparams.reweighting == "ohem":
            return self.ohem_loss(logits, target, pixel, valid)
        confidence = self.confidence(logits, log_s)
        if self.track_loss_by_confidence:
            self.loss_by_confidence.update(confidence, pixel, valid)
        weights = self.pixel_weights(confidence, valid)
        if self.track_loss_by_confidence:
            self.last_weight_map = weights[0].detach()
        if self.in_isolation():
            # value of the plain loss; ARM still gets the gradient of sum(w * l) with l fixed
            arm_term = weighted_sum(weights, pixel.detach())
            return pixel[valid].mean() + arm_term - arm_term.detach()
        return weighted_sum(weights, pixel)
