"""Log image / ground truth / prediction overlays of validation batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader

from segmend.datamodules.voc_format import voc_palette
from segmend.viz import denormalize, overlay_grid


class SegmentationImageLogger(Callback):
    """Show what the model predicts on a few fixed validation images, every few epochs.

    With a :class:`~lightning.pytorch.loggers.WandbLogger`, each sample is logged as a
    ``wandb.Image`` with ``predictions`` and ``ground_truth`` masks and class labels (toggle
    them in the W&B UI). With any other logger (or none), a PNG grid (image | ground truth |
    prediction per row, under column titles and above a legend of the classes shown) is written to
    ``<log_dir>/images/<key>_epoch<NNN>.png``.

    A fit that logged nothing on its schedule (for example one stopped by ``max_steps`` before
    the ``every_n_epochs``-th epoch) logs once when it ends: the final model's predictions on the
    same images, held from its last validation (or the sanity check), as
    ``<key>_fit_end_step<NNNNNN>.png``. If no validation ran at all, the first validation batch is
    loaded from the DataModule for it.

    Args:
        num_samples: Images shown, taken from the first validation batches.
        every_n_epochs: Log every this many epochs (the last epoch of a fit is always logged).
        key: Name of the W&B panel / PNG file prefix.

    """

    def __init__(self, num_samples: int = 4, every_n_epochs: int = 1, key: str = "val/predictions") -> None:
        if num_samples < 1 or every_n_epochs < 1:
            raise ValueError(f"num_samples and every_n_epochs must be >= 1, got {num_samples} and {every_n_epochs}.")
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.key = key
        self._collected: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._held: list[tuple[Tensor, Tensor]] = []  # (image, mask) kept for the end-of-fit grid
        self._logged_in_fit = False
        self._out_dir: Path | None = None

    def _active(self, trainer: Trainer) -> bool:
        epoch = trainer.current_epoch
        max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
        last_epoch = max_epochs is not None and max_epochs > 0 and epoch + 1 >= max_epochs  # -1: no limit
        steps_done = max_steps is not None and max_steps > 0 and trainer.global_step >= max_steps
        return not trainer.sanity_checking and ((epoch + 1) % self.every_n_epochs == 0 or last_epoch or steps_done)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Resolve the PNG folder on every process: ``Trainer.log_dir`` is a broadcast under DDP."""
        self._out_dir = Path(trainer.log_dir or trainer.default_root_dir) / "images"

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._held, self._logged_in_fit = [], False

    def _hold(self, trainer: Trainer, batch: Any) -> None:
        """Keep (copies of) the first validation images of a fit until something was logged."""
        if self._logged_in_fit or trainer.state.fn != "fit" or len(self._held) >= self.num_samples:
            return
        for image, mask in zip(batch["image"], batch["mask"], strict=True):
            if len(self._held) >= self.num_samples:
                break
            self._held.append((image.detach().cpu().clone(), mask.detach().cpu().clone()))

    def on_validation_batch_end(  # noqa: D102
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.is_global_zero:
            return
        self._hold(trainer, batch)
        if not self._active(trainer):
            return
        needed = self.num_samples - len(self._collected)
        if needed <= 0:
            return
        images = batch["image"][:needed]
        with torch.no_grad():
            preds = pl_module.predict_probabilities(images, "val").argmax(dim=1)
        for image, target, pred in zip(images, batch["mask"][:needed], preds, strict=True):
            self._collected.append((denormalize(image), target.cpu().numpy(), pred.cpu().numpy()))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if not self._collected:
            return
        samples, self._collected = self._collected, []
        self._log(trainer, pl_module, samples, f"epoch{trainer.current_epoch:03d}")
        if trainer.state.fn == "fit":
            self._logged_in_fit, self._held = True, []

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log the final model's predictions once if the fit logged nothing on its schedule."""
        if self._logged_in_fit or not trainer.is_global_zero:
            return
        if not self._held:
            self._hold_from_datamodule(trainer)
        held, self._held = self._held, []
        if not held:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():  # one image at a time: held images may differ in size
                preds = [
                    pl_module.predict_probabilities(image[None].to(pl_module.device), "val").argmax(dim=1)[0].cpu()
                    for image, _ in held
                ]
        finally:
            pl_module.train(was_training)
        samples = [
            (denormalize(image), mask.numpy(), pred.numpy()) for (image, mask), pred in zip(held, preds, strict=True)
        ]
        self._log(trainer, pl_module, samples, f"fit_end_step{trainer.global_step:06d}")
        self._logged_in_fit = True

    def _hold_from_datamodule(self, trainer: Trainer) -> None:
        """Hold the first validation batch's images when no validation ran in the fit."""
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "val_dataloader"):
            return
        try:
            loader = datamodule.val_dataloader()
        except MisconfigurationException:  # a DataModule without validation data: nothing to show
            return
        for batch in loader if isinstance(loader, DataLoader) else []:
            self._hold(trainer, batch)
            if len(self._held) >= self.num_samples:
                break

    def _log(self, trainer: Trainer, pl_module: LightningModule, samples: list, tag: str) -> None:
        class_names = list(getattr(pl_module, "class_names", ())) or None
        palette = getattr(trainer.datamodule, "palette", None) if trainer.datamodule else None
        palette = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if wandb_loggers:
            self._log_wandb(wandb_loggers[0], samples, class_names, trainer.global_step)
        else:
            self._write_png(trainer, samples, palette, class_names, tag)

    def _log_wandb(self, logger: WandbLogger, samples: list, class_names: list[str] | None, step: int) -> None:
        import wandb

        labels = {i: name for i, name in enumerate(class_names)} if class_names else None
        images = []
        for image, target, pred in samples:
            masks = {
                "predictions": {"mask_data": pred.astype(np.uint8)},
                "ground_truth": {"mask_data": target.astype(np.uint8)},
            }
            if labels:
                for entry in masks.values():
                    entry["class_labels"] = {**labels, 255: "ignore"}
            images.append(wandb.Image(image, masks=masks))
        logger.experiment.log({self.key: images, "trainer/global_step": step})

    def _write_png(
        self, trainer: Trainer, samples: list, palette: np.ndarray, class_names: list[str] | None, tag: str
    ) -> Path:
        # never trainer.log_dir here: only rank 0 writes, and it is a collective under DDP
        out_dir = self._out_dir or Path(trainer.default_root_dir) / "images"
        out_dir.mkdir(parents=True, exist_ok=True)
        images, targets, preds = zip(*samples, strict=True)
        grid = overlay_grid(images, targets, preds, palette, class_names=class_names)
        name = self.key.replace("/", "_")
        path = out_dir / f"{name}_{tag}.png"
        Image.fromarray(grid).save(path)
        return path
