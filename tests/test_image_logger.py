"""SegmentationImageLogger: W&B images with masks, PNG grids for other loggers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from PIL import Image
from segmend.callbacks import SegmentationImageLogger
from torch import nn

from segmend.modules import SegmentationModule


def fit_once(datamodule, logger, tmp_path: Path) -> SegmentationModule:
    module = SegmentationModule(num_classes=6, class_names=datamodule.class_names, net=nn.Conv2d(3, 6, 3, padding=1))
    trainer = Trainer(
        max_epochs=1,
        logger=logger,
        callbacks=[SegmentationImageLogger(num_samples=3)],
        enable_progress_bar=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=datamodule)
    return module


def test_png_grid_for_loggers_without_images(tiny_synthetic, tmp_path: Path):
    logger = CSVLogger(tmp_path)
    fit_once(tiny_synthetic, logger, tmp_path)
    grids = list(Path(logger.log_dir).glob("images/*.png"))
    assert len(grids) == 1
    grid = np.asarray(Image.open(grids[0]))
    assert grid.shape == (3 * (64 + 2), 3 * (64 + 2), 3)


def test_wandb_images_carry_masks_and_class_labels(tiny_synthetic, tmp_path: Path, monkeypatch):
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    logged = []
    monkeypatch.setattr(
        type(logger.experiment),
        "log",
        lambda self, data, *a, **k: logged.append(data),
        raising=False,
    )
    fit_once(tiny_synthetic, logger, tmp_path)
    payloads = [entry for entry in logged if "val/predictions" in entry]
    assert len(payloads) == 1
    images = payloads[0]["val/predictions"]
    assert len(images) == 3
    masks = images[0]._masks
    assert set(masks) == {"predictions", "ground_truth"}
    ground_truth = masks["ground_truth"]._val
    assert ground_truth["class_labels"][1] == "disc"
    assert ground_truth["mask_data"].shape == (64, 64)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="num_samples and every_n_epochs must be >= 1"):
        SegmentationImageLogger(num_samples=0)
