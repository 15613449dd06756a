"""A reader for datasets in the PASCAL VOC segmentation layout.

```
root/
  JPEGImages/<id>.jpg
  SegmentationClass/<id>.png        palette PNG, class indices, 255 = ignore
  Annotations/<id>.xml              optional, object boxes
  ImageSets/Segmentation/<split>.txt
```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from segmend.datamodules.base import SegmentationDataModule
from segmend.datamodules.voc_format import (
    IGNORE_INDEX,
    DataFormatError,
    box_mask,
    parse_voc_xml,
    read_image,
    read_index_mask,
)
from torch.utils.data import Dataset

DATASETS_DOC = "docs/datasets.md"


def missing_data_error(path: Path, expected: str, section: str) -> FileNotFoundError:
    """Error for a dataset path that does not hold what a reader needs.

    Args:
        path: The path that was looked at.
        expected: What should be there.
        section: Section of ``docs/datasets.md`` that explains the layout.

    """
    return FileNotFoundError(
        f"Dataset not found: looked at {path}, expected {expected}. "
        f"See {DATASETS_DOC} ({section}) for the layout and download links, and point the "
        "DataModule's `root` at the folder that holds it."
    )


def read_split_ids(root: Path, split: str, image_sets: str = "ImageSets/Segmentation") -> list[str]:
    """Read the ids listed in ``root/<image_sets>/<split>.txt``.

    Raises:
        FileNotFoundError: If the list is missing, with the path and what was expected.

    """
    path = root / image_sets / f"{split}.txt"
    if not path.is_file():
        raise missing_data_error(path, f"a list of image ids for split '{split}'", "PASCAL VOC")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


class VOCSegmentationDataset(Dataset):
    """Images, masks and (optionally) boxes of one split of a VOC-layout dataset.

    Args:
        root: Folder holding ``JPEGImages``, the mask folder and ``ImageSets``.
        split: Name of the id list in ``ImageSets/Segmentation``.
        class_names: Class names by index, background first.
        transform: Callable ``(image, mask, box_mask, id) -> sample`` (see ``transforms.to_sample``).
        mask_dir: Folder of label PNGs, e.g. ``SegmentationClass`` or a coarse variant.
        with_masks: Read masks; ``False`` gives image-only (weak) samples.
        with_boxes: Read ``Annotations/<id>.xml`` and add the box mask.
        keep_difficult: Keep boxes flagged difficult.

    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        class_names: Sequence[str],
        transform: Callable[..., dict[str, Any]],
        mask_dir: str = "SegmentationClass",
        with_masks: bool = True,
        with_boxes: bool = False,
        keep_difficult: bool = True,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.class_names = tuple(class_names)
        self.transform = transform
        self.mask_dir = mask_dir
        self.with_masks = with_masks
        self.with_boxes = with_boxes
        self.keep_difficult = keep_difficult
        if not (self.root / "JPEGImages").is_dir():
            raise missing_data_error(self.root / "JPEGImages", "a folder of <id>.jpg images", "PASCAL VOC")
        self.ids = read_split_ids(self.root, split)
        if with_masks and not (self.root / mask_dir).is_dir():
            raise missing_data_error(self.root / mask_dir, "a folder of <id>.png label masks", "PASCAL VOC")

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, sample_id: str) -> Path:
        """Path of the image of ``sample_id``."""
        return self.root / "JPEGImages" / f"{sample_id}.jpg"

    def mask_path(self, sample_id: str) -> Path:
        """Path of the label mask of ``sample_id``."""
        return self.root / self.mask_dir / f"{sample_id}.png"

    def load_mask(self, sample_id: str, image_shape: tuple[int, int]) -> np.ndarray:
        """Read and check the mask of ``sample_id``.

        Raises:
            DataFormatError: If the mask is missing, of another size than the image, or holds
                values that are neither classes nor the ignore label.

        """
        path = self.mask_path(sample_id)
        if not path.is_file():
            raise DataFormatError(f"Image {self.image_path(sample_id)} has no mask: expected {path}.")
        mask = read_index_mask(path)
        if mask.shape != image_shape:
            raise DataFormatError(
                f"Mask {path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is "
                f"{image_shape[1]}x{image_shape[0]}; masks must match their images pixel for pixel."
            )
        values = np.unique(mask)
        bad = values[(values >= len(self.class_names)) & (values != IGNORE_INDEX)]
        if bad.size:
            raise DataFormatError(
                f"Mask {path} holds label values {bad.tolist()[:10]}, outside 0..{len(self.class_names) - 1} "
                f"and not {IGNORE_INDEX} (ignore); check that the dataset matches its "
                f"{len(self.class_names)} classes."
            )
        return mask.astype(np.uint8)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample_id = self.ids[index]
        image = read_image(self.image_path(sample_id))
        mask = self.load_mask(sample_id, image.shape[:2]) if self.with_masks else None
        boxes = None
        if self.with_boxes:
            annotations = parse_voc_xml(
                self.root / "Annotations" / f"{sample_id}.xml",
                self.class_names,
                self.keep_difficult,
            )
            boxes = box_mask(annotations, len(self.class_names), *image.shape[:2])
        return self.transform(image, mask, boxes, sample_id)


VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


class VOCDataModule(SegmentationDataModule):
    """PASCAL VOC 2012 segmentation (21 classes) from its ``VOCdevkit/VOC2012`` folder.

    Args:
        root: The ``VOC2012`` folder (holding ``JPEGImages``, ``SegmentationClass``, ``ImageSets``).
        train_split: Id list used for training (``ImageSets/Segmentation/<name>.txt``).
        val_split: Id list used for validation.
        test_split: Id list used for testing.
        mask_dir: Folder of label PNGs.
        keep_difficult: Keep boxes flagged difficult (with ``with_boxes``).
        **kwargs: Loader and augmentation settings of :class:`SegmentationDataModule`.

    """

    class_names = VOC_CLASSES

    def __init__(
        self,
        root: str = "data/VOCdevkit/VOC2012",
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
        mask_dir: str = "SegmentationClass",
        keep_difficult: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.mask_dir = mask_dir
        self.keep_difficult = keep_difficult

    def build_dataset(self, split: str, train: bool) -> Dataset:  # noqa: D102
        return VOCSegmentationDataset(
            self.root,
            self.splits.get(split, split),
            self.class_names,
            mask_dir=self.mask_dir,
            keep_difficult=self.keep_difficult,
            **self.sample_kwargs(train),
        )
