"""Log image / ground truth / prediction overlays of validation batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from PIL import Image
from segmend.datamodules.voc_format import voc_palette

from segmend.viz import denormalize, overlay_grid


class SegmentationImageLogger(Callback):
    """Show what the model predicts on a few fixed validation images, every few epochs.

    With a :class:`~lightning.pytorch.loggers.WandbLogger`, each sample is logged as a
    ``wandb.Image`` with ``predictions`` and ``ground_truth`` masks and class labels (toggle
    them in the W&B UI). With any other logger (or none), a PNG grid (image | ground truth |
    prediction per row) is written to ``<log_dir>/images/val_epoch<NNN>.png``.

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

    def _active(self, trainer: Trainer) -> bool:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        return not trainer.sanity_checking and ((epoch + 1) % self.every_n_epochs == 0 or last)

    def on_validation_batch_end(  # noqa: D102
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.is_global_zero or not self._active(trainer):
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
        class_names = list(getattr(pl_module, "class_names", ())) or None
        palette = getattr(trainer.datamodule, "palette", None) if trainer.datamodule else None
        palette = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if wandb_loggers:
            self._log_wandb(wandb_loggers[0], samples, class_names, trainer.global_step)
        else:
            self._write_png(trainer, samples, palette)

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

    def _write_png(self, trainer: Trainer, samples: list, palette: np.ndarray) -> Path:
        out_dir = Path(trainer.log_dir or trainer.default_root_dir) / "images"
        out_dir.mkdir(parents=True, exist_ok=True)
        images, targets, preds = zip(*samples, strict=True)
        grid = overlay_grid(images, targets, preds, palette)
        name = self.key.replace("/", "_")
        path = out_dir / f"{name}_epoch{trainer.current_epoch:03d}.png"
        Image.fromarray(grid).save(path)
        return path
