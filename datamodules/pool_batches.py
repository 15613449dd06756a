"""Batches of an image pool: files that fail when loaded are dropped, never handed to a model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, default_collate

from segmend.datamodules.label_files import IGNORE_INDEX
from segmend.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD


def collate_skip_none(samples: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Collate samples of the batch contract, dropping the ``None`` of images that failed to load.

    Samples of different sizes are padded at the bottom/right to the largest (images with the
    normalised value of black, as the eval transform pads; masks with 255; boxes with 0).

    Args:
        samples: Samples from :class:`ImageFolderPool` (or any reader), ``None`` for failures.

    Returns:
        The batch, or ``None`` when every sample failed (:class:`SkipNoneDataLoader` skips it).

    """
    kept = [s for s in samples if s is not None]
    if not kept:
        return None
    height = max(s["image"].shape[-2] for s in kept)
    width = max(s["image"].shape[-1] for s in kept)
    if any(s["image"].shape[-2:] != (height, width) for s in kept):
        kept = [_pad_sample(s, height, width) for s in kept]
    return default_collate(kept)


def _pad_sample(sample: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    pad = (0, width - sample["image"].shape[-1], 0, height - sample["image"].shape[-2])
    black = [(0.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    image = torch.stack([torch.nn.functional.pad(c, pad, value=v) for c, v in zip(sample["image"], black, strict=True)])
    out = {**sample, "image": image, "mask": torch.nn.functional.pad(sample["mask"], pad, value=IGNORE_INDEX)}
    if "boxes" in sample:
        out["boxes"] = torch.nn.functional.pad(sample["boxes"], pad, value=0.0)
    return out


class SkipNoneDataLoader(DataLoader):
    """A DataLoader that never yields ``None``: batches whose every sample failed are skipped.

    Use it with :func:`collate_skip_none`. ``len()`` still counts every batch, skipped or not.
    """

    def __iter__(self):  # noqa: ANN204, D105
        return (batch for batch in super().__iter__() if batch is not None)
