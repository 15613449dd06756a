"""Colour overlays and image grids for segmentation results (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
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


GRID_HEADERS = ("image", "ground truth", "prediction")
TEXT_COLOR = (0, 0, 0)
SWATCH_BORDER = (96, 96, 96)


def grid_font(tile_width: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font (no file, no download), sized to the tiles: 10 px up to 128-px tiles, then larger."""
    size = int(min(24, max(10, tile_width // 12)))
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _line_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    left, top, right, bottom = font.getbbox("Agjy")
    return int(bottom) + 2


def _text_width(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> int:
    return int(font.getbbox(text)[2])


def _header_band(width: int, column: int, titles: Sequence[str], font) -> np.ndarray:  # noqa: ANN001
    """(h, width, 3) white band with each title centred over its column (clipped to the column)."""
    height = _line_height(font) + 4
    band = Image.new("RGB", (width, height), (255, 255, 255))
    for index, title in enumerate(titles):
        cell = Image.new("RGB", (column, height), (255, 255, 255))
        x = max(0, (column - _text_width(font, title)) // 2)
        ImageDraw.Draw(cell).text((x, 2), title, fill=TEXT_COLOR, font=font)
        band.paste(cell, (index * column, 0))
    return np.asarray(band)


def legend_entries(
    labels: Sequence[np.ndarray],
    palette: np.ndarray,
    class_names: Sequence[str] | None = None,
    ignore_index: int = 255,
) -> list[tuple[str, tuple[int, int, int]]]:
    """``(name, colour)`` of each class present in ``labels`` (in class order), then ``ignore`` if present."""
    present: set[int] = set()
    for label_map in labels:
        present.update(int(v) for v in np.unique(label_map))
    has_ignore = ignore_index in present
    entries = []
    for index in sorted(present - {ignore_index}):
        name = class_names[index] if class_names is not None and 0 <= index < len(class_names) else str(index)
        color = palette[min(max(index, 0), len(palette) - 1)]
        entries.append((name, (int(color[0]), int(color[1]), int(color[2]))))
    if has_ignore:
        entries.append(("ignore", IGNORE_COLOR))
    return entries


def _legend_band(width: int, entries: Sequence[tuple[str, tuple[int, int, int]]], font) -> np.ndarray:  # noqa: ANN001
    """(h, width, 3) white band of swatches (exact colours, grey 1-px frame) and names, wrapped in lines."""
    line = _line_height(font)
    swatch = max(8, line - 2)
    spacing = 4
    placed, x, y = [], spacing, spacing
    for name, color in entries:
        entry_width = swatch + 2 + 3 + _text_width(font, name)
        if x > spacing and x + entry_width > width - spacing:
            x, y = spacing, y + line + spacing
        placed.append((x, y, name, color))
        x += entry_width + 3 * spacing
    height = y + line + spacing
    band = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(band)
    for x, y, name, color in placed:
        top = y + (line - swatch) // 2
        draw.rectangle((x, top, x + swatch + 1, top + swatch + 1), outline=SWATCH_BORDER, fill=color)
        draw.text((x + swatch + 2 + 3, y), name, fill=TEXT_COLOR, font=font)
    return np.asarray(band)


def _pad_to(tile: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.pad(tile, ((0, height - tile.shape[0]), (0, width - tile.shape[1]), (0, 0)), constant_values=255)


def overlay_grid(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    palette: np.ndarray,
    ignore_index: int = 255,
    gap: int = 2,
    class_names: Sequence[str] | None = None,
    headers: Sequence[str] | None = GRID_HEADERS,
    legend: bool = True,
) -> np.ndarray:
    """One row per sample: image | ground-truth overlay | prediction overlay, with titles and a legend.

    Text is drawn with Pillow's built-in font (nothing is read from disk or downloaded).

    Args:
        images: (H, W, 3) uint8 images.
        targets: (H, W) label maps (``ignore_index`` shown white).
        predictions: (H, W) predicted label maps.
        palette: (N, 3) uint8 colours by class index.
        ignore_index: Label of unlabeled pixels.
        gap: White pixels between tiles.
        class_names: Names shown in the legend; class indices when ``None``.
        headers: Column titles drawn above the tiles; ``None`` draws none.
        legend: Draw a legend below the tiles: a swatch in the exact palette colour and the name of
            each class present in the ground truth or the predictions, and ``ignore`` (white) if present.

    Returns:
        (header + rows * (H + gap) + legend, 3 * (W + gap), 3) uint8 grid, where H and W are the
        largest image's (smaller ones are padded with white).

    """
    return label_grid(images, [targets, predictions], palette, ignore_index, gap, class_names, headers, legend)


def label_grid(
    images: Sequence[np.ndarray],
    columns: Sequence[Sequence[np.ndarray]],
    palette: np.ndarray,
    ignore_index: int = 255,
    gap: int = 2,
    class_names: Sequence[str] | None = None,
    headers: Sequence[str] | None = None,
    legend: bool = True,
) -> np.ndarray:
    """One row per image: the image, then one palette overlay per column of label maps.

    Args:
        images: (H, W, 3) uint8 images.
        columns: Each a sequence of (H, W) label maps, one per image (ground truth, predictions, ...).
        palette: (N, 3) uint8 colours by class index.
        ignore_index: Label of unlabeled pixels (shown white).
        gap: White pixels between tiles.
        class_names: Names shown in the legend; class indices when ``None``.
        headers: ``1 + len(columns)`` titles drawn above the tiles; ``None`` draws none.
        legend: Draw a legend of the classes present in any column below the tiles.

    Returns:
        (header + rows * (H + gap) + legend, (1 + len(columns)) * (W + gap), 3) uint8 grid, where H
        and W are the largest image's (smaller ones are padded with white).

    Raises:
        ValueError: If ``headers`` does not have one title per grid column.

    """
    width = 1 + len(columns)
    if headers and len(headers) != width:
        raise ValueError(f"headers needs {width} titles (the image and each column); got {len(headers)}.")
    height = max(image.shape[0] for image in images) + gap
    column = max(image.shape[1] for image in images) + gap
    rows = []
    for index, image in enumerate(images):
        tiles = [image, *(blend(image, colorize(maps[index], palette, ignore_index)) for maps in columns)]
        rows.append(np.concatenate([_pad_to(tile, height, column) for tile in tiles], axis=1))
    parts = []
    font = grid_font(column - gap)
    if headers:
        parts.append(_header_band(width * column, column, headers, font))
    parts += rows
    if legend:
        entries = legend_entries([m for maps in columns for m in maps], palette, class_names, ignore_index)
        if entries:
            parts.append(_legend_band(width * column, entries, font))
    return np.concatenate(parts, axis=0)
