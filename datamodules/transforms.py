"""Albumentations pipelines that keep image, label mask and box mask aligned."""

from __future__ import annotations

import math
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from segmend.datamodules.label_files import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _warp(array: np.ndarray, matrix: np.ndarray, size: int, interpolation: int, fill: float) -> np.ndarray:
    """Affine-warp ``array`` (H, W[, C]) into a ``size`` x ``size`` output; OpenCV handles at most 4 channels."""
    if array.ndim == 3 and array.shape[2] > 4:
        chunks = [_warp(array[..., i : i + 4], matrix, size, interpolation, fill) for i in range(0, array.shape[2], 4)]
        return np.concatenate([c if c.ndim == 3 else c[..., None] for c in chunks], axis=2)
    out = cv2.warpAffine(
        array, matrix, (size, size), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=fill
    )
    if array.ndim == 3 and out.ndim == 2:
        out = out[..., None]
    return out


def _warp_nearest(array: np.ndarray, matrix: np.ndarray, size: int, fill: float) -> np.ndarray:
    """Nearest-neighbour version of :func:`_warp` by explicit indexing.

    Every channel reads the same source pixel (OpenCV's fixed-point nearest sampling can pick
    different neighbours for arrays of different channel counts, which would misalign a label
    mask and a many-channel box mask).
    """
    scale, offset_x, offset_y = matrix[0, 0], matrix[0, 2], matrix[1, 2]
    coords = np.arange(size, dtype=np.float64)
    src_x = np.floor((coords - offset_x) / scale + 0.5).astype(np.int64)
    src_y = np.floor((coords - offset_y) / scale + 0.5).astype(np.int64)
    height, width = array.shape[:2]
    valid_x = (src_x >= 0) & (src_x < width)
    valid_y = (src_y >= 0) & (src_y < height)
    out = array[np.clip(src_y, 0, height - 1)][:, np.clip(src_x, 0, width - 1)]
    outside = ~(valid_y[:, None] & valid_x[None, :])
    out[outside] = fill
    return np.ascontiguousarray(out)


class RandomScaleCrop(A.DualTransform):
    """Rescale by a random factor, pad (bottom/right) to the crop size and take a random crop, in one warp.

    Equivalent to ``RandomScale`` + ``PadIfNeeded`` + ``RandomCrop`` but only the ``size`` x ``size``
    output pixels are ever computed, so a 2048x1024 Cityscapes image scaled by 2 costs no more than
    a small one. Images are interpolated bilinearly and padded with ``fill``; masks use nearest
    neighbours and ``fill_mask``.

    Args:
        size: Side of the square output.
        scale_range: Range of the uniform random rescale factor.
        fill: Padding value of images.
        fill_mask: Padding value of masks (the ignore label).
        p: Probability of applying the transform.

    """

    def __init__(
        self,
        size: int,
        scale_range: tuple[float, float] = (0.5, 2.0),
        fill: float = 0.0,
        fill_mask: float = IGNORE_INDEX,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.size = size
        self.scale_range = scale_range
        self.fill = fill
        self.fill_mask = fill_mask

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """Draw the scale and the crop offset (in scaled coordinates) for this sample."""
        height, width = params["shape"][:2]
        scale = self.py_random.uniform(*self.scale_range)
        top = self.py_random.uniform(0, max(height * scale - self.size, 0))
        left = self.py_random.uniform(0, max(width * scale - self.size, 0))
        # pixel centres map like cv2.resize: dst + 0.5 = (src + 0.5) * scale - offset
        shift = 0.5 * scale - 0.5
        matrix = np.array([[scale, 0.0, shift - round(left)], [0.0, scale, shift - round(top)]], dtype=np.float64)
        return {"matrix": matrix}

    def apply(self, img: np.ndarray, matrix: np.ndarray, **params: Any) -> np.ndarray:  # noqa: D102
        return _warp(img, matrix, self.size, cv2.INTER_LINEAR, self.fill)

    def apply_to_mask(self, mask: np.ndarray, matrix: np.ndarray, **params: Any) -> np.ndarray:  # noqa: D102
        return _warp_nearest(mask, matrix, self.size, self.fill_mask)

    def get_transform_init_args_names(self) -> tuple[str, ...]:  # noqa: D102
        return ("size", "scale_range", "fill", "fill_mask")


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
    if crop_size is not None:  # scale and crop in one warp, before any other work
        steps.append(RandomScaleCrop(crop_size, (low, high)))
    elif (low, high) != (1.0, 1.0):
        steps.append(A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=cv2.INTER_LINEAR, p=1.0))
    if rotation > 0:
        steps.append(A.Rotate(limit=rotation, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX, p=1.0))
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if color_jitter > 0:
        steps.append(A.ColorJitter(color_jitter, color_jitter, color_jitter, hue=0.0, p=0.8))
    steps.append(A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD))
    return A.Compose(steps, additional_targets={"box_mask": "mask"})


def eval_transform(size_multiple: int = 32, longest_side: int | None = None) -> A.Compose:
    """Normalise and pad (bottom/right, ignore label) to a multiple of ``size_multiple``.

    Args:
        size_multiple: Padded sides are multiples of it.
        longest_side: Resize each image first so its longer side is this (aspect kept), and pad it
            to a square of that side rounded up to ``size_multiple``, so images of any size stack.

    """
    resize = [] if longest_side is None else [A.LongestMaxSize(max_size=longest_side, interpolation=cv2.INTER_LINEAR)]
    side = None if longest_side is None else math.ceil(longest_side / size_multiple) * size_multiple
    divisor = None if longest_side is not None else size_multiple
    pad = A.PadIfNeeded(min_height=side, min_width=side, pad_height_divisor=divisor, pad_width_divisor=divisor,
                        position="top_left", border_mode=cv2.BORDER_CONSTANT, fill_mask=IGNORE_INDEX)  # fmt: skip
    normalise = A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return A.Compose([*resize, pad, normalise], additional_targets={"box_mask": "mask"})


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
        ``has_mask`` bool, ``id`` str, ``image_size`` (2,) long: (height, width) of the image as
        read, before any transform, ``content_size`` (2,) long: (height, width) of the part of
        ``image`` that holds the (possibly resized) image, the rest being bottom/right padding,
        and ``boxes`` (C, H, W) float when a box mask was given. With the eval transforms,
        ``image[:, :h, :w]`` for ``(h, w) = content_size`` is the image, resized to ``image_size``
        it is the original.

    """
    has_mask = mask is not None
    inputs: dict[str, Any] = {
        "image": image,
        "mask": mask if has_mask else np.full(image.shape[:2], IGNORE_INDEX, dtype=np.uint8),
        "masks": [np.ones(image.shape[:2], dtype=np.uint8)],  # 1 on the image, padding fills 255
    }
    if box_mask is not None:
        inputs["box_mask"] = np.ascontiguousarray(box_mask.transpose(1, 2, 0))
    out = transform(**inputs)
    inside = out["masks"][0] == 1
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    content = (int(rows[-1]) + 1 if rows.size else 0, int(cols[-1]) + 1 if cols.size else 0)
    sample = {
        "image": torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))),
        "mask": torch.from_numpy(np.ascontiguousarray(out["mask"])).long(),
        "has_mask": has_mask,
        "id": sample_id,
        "image_size": torch.tensor(image.shape[:2], dtype=torch.long),
        "content_size": torch.tensor(content, dtype=torch.long),
    }
    if box_mask is not None:
        boxes = np.ascontiguousarray(out["box_mask"].transpose(2, 0, 1)) == 1  # padding (255) -> 0
        sample["boxes"] = torch.from_numpy(boxes).float()
    return sample
