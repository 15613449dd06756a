"""The base of segmend's dataset readers: a reader writes its paths, decoding and label mapping; the rest is here.

Reading the image as people see it, building the box mask and applying the transform into a sample
of the batch contract are done once, by :class:`SegmentationReader` (see ``docs/datasets.md``,
Adding a dataset).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from segmend.datamodules.errors import DataFormatError
from segmend.datamodules.image_io import read_image
from segmend.datamodules.voc_format import BoxAnnotation, box_mask

SampleTransform = Callable[..., dict[str, Any]]
"""``(image, mask, box_mask, id) -> sample`` (see :func:`segmend.datamodules.transforms.to_sample`)."""


class SegmentationReader(Dataset, ABC):
    """Images, checked masks and optionally object boxes of one dataset, served as samples of the batch contract.

    Attributes:
        ids: Sample ids, in the order served.
        class_names: Class names by index.
        transform: Builds a sample from the arrays; ``None`` leaves the reader usable for raw
            arrays (:meth:`read_sample`) only.
        with_masks: Read masks; ``False`` gives image-only (weak) samples and never opens a mask file.
        with_boxes: Add the (C, H, W) box mask of :meth:`boxes`.

    """

    ids: list[str]
    class_names: tuple[str, ...]
    transform: SampleTransform | None = None
    with_masks: bool = True
    with_boxes: bool = False

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    @abstractmethod
    def image_path(self, sample_id: str) -> Path:
        """Path of the image of ``sample_id``."""

    @abstractmethod
    def load_mask(self, sample_id: str, image_shape: tuple[int, int]) -> np.ndarray:
        """The checked (H, W) uint8 class-index mask of ``sample_id`` (255 = ignore), or a DataFormatError."""

    def boxes(self, sample_id: str, image_shape: tuple[int, int] | None = None) -> list[BoxAnnotation]:
        """Object boxes of ``sample_id``, 0-based inclusive; a dataset without boxes raises DataFormatError."""
        raise DataFormatError(f"{type(self).__name__} has no object box annotations (asked for {sample_id!r}).")

    def read_sample(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The (H, W, 3) uint8 image and checked (H, W) uint8 mask (``None`` without masks), before any transform."""
        sample_id = self.ids[index]
        image = read_image(self.image_path(sample_id))
        return image, (self.load_mask(sample_id, image.shape[:2]) if self.with_masks else None)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.transform is None:
            raise ValueError(
                f"{type(self).__name__} needs a transform to build samples; use read_sample for raw arrays."
            )
        image, mask = self.read_sample(index)
        sample_id = self.ids[index]
        boxes = None
        if self.with_boxes:
            boxes = box_mask(self.boxes(sample_id, image.shape[:2]), self.num_classes, *image.shape[:2])
        return self.transform(image, mask, boxes, sample_id)
