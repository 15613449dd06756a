"""The MAD loop's per-round report: ``report.md``, the grid of counterexamples S (PNG) and its W&B table.

Called by :class:`~segmend.callbacks.MADTroubleshooting` on rank 0 after a round's evaluation.
``<run>/mad/report.md`` is regenerated from the state's files (:func:`segmend.mad.report.write_report`);
the grid ``<run>/mad/round_<r>/counterexamples.png`` shows, for the first ``max_images`` images of
S (lowest mean opinion score first), the image, the target's prediction and each competitor's
(palette overlays, a legend of the classes shown). With a ``WandbLogger`` attached the same rows
go to W&B as a table ``mad/counterexamples`` (round, id, MOS, image, overlays) with ``mad/round``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from segmend.callbacks.mad_pool import CompetitorCache, PoolSource, dataset_miou, predict_maps
from segmend.datamodules.image_io import read_image
from segmend.datamodules.voc_format import voc_palette
from segmend.mad import mean_opinion_scores
from segmend.mad.files import atomic_write_bytes
from segmend.mad.report import GRID_NAME, per_image_miou, write_report
from segmend.mad.state import MADState
from segmend.viz import blend, colorize, label_grid

TABLE_KEY = "mad/counterexamples"


def fit_tile(image: np.ndarray, maps: Sequence[np.ndarray], max_side: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Resize an image to its maps' size, then both so the longer side is at most ``max_side`` (maps: nearest).

    Args:
        image: (h, w, 3) uint8 image as read.
        maps: (H, W) label maps of the image (all of one size).
        max_side: Longest side of the tiles in pixels.

    Returns:
        The (H', W', 3) image and the (H', W') maps.

    """
    height, width = maps[0].shape
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    resized = [np.asarray(Image.fromarray(m.astype(np.uint8)).resize(size, Image.Resampling.NEAREST)) for m in maps]
    return picture, resized


def counterexample_grid(
    images: Sequence[np.ndarray],
    target_maps: Sequence[np.ndarray],
    competitor_maps: Mapping[str, Sequence[np.ndarray]],
    palette: np.ndarray,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """(rows, (2 + m) tiles) grid: image | target | each competitor, with titles and a legend."""
    headers = ["image", "target", *competitor_maps]
    return label_grid(images, [target_maps, *competitor_maps.values()], palette, class_names=class_names,
                      headers=headers)  # fmt: skip


def write_png(path: Path, array: np.ndarray) -> Path:
    """Save an RGB array as PNG atomically."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def report_round(
    trainer: Trainer,
    module: LightningModule,
    state: MADState,
    r: int,
    source: PoolSource,
    caches: Sequence[CompetitorCache],
    device: torch.device,
    max_images: int = 16,
    max_side: int = 256,
) -> Path:
    """Write round ``r``'s grid and W&B table of S, then ``report.md``; returns the report's path.

    Args:
        trainer: The Trainer (its W&B loggers get the table).
        module: The target, as evaluated in round ``r``.
        state: The loop's state (round ``r`` evaluated).
        r: The round.
        source: The pool.
        caches: The competitors' cached maps.
        device: Where the target predicts.
        max_images: Images of S in the grid and the table (the lowest MOS first).
        max_side: Longest side of a tile in the grid.

    """
    ids = list(state.round(r).counterexamples)[:max_images]
    target = predict_maps(module, source, ids, device)
    ids = [i for i in ids if i in target]
    if ids:
        palette = voc_palette()
        tiles = [fit_tile(read_image(source.image_path(i)), [target[i], *(c.read(i) for c in caches)], max_side)
                 for i in ids]  # fmt: skip
        images = [image for image, _ in tiles]
        columns = {"target": [maps[0] for _, maps in tiles]}
        columns.update({c.name: [maps[1 + j] for _, maps in tiles] for j, c in enumerate(caches)})
        grid = counterexample_grid(images, columns["target"], {k: v for k, v in columns.items() if k != "target"},
                                   palette, state.classes)  # fmt: skip
        write_png(state.layout.round_dir(r) / GRID_NAME, grid)
        log_table(trainer, r, ids, images, columns, _mos(state, r), palette)
    return write_report(state)


def _mos(state: MADState, r: int) -> dict[str, float]:
    """Mean opinion scores of round ``r`` (empty for a strategy without weak scores)."""
    if not state.reached(r, "scored") or not state.round(r).raters:
        return {}
    return mean_opinion_scores(state.load_scores(r))


def log_table(
    trainer: Trainer,
    r: int,
    ids: Sequence[str],
    images: Sequence[np.ndarray],
    columns: Mapping[str, Sequence[np.ndarray]],
    mos: Mapping[str, float],
    palette: np.ndarray,
) -> None:
    """Log the rows of S as a W&B table ``mad/counterexamples`` (with ``mad/round``) to every WandbLogger."""
    loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
    if not loggers:
        return
    import wandb

    names = list(columns)
    rows = []
    for k, (image_id, image) in enumerate(zip(ids, images, strict=True)):
        overlays = [wandb.Image(blend(image, colorize(columns[name][k], palette))) for name in names]
        rows.append([r, image_id, mos.get(image_id), wandb.Image(image), *overlays])
    table = wandb.Table(columns=["round", "id", "MOS", "image", *names], data=rows)
    for logger in loggers:
        logger.log_metrics({TABLE_KEY: table, "mad/round": float(r)}, step=trainer.global_step)


def test_scores(predictions: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_classes: int) -> dict:
    """A model's results on T: ``mIoU`` (confusion summed over T) and ``per_image`` mIoU (for the ranking stability)."""
    return {"mIoU": dataset_miou(predictions, labels, num_classes),
            "per_image": per_image_miou(predictions, labels, num_classes)}  # fmt: skip
