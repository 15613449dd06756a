"""Labelled images given file by file, joining a DataModule's training data (MAD's counterexamples S).

See :meth:`SegmentationDataModule.add_labelled <segmend.datamodules.base.SegmentationDataModule.add_labelled>`;
label files are palette or greyscale PNGs of class indices, 255 = ignore.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from segmend.datamodules.label_files import check_mask
from segmend.datamodules.reader import SampleTransform, SegmentationReader
from segmend.datamodules.voc_format import read_index_mask

LabelledFile = tuple[str, str]
"""``(image path, label path)``."""


class LabelledFilesDataset(SegmentationReader):
    """Images with their label masks, given file by file.

    Args:
        entries: ``id -> (image path, label path)``; served in this order.
        class_names: Class names by index; label values are 0..C-1 and 255.
        transform: Callable ``(image, mask, box_mask, id) -> sample`` (see ``transforms.to_sample``).

    """

    def __init__(
        self, entries: Mapping[str, LabelledFile], class_names: Sequence[str], transform: SampleTransform | None
    ) -> None:
        self.ids = list(entries)
        self.files = {key: (Path(image), Path(label)) for key, (image, label) in entries.items()}
        self.class_names = tuple(class_names)
        self.transform = transform

    def image_path(self, sample_id: str) -> Path:  # noqa: D102
        return self.files[sample_id][0]

    def load_mask(self, sample_id: str, image_shape: tuple[int, int]) -> np.ndarray:  # noqa: D102
        path = self.files[sample_id][1]
        return check_mask(read_index_mask(path), path, image_shape, self.num_classes, self.image_path(sample_id))
