"""Colour overlays and image grids for segmentation results (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from segmend.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD

IGNORE_COLOR = (255, 255, 255)


def denormalize(image: Tensor) -> np.ndarray:
    """(3, H, W) normalised float tensor -> (H, W, 3) uint8 RGB."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=image.device)[:, None, None]
    rgb = (image.float() * std + mean).clamp(0, 1) * 255
    return rgb.round().byte().permute(1, 2, 0).cpu().numpy()


def colorize(labels: np.ndarray, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colours; ignored pixels are white."""
    out = palette[np.clip(labels, 0, len(palette) - 1)].astype(np.uint8)
    out[labels == ignore_index] = IGNORE_COLOR
    return out


def blend(image: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Alpha-blend a colour map over an RGB image."""
    return (image * (1 - alpha) + colors * alpha).round().astype(np.uint8)


def overlay_grid(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    palette: np.ndarray,
    ignore_index: int = 255,
    gap: int = 2,
) -> np.ndarray:
    """One row per sample: image | ground-truth overlay | prediction overlay.

    Args:
        images: (H, W, 3) uint8 images.
        targets: (H, W) label maps (``ignore_index`` shown white).
        predictions: (H, W) predicted label maps.
        palette: (N, 3) uint8 colours by class index.
        ignore_index: Label of unlabeled pixels.
        gap: White pixels between tiles.

    Returns:
        (rows * (H + gap), 3 * (W + gap), 3) uint8 grid.

    """
    rows = []
    for image, target, pred in zip(images, targets, predictions, strict=True):
        tiles = [
            image,
            blend(image, colorize(target, palette, ignore_index)),
            blend(image, colorize(pred, palette, ignore_index)),
        ]
        padded = [np.pad(t, ((0, gap), (0, gap), (0, 0)), constant_values=255) for t in tiles]
        rows.append(np.concatenate(padded, axis=1))
    return np.concatenate(rows, axis=0)
