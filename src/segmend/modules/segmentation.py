"""The base LightningModule every segmend method builds on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import segmentation_models_pytorch as smp
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import MeanMetric, MetricCollection

from segmend.frozen import trainable_parameters
from segmend.hparams import LoggedHyperparameters
from segmend.init_streams import own_stream
from segmend.memory import tune_cpu_allocator
from segmend.metrics import segmentation_metrics
from segmend.nets.aux_head import AUX_STAGE, FCNHead
from segmend.nets.factory import build_smp_net, input_size_divisor
from segmend.nets.features import SegmentationFeatures, encoder_channels, forward_features
from segmend.nets.tta import resize_logits, tta_probabilities
from segmend.optim import (
    TotalStepsAware,
    build_fused_if_supported,
    default_lr_scheduler,
    default_optimizer,
    describe_optimization,
)
from segmend.precision import fp32

Stage = Literal["train", "val", "test"]


def refuse_net(kwargs: Mapping[str, Any], module: str, builds: str, instead: str) -> None:
    """Refuse a ``net`` argument for a module that builds its network itself.

    Args:
        kwargs: The module's keyword arguments for :class:`SegmentationModule`.
        module: The module's name, for the message.
        builds: What it builds, and from what (e.g. ``"its GAUDecoderNet from arch / encoder_name"``).
        instead: What to do instead.

    Raises:
        ValueError: If ``kwargs`` has a ``net`` that is not ``None``.

    """
    if kwargs.get("net") is not None:
        raise ValueError(f"{module} builds {builds}; remove net ({instead}).")


def _nearest_multiples(value: int, divisor: int) -> tuple[int | None, int]:
    """The multiples of ``divisor`` just below (``None`` if that is 0) and just above ``value``."""
    below = value // divisor * divisor
    return (below or None), below + divisor


def _either(below: int | None, above: int) -> str:
    return f"{below} or {above}" if below else str(above)


class SegmentationModule(LoggedHyperparameters, LightningModule):
    """Supervised semantic segmentation: a network, a loss, metrics and an optimizer.

    Methods subclass it and override :meth:`configure_losses`, :meth:`compute_loss` or
    :meth:`parameter_groups`; the training, validation and test steps share :meth:`shared_step`,
    which runs the net once per batch through :meth:`batch_features` and hands the features to the
    parts that read more than the logits (the auxiliary head).

    Args:
        num_classes: Number of classes, background included. Required, except under
            ``segmend``/``lightning`` where it is linked from the DataModule.
        class_names: Names of the classes, used in per-class metric keys and image legends.
        arch: segmentation-models-pytorch architecture, e.g. ``"DeepLabV3Plus"``.
        encoder_name: segmentation-models-pytorch encoder, e.g. ``"resnet18"``.
        encoder_weights: Pretrained encoder weights, e.g. ``"imagenet"``, read from the local
            cache only (see ``docs/weights.md``); ``None`` (default) is random initialisation.
        net: Any ``nn.Module`` mapping (B, 3, H, W) to (B, num_classes, h, w) logits (or a dict
            with key ``"out"``); when given, ``arch`` and ``encoder_*`` are ignored.
        net_kwargs: Extra arguments of the smp architecture, e.g. ``{"decoder_channels": 128}``.
        ignore_index: Label of unlabeled pixels; it must be the data's (255 for segmend's DataModules,
            checked at setup by :meth:`check_datamodule`).
        optimizer: Callable building the optimizer from parameter groups; ``None`` gives SGD
            (lr 0.01, momentum 0.9, weight decay 5e-4).
        lr_scheduler: Callable building the schedule from the optimizer, stepped every batch;
            ``None`` gives polynomial decay (power 0.9) over the whole fit.
        tta_scales: Scales of multi-scale test-time augmentation, e.g. ``(0.75, 1.0, 1.25)``.
        tta_flip: Add horizontally flipped views to test-time augmentation.
        tta_on_val: Also apply test-time augmentation during validation (always applied in
            test and predict when configured).
        aux_weight: Weight of an auxiliary FCN head's cross-entropy on the encoder's stride-16
            stage (0.4 in PSPNet / ARM; 0 disables it). Needs a segmentation-models-pytorch net.
        tune_cpu_allocator: When a fit on the CPU starts, keep freed activation memory for the
            next step instead of returning it to the kernel (glibc's malloc thresholds, see
            :func:`segmend.memory.tune_cpu_allocator`): measured 1.18x faster fp32 training steps
            (docs/results/allocator.md), the same results and peak memory. Process-wide;
            ``False`` leaves the allocator alone.

    """

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        arch: str = "DeepLabV3Plus",
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        net: nn.Module | None = None,
        net_kwargs: dict[str, Any] | None = None,
        ignore_index: int = 255,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        tta_scales: tuple[float, ...] = (1.0,),
        tta_flip: bool = False,
        tta_on_val: bool = False,
        aux_weight: float = 0.0,
        tune_cpu_allocator: bool = True,
    ) -> None:
        super().__init__()
        if num_classes is None:
            raise ValueError(
                "num_classes is required: pass the number of classes of your data (background "
                "included), or run through `segmend fit`, which takes it from the DataModule."
            )
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2 (background + 1), got {num_classes}.")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} entries but num_classes={num_classes}; "
                "give one name per class, background included."
            )
        if not tta_scales or any(s <= 0 for s in tta_scales):
            raise ValueError(f"tta_scales must be a non-empty tuple of positive floats: {tta_scales}")
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"])
        self.num_classes = num_classes
        self.class_names = tuple(class_names) if class_names else tuple(map(str, range(num_classes)))
        self.ignore_index = ignore_index
        self.optimizer_factory = optimizer or default_optimizer
        self.lr_scheduler_factory = lr_scheduler or default_lr_scheduler
        self.net = net
        self.configure_models()
        self.configure_aux_head()
        self.configure_losses()
        self.configure_metrics()

    # ------------------------------------------------------------------ construction
    def configure_models(self) -> None:
        """Build the network unless one was given."""
        if self.net is None:
            hp = self.hparams
            self.net = build_smp_net(
                hp.arch,
                hp.encoder_name,
                self.num_classes,
                hp.encoder_weights,
                **(hp.net_kwargs or {}),
            )

    def configure_aux_head(self) -> None:
        """Create the auxiliary FCN head on the encoder's stride-16 features when ``aux_weight`` > 0.

        Its 3x3 convolution has 256 channels (PSPNet's and mmsegmentation's), or as many as the stage
        it reads when that has fewer: on a shallow encoder (``encoder_depth`` 3, whose stage before
        the last has 64 channels at stride 4) a 256-wide head would cost more than the net.

        Raises:
            ValueError: If the net is not (and does not wrap) an smp model, whose encoder features it reads.

        """
        self.aux_head: nn.Module | None = None
        if self.hparams.aux_weight <= 0:
            return
        channels = encoder_channels(self.net)
        if channels is None:
            raise ValueError(
                "aux_weight > 0 needs a segmentation-models-pytorch net (or a net wrapping one, such as "
                f"BoxAttentionNet) to take encoder features from; got {type(self.net).__name__}. Set aux_weight: 0."
            )
        with own_stream("aux_head"):  # the same head whatever a subclass built before it
            self.aux_head = FCNHead(channels[AUX_STAGE], self.num_classes, hidden=min(256, channels[AUX_STAGE]))

    def aux_loss(self, batch: dict[str, Any], features: SegmentationFeatures | None = None) -> Tensor | None:
        """Cross-entropy of the auxiliary head on ``features.encoder[AUX_STAGE]``, or ``None``.

        Args:
            batch: The batch (its labels are the target).
            features: The net's features of the batch (:meth:`batch_features`); ``None`` runs the
                net on the batch again.

        Returns:
            The loss, or ``None`` without an auxiliary head or labelled pixels.

        """
        if self.aux_head is None:
            return None
        target = self.targets(batch)
        if not bool((target != self.ignore_index).any()):
            return None
        features = self.batch_features(batch) if features is None else features
        logits = resize_logits(fp32(self.aux_head(features.encoder[AUX_STAGE])), tuple(target.shape[-2:]))
        return nn.functional.cross_entropy(logits, target, ignore_index=self.ignore_index)

    def configure_losses(self) -> None:
        """Set ``self.criterion``: pixel-wise cross-entropy ignoring ``ignore_index``."""
        self.criterion = nn.CrossEntropyLoss(ignore_index=self.ignore_index)

    def configure_metrics(self) -> None:
        """Create one metric collection per evaluation stage."""
        metrics = segmentation_metrics(self.num_classes, self.ignore_index, self.class_names)
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # <stage>/loss as sums of loss x samples and of samples, summed across ranks: exact when DDP
        # shards differ in size, where Lightning's sync_dist mean floors an integer sample count
        # (measured 7/6 too large for 7 images on 2 ranks; Lightning-AI/pytorch-lightning#21859)
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()

    def parameter_groups(self) -> Iterable[Any]:
        """Parameters (or param-group dicts) handed to the optimizer; methods override this.

        Frozen parts (:class:`~segmend.frozen.FrozenModel`) are left out.
        """
        return trainable_parameters(self)

    def build_optimizer(self) -> Optimizer:
        """Build the injected optimizer over :meth:`parameter_groups`; methods adjust groups here.

        The optimizer gets its fused kernel where torch has one for it and the config chose no
        kernel (:func:`~segmend.optim.build_fused_if_supported`); ``fused: false`` in its
        ``init_args`` turns that off.
        """
        scaled = self.trainer_precision().startswith("16")
        return build_fused_if_supported(self.optimizer_factory, self.parameter_groups(), gradient_scaling=scaled)

    def stage_module_arguments(self) -> dict[str, Any]:
        """Arguments that a module trained as a stage of this one shares with it.

        Used for self-correction's ancillary model and error-pixel prediction's semantic branch:
        classes, ignore index, optimizer, schedule, auxiliary-loss weight and the allocator setting.
        The stage module adds its own architecture.
        """
        hp = self.hparams
        return {
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "ignore_index": self.ignore_index,
            "optimizer": self.optimizer_factory,
            "lr_scheduler": self.lr_scheduler_factory,
            "aux_weight": hp.aux_weight,
            "tune_cpu_allocator": hp.tune_cpu_allocator,
        }

    def attached_trainer(self) -> Trainer | None:
        """The Trainer this module is attached to, or ``None`` (``self.trainer`` raises then)."""
        try:
            return self.trainer
        except RuntimeError:  # not attached to a Trainer
            return None

    def trainer_precision(self) -> str:
        """The attached Trainer's precision (``"32-true"``, ``"bf16-mixed"``, ...); ``""`` without one."""
        trainer = self.attached_trainer()
        return str(trainer.precision) if trainer is not None else ""

    def build_lr_scheduler(self, optimizer: Optimizer) -> Any:
        """Build the injected schedule over the optimizer; methods adjust the groups' lr here.

        Raises:
            ValueError: For a ``ReduceLROnPlateau`` that is not in ``mode="max"`` (it watches
                ``val/mIoU``, which grows as the model improves).

        """
        scheduler = self.lr_scheduler_factory(optimizer)
        if isinstance(scheduler, ReduceLROnPlateau) and scheduler.mode != "max":
            raise ValueError(
                f"ReduceLROnPlateau watches val/mIoU, which grows as the model improves, but it was built "
                f"with mode={scheduler.mode!r}, which would cut the lr whenever mIoU improves. Set "
                "mode: max in model.init_args.lr_scheduler.init_args."
            )
        return scheduler

    def configure_optimizers(self) -> dict[str, Any]:
        """Build the injected optimizer and per-step schedule."""
        optimizer = self.build_optimizer()
        scheduler = self.build_lr_scheduler(optimizer)
        if isinstance(scheduler, TotalStepsAware):
            scheduler.bind_total_steps(int(self.trainer.estimated_stepping_batches))
        if isinstance(scheduler, ReduceLROnPlateau):
            config = {"scheduler": scheduler, "interval": "epoch", "monitor": "val/mIoU"}
        else:
            config = {"scheduler": scheduler, "interval": "step"}
        rank_zero_info(describe_optimization(optimizer, scheduler))
        return {"optimizer": optimizer, "lr_scheduler": config}

    def on_fit_start(self) -> None:
        """Tune the CPU memory allocator (``tune_cpu_allocator``) for a fit on the CPU."""
        if self.hparams.get("tune_cpu_allocator", True) and self.device.type == "cpu" and tune_cpu_allocator():
            rank_zero_info("CPU allocator: freed activations kept for reuse (segmend.memory.tune_cpu_allocator).")

    # ------------------------------------------------------------------ checks
    def setup(self, stage: str) -> None:
        """Check that the Trainer's DataModule fits the model (see :meth:`check_datamodule`).

        Raises:
            ValueError: If it does not.

        """
        datamodule = getattr(self.attached_trainer(), "datamodule", None)
        if datamodule is not None:
            self.check_datamodule(datamodule, stage)

    def check_datamodule(self, datamodule: Any, stage: str | None = None) -> None:
        """Check every model-vs-data setting that would otherwise fail later (or silently).

        Only configuration attributes are read, so this works on a DataModule before or after its
        ``setup`` and reads no data. Attributes a DataModule does not have are not checked.

        - ``num_classes`` must equal the model's.
        - The label of unlabeled pixels the data serves (``ignore_index``, 255 for segmend's
          DataModules) must be the one the model ignores.
        - Training inputs must fit the net: smp architectures (all but ``Unet``) need a height and
          width divisible by the encoder's output stride (:func:`~segmend.nets.factory.input_size_divisor`).
          The training size is the DataModule's ``crop_size`` (whole-image training, ``crop_size``
          null, is not checked: image sizes are only known once read). Nets without an smp model
          are not checked.
          Evaluation inputs need no check: :meth:`forward` pads them to the divisor.

        Args:
            datamodule: The DataModule (any object; segmend's expose ``num_classes`` and ``crop_size``).
            stage: Trainer stage (``"fit"``, ``"validate"``, ``"test"``, ``"predict"``); training sizes are
                checked for ``"fit"`` and for ``None`` (every stage).

        Raises:
            ValueError: For a class count or ignore label that differs from the model's, or a training size the
                net cannot take (naming the nearest valid sizes).

        """
        data_classes = getattr(datamodule, "num_classes", None)
        if data_classes is not None and data_classes != self.num_classes:
            raise ValueError(
                f"num_classes mismatch: the data ({type(datamodule).__name__}) has "
                f"{data_classes} classes but the model ({type(self).__name__}) was built for "
                f"{self.num_classes}. Remove model.num_classes from the config so segmend links "
                "it from the data, or set it to the data's value."
            )
        data_ignore = getattr(datamodule, "ignore_index", None)
        if data_ignore is not None and data_ignore != self.ignore_index:
            raise ValueError(
                f"ignore_index mismatch: the data ({type(datamodule).__name__}) marks unlabeled pixels with "
                f"{data_ignore} but the model ({type(self).__name__}) ignores {self.ignore_index}, so it would "
                f"train on unlabeled pixels as class {data_ignore}. Remove model.ignore_index from the config "
                f"or set it to {data_ignore}."
            )
        if stage in (None, "fit"):
            self._check_training_size(datamodule)

    def _net_description(self, divisor: int) -> str:
        smp_nets = [m for m in self.modules() if isinstance(m, smp.base.SegmentationModel)]
        name = type(smp_nets[0]).__name__ if smp_nets else type(self.net).__name__
        encoder = f" (encoder_name={self.hparams.encoder_name!r})" if name == self.hparams.get("arch") else ""
        return (
            f"the {name} net{encoder} of {type(self).__name__} needs training inputs whose height and width "
            f"are multiples of {divisor} (its encoder's output stride)"
        )

    def _check_training_size(self, datamodule: Any) -> None:
        divisor = input_size_divisor(self)
        if divisor is None or divisor <= 1:
            return
        data = type(datamodule).__name__
        crop_size = getattr(datamodule, "crop_size", None)
        if crop_size is not None and int(crop_size) % divisor:
            below, above = _nearest_multiples(int(crop_size), divisor)
            raise ValueError(
                f"crop_size={crop_size} of {data} does not fit the net: {self._net_description(divisor)}, "
                f"and {crop_size} is not. Set crop_size to {_either(below, above)}, e.g. "
                f"--data.init_args.crop_size={below or above}."
            )

    @property
    def input_size_divisor(self) -> int | None:
        """What the net's input height and width must be multiples of (``None``: anything goes)."""
        if "_input_size_divisor" not in self.__dict__:
            self.__dict__["_input_size_divisor"] = input_size_divisor(self.net)
        return self.__dict__["_input_size_divisor"]

    def _check_logits(self, logits: Tensor) -> None:
        if logits.ndim != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"The network returned logits of shape {tuple(logits.shape)}; expected "
                f"(B, {self.num_classes}, H, W) for num_classes={self.num_classes}. Build the net "
                "with as many output channels as the data has classes."
            )

    # ------------------------------------------------------------------ forward
    def _padding(self, image: Tensor) -> tuple[int, int]:
        """Rows and columns (bottom, right) that make ``image`` fit the net outside training.

        Raises:
            ValueError: For a training batch whose size the net cannot take.

        """
        height, width = image.shape[-2:]
        divisor = self.input_size_divisor
        if not divisor or not (height % divisor or width % divisor):
            return 0, 0
        if self.training:
            side = height if height % divisor else width
            raise ValueError(
                f"Training batch of {height}x{width} (HxW) images: {self._net_description(divisor)}. "
                f"Crop training images to {_either(*_nearest_multiples(side, divisor))} (crop_size)."
            )
        return -height % divisor, -width % divisor

    def forward_features(self, image: Tensor, boxes: Tensor | None = None) -> SegmentationFeatures:
        """The net's :class:`~segmend.nets.features.SegmentationFeatures` of (B, 3, H, W) images.

        As the net computed them: at the net's resolution and in its compute dtype (bf16/fp16 under
        mixed precision). Outside training, images whose sides are not multiples of
        :attr:`input_size_divisor` are padded first (bottom/right, zeros; box masks too), so the
        features cover the padded image. :meth:`output_logits` turns them into :meth:`forward`'s logits.

        Args:
            image: (B, 3, H, W) images.
            boxes: (B, C, H, W) box masks, for a net that reads them (a box-attention net).

        Raises:
            ValueError: For a training batch whose size the net cannot take, or box masks for a
                net that does not read them.

        """
        pad_rows, pad_cols = self._padding(image)
        if pad_rows or pad_cols:
            image = nn.functional.pad(image, (0, pad_cols, 0, pad_rows))
            boxes = None if boxes is None else nn.functional.pad(boxes, (0, pad_cols, 0, pad_rows))
        return forward_features(self.net, image, boxes)

    def output_logits(self, features: SegmentationFeatures, image: Tensor) -> Tensor:
        """(B, C, H, W) fp32 logits at the resolution of ``image`` from ``forward_features(image)``.

        Raises:
            ValueError: If the net's logits do not have ``num_classes`` channels.

        """
        self._check_logits(features.logits)
        height, width = image.shape[-2:]
        pad_rows, pad_cols = self._padding(image)
        return resize_logits(fp32(features.logits), (height + pad_rows, width + pad_cols))[..., :height, :width]

    def forward(self, image: Tensor) -> Tensor:
        """Map (B, 3, H, W) images to (B, C, H, W) fp32 logits at the input resolution.

        Outside training, an image whose sides are not multiples of :attr:`input_size_divisor` is
        padded (bottom/right, zeros) for the net and the logits are cropped back, so evaluation
        works at any size, also on batches of a DataModule that does not pad them itself.

        Under mixed precision (``bf16-mixed``, ``16-mixed``) the net runs in bf16/fp16 and its
        logits are cast to fp32 here, so that losses, softmax, confidence statistics, soft targets
        and metrics are computed in fp32 (CPU autocast would run ``softmax`` in bf16).

        Raises:
            ValueError: For a training batch whose size the net cannot take.

        """
        return self.output_logits(self.forward_features(image), image)

    def batch_features(self, batch: dict[str, Any]) -> SegmentationFeatures:
        """:meth:`forward_features` of a batch's images (methods whose net reads more of the batch override this)."""
        return self.forward_features(batch["image"])

    def _tta_active(self, stage: str) -> bool:
        configured = tuple(self.hparams.tta_scales) != (1.0,) or self.hparams.tta_flip
        return configured and (stage in ("test", "predict") or self.hparams.tta_on_val)

    def predict_probabilities(self, image: Tensor, stage: str = "predict") -> Tensor:
        """(B, C, H, W) class probabilities, with test-time augmentation where configured."""
        if self._tta_active(stage):
            return tta_probabilities(self, image, tuple(self.hparams.tta_scales), bool(self.hparams.tta_flip))
        return self(image).softmax(dim=1)

    # ------------------------------------------------------------------ steps
    def targets(self, batch: dict[str, Any]) -> Tensor:
        """(B, H, W) labels; samples without a mask (``has_mask`` false) are all ignored."""
        mask = batch["mask"]
        has_mask = batch.get("has_mask")
        if has_mask is not None and not bool(has_mask.all()):
            mask = torch.where(has_mask[:, None, None], mask, torch.full_like(mask, self.ignore_index))
        return mask

    def compute_loss(self, logits: Tensor, batch: dict[str, Any]) -> Tensor:
        """Loss of a batch; zero (with a graph) when no pixel is labelled."""
        target = self.targets(batch)
        if not bool((target != self.ignore_index).any()):
            return logits.sum() * 0.0
        return self.criterion(logits, target)

    def shared_step(self, batch: dict[str, Any], stage: Stage) -> Tensor:
        """Forward, loss and (for val/test) metric update; logs ``<stage>/loss``."""
        features = self.batch_features(batch)
        logits = self.output_logits(features, batch["image"])
        loss = self.compute_loss(logits, batch)
        batch_size = batch["image"].shape[0]
        if stage == "train":
            loss = self.with_aux_loss(loss, batch, features)
        self.log_loss(stage, loss, batch_size)
        if stage != "train":
            scores = self.predict_probabilities(batch["image"], stage) if self._tta_active(stage) else logits
            self._metrics(stage).update(scores.argmax(dim=1), self.targets(batch))
        return loss

    def with_aux_loss(self, loss: Tensor, batch: dict[str, Any], features: SegmentationFeatures) -> Tensor:
        """``loss`` plus ``aux_weight`` times the auxiliary loss (logged as ``train/aux_loss``), if there is one."""
        aux = self.aux_loss(batch, features)
        if aux is None:
            return loss
        self.log("train/aux_loss", aux, batch_size=batch["image"].shape[0])
        return loss + self.hparams.aux_weight * aux

    def log_loss(self, stage: Stage, loss: Tensor, batch_size: int) -> None:
        """Log ``train/loss`` per step, or add a batch's loss to ``val/loss`` / ``test/loss`` over the whole set.

        The evaluation losses are sums of loss x samples and of samples, summed across DDP ranks.
        """
        if stage == "train":
            self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
            return
        mean_loss = self.val_loss if stage == "val" else self.test_loss
        mean_loss.update(loss.detach(), weight=batch_size)
        self.log(f"{stage}/loss", mean_loss, batch_size=batch_size)

    def _metrics(self, stage: str):  # noqa: ANN202
        return self.val_metrics if stage == "val" else self.test_metrics

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:  # noqa: D102
        return self.shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:  # noqa: D102
        self.shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:  # noqa: D102
        self.shared_step(batch, "test")

    def log_computed(self, values: Mapping[str, Tensor], prog_bar: bool = False) -> None:
        """Log values that are already equal on every rank (what a torchmetrics ``compute`` returns).

        ``sync_dist`` tells Lightning so (it otherwise warns once per key under DDP); "max" of equal
        values is exact, where a mean of 3 equal floats may not be.
        """
        self.log_dict(dict(values), prog_bar=prog_bar, sync_dist=True, reduce_fx="max")

    def log_collection(self, metrics: MetricCollection) -> None:
        """Compute (synchronised across ranks by torchmetrics), log and reset a metric collection.

        Per-class values (keys with ``IoU_``) are logged without the progress bar.
        """
        results = metrics.compute()
        self.log_computed({k: v for k, v in results.items() if "IoU_" not in k}, prog_bar=True)
        self.log_computed({k: v for k, v in results.items() if "IoU_" in k})
        metrics.reset()

    def _log_epoch_metrics(self, stage: str) -> None:
        self.log_collection(self._metrics(stage))

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:  # noqa: D102
        self._log_epoch_metrics("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Label maps and probabilities of a batch.

        The maps have the batch's padded size; the batch's ``content_size`` and ``image_size`` give
        each image's region and original size (:class:`~segmend.callbacks.SegmentationPredictionWriter`
        crops, resizes and writes them to disk).

        Returns:
            ``{"id": list[str], "labels": (B, H, W) long, "probs": (B, C, H, W) float}``.

        """
        probs = self.predict_probabilities(batch["image"], "predict")
        return {"id": batch.get("id"), "labels": probs.argmax(dim=1), "probs": probs}
