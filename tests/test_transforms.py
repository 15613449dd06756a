"""Augmentation keeps image, mask and box mask aligned; the scale-crop warp matches resize + crop."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest

from segmend.datamodules.transforms import RandomScaleCrop, to_sample, train_transform
from segmend.datamodules.voc_format import voc_palette


def scene(seed: int = 0, shape=(60, 80)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    for label in range(1, 5):
        y, x = rng.integers(0, shape[0] - 15), rng.integers(0, shape[1] - 15)
        mask[y : y + 15, x : x + 15] = label
    image = voc_palette()[mask]
    return image, mask


def test_unit_scale_full_size_crop_is_identity():
    image, mask = scene()
    out = A.Compose([RandomScaleCrop(60, (1.0, 1.0))])(image=image[:, :60], mask=mask[:, :60])
    assert np.array_equal(out["image"], image[:, :60])
    assert np.array_equal(out["mask"], mask[:, :60])


def test_scale_crop_matches_resize_then_crop():
    image, mask = scene()
    out = A.Compose([RandomScaleCrop(200, (2.0, 2.0))])(image=image, mask=mask)
    resized = cv2.resize(mask, (160, 120), interpolation=cv2.INTER_NEAREST)
    # the scaled image (120x160) is smaller than the crop: it sits top-left, the rest is ignore
    assert np.mean(out["mask"][:120, :160] == resized) > 0.99
    assert (out["mask"][120:] == 255).all() and (out["mask"][:, 160:] == 255).all()
    assert (out["image"][120:] == 0).all()


@pytest.mark.parametrize("seed", range(5))
def test_image_mask_and_box_mask_stay_aligned(seed: int):
    image, mask = scene(seed)
    per_class = np.stack([(mask == c).astype(np.uint8) for c in range(21)])  # 21 channels, > 4
    transform = train_transform(crop_size=48, scale_range=(0.5, 2.0), hflip=True, color_jitter=0.0, rotation=10)
    transform.set_random_seed(seed)
    sample = to_sample(transform, image, mask, per_class, "x")
    out_mask = sample["mask"].numpy()
    boxes = sample["boxes"].numpy()
    labelled = out_mask != 255
    assert set(np.unique(out_mask)) <= {0, 1, 2, 3, 4, 255}
    agree = boxes.argmax(0)[labelled] == out_mask[labelled]
    assert agree.mean() > 0.98
    assert sample["image"].shape == (3, 48, 48)
