"""Albumentations pipelines that keep image, label mask and box mask aligned."""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from segmend.datamodules.voc_format import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(
    crop_size: int | None = None,
    scale_range: tuple[float, float] = (0.5, 2.0),
    hflip: bool = True,
    color_jitter: float = 0.0,
    rotation: float = 0.0,
) -> A.Compose:
    """Random scale, rotation, padded crop, flip and colour jitter, then normalisation.

    Args:
        crop_size: Side of the square random crop; images smaller than it are padded with
            zeros and their masks with the ignore label. ``None`` keeps the full image.
        scale_range: Range of the random rescale factor; ``(1.0, 1.0)`` disables it.
        hflip: Random horizontal flip.
        color_jitter: Strength of brightness/contrast/saturation jitter (0 disables it).
        rotation: Maximum absolute rotation in degrees (0 disables it).

    Returns:
        A pipeline taking ``image``, ``mask`` and optionally ``box_mask`` (H, W, C).

    """
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}.")
    steps: list[Any] = []
    if (low, high) != (1.0, 1.0):
        steps.append(A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=cv2.INTER_LINEAR, p=1.0))
    if rotation > 0:
        steps.append(
            A.Rotate(
                limit=rotation,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=IGNORE_INDEX,
                p=1.0,
            )
        )
    if crop_size is not None:
        steps += [
            A.PadIfNeeded(
                crop_size,
                crop_size,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=IGNORE_INDEX,
            ),
            A.RandomCrop(crop_size, crop_size),
        ]
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if color_jitter > 0:
        steps.append(A.ColorJitter(color_jitter, color_jitter, color_jitter, hue=0.0, p=0.8))
    steps.append(A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD))
    return A.Compose(steps, additional_targets={"box_mask": "mask"})


def eval_transform(size_multiple: int = 32) -> A.Compose:
    """Normalise and pad (bottom/right, ignore label) to a multiple of ``size_multiple``."""
    return A.Compose(
        [
            A.PadIfNeeded(
                min_height=None,
                min_width=None,
                pad_height_divisor=size_multiple,
                pad_width_divisor=size_multiple,
                position="top_left",
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=IGNORE_INDEX,
            ),
            A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ],
        additional_targets={"box_mask": "mask"},
    )


def to_sample(
    transform: A.Compose,
    image: np.ndarray,
    mask: np.ndarray | None,
    box_mask: np.ndarray | None,
    sample_id: str,
) -> dict[str, Any]:
    """Apply ``transform`` and build one sample of the batch contract.

    Args:
        transform: Pipeline from :func:`train_transform` or :func:`eval_transform`.
        image: (H, W, 3) uint8 RGB image.
        mask: (H, W) class indices, or ``None`` for images without pixel labels.
        box_mask: (C, H, W) box mask from ``voc_format.box_mask``, or ``None``.
        sample_id: Stable id of the sample.

    Returns:
        ``image`` (3, H, W) float, ``mask`` (H, W) long (all 255 without labels),
        ``has_mask`` bool, ``id`` str, and ``boxes`` (C, H, W) float when a box mask was given.

    """
    has_mask = mask is not None
    inputs: dict[str, Any] = {
        "image": image,
        "mask": mask if has_mask else np.full(image.shape[:2], IGNORE_INDEX, dtype=np.uint8),
    }
    if box_mask is not None:
        inputs["box_mask"] = np.ascontiguousarray(box_mask.transpose(1, 2, 0))
    out = transform(**inputs)
    sample = {
        "image": torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))),
        "mask": torch.from_numpy(np.ascontiguousarray(out["mask"])).long(),
        "has_mask": has_mask,
        "id": sample_id,
    }
    if box_mask is not None:
        boxes = np.ascontiguousarray(out["box_mask"].transpose(2, 0, 1)) == 1  # padding (255) -> 0
        sample["boxes"] = torch.from_numpy(boxes).float()
    return sample
