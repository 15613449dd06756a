"""Extra labelled images joining a DataModule's training data (MAD's counterexamples S).

:meth:`SegmentationDataModule.add_labelled <segmend.datamodules.base.SegmentationDataModule.add_labelled>`
takes ``id -> (image file, label file)``; the training loader then mixes them with the original
training data in every batch (a loader of each, cycled together, merged before the batch moves
to the device). Label files are palette or greyscale PNGs of class indices, 255 = ignore.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from segmend.datamodules.image_io import read_image
from segmend.datamodules.voc_format import read_index_mask
from torch.utils.data import Dataset

LabelledFile = tuple[str, str]
"""``(image path, label path)``."""


class LabelledFilesDataset(Dataset):
    """Images with their label masks, given file by file.

    Args:
        entries: ``id -> (image path, label path)``; served in this order.
        num_classes: C; label values are 0..C-1 and 255.
        transform: Callable ``(image, mask, box_mask, id) -> sample`` (see ``transforms.to_sample``).

    """

    def __init__(
        self, entries: Mapping[str, LabelledFile], num_classes: int, transform: Callable[..., dict[str, Any]]
    ) -> None:
        self.ids = list(entries)
        self.files = {key: (Path(image), Path(label)) for key, (image, label) in entries.items()}
        self.num_classes = num_classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample_id = self.ids[index]
        image_path, label_path = self.files[sample_id]
        from segmend.datamodules.voc import check_mask  # voc imports base, which imports this module

        image = read_image(image_path)
        mask = check_mask(read_index_mask(label_path), label_path, image.shape[:2], self.num_classes)
        return self.transform(image, mask, None, sample_id)


def batch_split(batch_size: int, num_train: int, num_extra: int, per_batch: int | None) -> tuple[int, int]:
    """Numbers of original and extra samples in a mixed batch.

    Args:
        batch_size: The training batch size (at least 2).
        num_train: Size of the original training set.
        num_extra: Number of extra labelled images.
        per_batch: Extra samples per batch; ``None`` gives them their share of the union, at least 1.

    Raises:
        ValueError: If the batch cannot hold both kinds.

    """
    if batch_size < 2:
        raise ValueError("Mixing extra labelled images into every batch needs batch_size >= 2.")
    extra = per_batch if per_batch is not None else round(batch_size * num_extra / (num_train + num_extra))
    if not 1 <= extra <= batch_size - 1:
        if per_batch is not None:
            raise ValueError(f"per_batch={per_batch} must be in [1, batch_size - 1] = [1, {batch_size - 1}].")
        extra = min(max(extra, 1), batch_size - 1)
    return batch_size - extra, extra
