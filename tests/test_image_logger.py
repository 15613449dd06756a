"""SegmentationImageLogger: W&B images with masks, PNG grids for other loggers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wandb
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from PIL import Image
from torch import nn

from segmend.callbacks import SegmentationImageLogger
from segmend.datamodules.voc_format import voc_palette
from segmend.modules import SegmentationModule
from segmend.viz import overlay_grid
from segmend.viz.overlay import IGNORE_COLOR, SWATCH_BORDER, legend_entries


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
    assert [g.name for g in grids] == ["val_predictions_epoch000.png"]
    grid = np.asarray(Image.open(grids[0]))
    # three 64-px rows of tiles, plus the column titles above and the legend below
    assert grid.shape[1] == 3 * (64 + 2) and grid.shape[0] > 3 * (64 + 2) + 20


def test_wandb_images_carry_masks_and_class_labels(tiny_synthetic, tmp_path: Path, monkeypatch):
    created = []  # the arguments of every wandb.Image, which checks them as it is built
    real_image = wandb.Image
    monkeypatch.setattr(wandb, "Image", lambda *args, **kwargs: created.append(kwargs) or real_image(*args, **kwargs))
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
    assert len(images) == 3 and all(isinstance(image, real_image) for image in images)
    assert len(created) == 3
    masks = created[0]["masks"]
    assert set(masks) == {"predictions", "ground_truth"}
    ground_truth = masks["ground_truth"]
    assert ground_truth["class_labels"][1] == "disc"
    assert ground_truth["mask_data"].shape == (64, 64)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="num_samples and every_n_epochs must be >= 1"):
        SegmentationImageLogger(num_samples=0)


# ---------------------------------------------------------------- grid: column titles and class legend
def grid_inputs(with_ignore: bool):
    """Two rows of flat grey 32x40 images; labels 1 and 2 in the ground truth, 1 and 4 predicted."""
    images = [np.full((32, 40, 3), 128, np.uint8), np.full((32, 40, 3), 100, np.uint8)]
    targets = [np.ones((32, 40), np.int64), np.full((32, 40), 2)]
    if with_ignore:
        targets[0][:4] = 255
    preds = [np.ones((32, 40), np.int64), np.full((32, 40), 4)]
    return images, targets, preds


def count_color(region: np.ndarray, color) -> int:
    return int(np.all(region == np.asarray(color, np.uint8), axis=-1).sum())


def test_grid_has_column_titles_and_a_legend_in_the_palette_colours():
    palette = voc_palette()
    names = ["background", "disc", "square", "triangle", "ring", "cross"]
    images, targets, preds = grid_inputs(with_ignore=True)
    grid = overlay_grid(images, targets, preds, palette, class_names=names)
    column, row = 40 + 2, 32 + 2
    assert grid.shape[1] == 3 * column
    # the tiles start right below the title band: find the band's height from the first image
    header = next(y for y in range(grid.shape[0]) if (grid[y : y + 32, :40] == images[0]).all())
    assert 8 <= header <= 30
    tiles_end = header + 2 * row
    assert (grid[header + row : header + row + 32, :40] == images[1]).all()

    # title band: dark text pixels over each of the three columns, nothing else (white or grey anti-aliasing)
    band = grid[:header].astype(int)
    for index in range(3):
        cell = band[:, index * column : (index + 1) * column]
        assert (cell.max(axis=-1) < 100).sum() >= 15, f"no title text over column {index}"
    assert (np.ptp(band, axis=-1) == 0).all(), "the title band has coloured pixels"

    # legend band: a swatch of each class shown, in its exact palette colour; absent classes are not listed
    legend = grid[tiles_end:]
    assert legend.shape[0] >= 8
    for shown in (1, 2, 4):
        assert count_color(legend, palette[shown]) >= 36, f"no swatch for class {shown}"
    for absent in (0, 3, 5):
        assert count_color(legend, palette[absent]) == 0, f"class {absent} is not shown but has a swatch"
    assert (legend.max(axis=-1) < 100).sum() >= 30, "no class names in the legend"

    # ignore is listed as a white swatch in a frame: one more frame than without ignore pixels
    without = overlay_grid(*grid_inputs(with_ignore=False), palette, class_names=names)
    frames_with = count_color(legend, SWATCH_BORDER)
    frames_without = count_color(without[tiles_end:], SWATCH_BORDER)
    assert frames_with == pytest.approx(frames_without * 4 / 3, rel=0.01)


def test_grid_legend_entries_name_the_classes_present():
    palette = voc_palette()
    _, targets, preds = grid_inputs(with_ignore=True)
    entries = legend_entries([*targets, *preds], palette, ["bg", "a", "b", "c", "d", "e"])
    assert [name for name, _ in entries] == ["a", "b", "d", "ignore"]
    assert entries[0][1] == tuple(int(c) for c in palette[1]) and entries[-1][1] == IGNORE_COLOR


# ---------------------------------------------------------------- when grids are written
def fit_logging(datamodule, tmp_path: Path, every_n_epochs: int, **trainer_kwargs) -> list[str]:
    module = SegmentationModule(num_classes=6, class_names=datamodule.class_names, net=nn.Conv2d(3, 6, 3, padding=1))
    logger = CSVLogger(tmp_path)
    trainer = Trainer(
        logger=logger,
        callbacks=[SegmentationImageLogger(num_samples=2, every_n_epochs=every_n_epochs)],
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=datamodule)
    return sorted(path.name for path in Path(logger.log_dir).glob("images/*.png"))


def test_fit_stopped_by_max_steps_logs_one_grid_at_its_end(tiny_synthetic, tmp_path: Path):
    # tiny_synthetic has 2 steps per epoch: the fit stops in the middle of its second epoch
    names = fit_logging(tiny_synthetic, tmp_path, every_n_epochs=8, max_epochs=16, max_steps=3)
    assert names == ["val_predictions_fit_end_step000003.png"]
    grid = np.asarray(Image.open(Path(tmp_path) / "lightning_logs" / "version_0" / "images" / names[0]))
    assert grid.shape[1] == 3 * (64 + 2) and grid.shape[0] > 2 * (64 + 2)


def test_fit_stopped_by_max_steps_before_any_validation_still_logs(tiny_synthetic, tmp_path: Path):
    names = fit_logging(tiny_synthetic, tmp_path, every_n_epochs=8, max_steps=1)
    assert names == ["val_predictions_fit_end_step000001.png"]


@pytest.mark.parametrize(
    ("every_n_epochs", "limits", "expected"),
    [
        (2, {"max_epochs": 4}, ["epoch001", "epoch003"]),
        (8, {"max_epochs": 3}, ["epoch002"]),  # the last epoch is always logged, and only once
        (8, {"max_epochs": 16, "max_steps": 4}, ["epoch001"]),  # max_steps ends an epoch: that validation logs
    ],
)
def test_scheduled_grids_and_no_second_one_at_the_end(tiny_synthetic, tmp_path: Path, every_n_epochs, limits, expected):
    names = fit_logging(tiny_synthetic, tmp_path, every_n_epochs=every_n_epochs, **limits)
    assert names == [f"val_predictions_{tag}.png" for tag in expected]
