"""A reader for datasets in the PASCAL VOC segmentation layout (VOC 2012, the synthetic scenes).

```
root/                                   e.g. VOCdevkit/VOC2012
  JPEGImages/<id>.jpg
  SegmentationClass/<id>.png            palette PNG, class indices, 255 = ignore
  Annotations/<id>.xml                  object boxes (1-based inclusive)
  ImageSets/Segmentation/<split>.txt    train (1464), val (1449), trainval (2913)
```

Readers of other sources of VOC masks and boxes (SBD, ``train_aug``) build on it in
:mod:`segmend.datamodules.sbd`; the DataModule is :class:`segmend.datamodules.voc.VOCDataModule`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segmend.datamodules.errors import DataFormatError, missing_data_error
from segmend.datamodules.label_files import check_mask
from segmend.datamodules.reader import SampleTransform, SegmentationReader
from segmend.datamodules.voc_format import BoxAnnotation, parse_voc_xml, read_index_mask

SECTION = "PASCAL VOC and SBD"

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def read_id_list(path: Path, expected: str, argument: str = "root") -> list[str]:
    """The ids of a list file (the first word of each non-empty line), as VOC's and SBD's lists hold them.

    Raises:
        DatasetNotFoundError: If the file is missing, saying what was expected and the argument to fix.

    """
    if not path.is_file():
        raise missing_data_error(path, expected, SECTION, argument)
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def read_split_ids(root: Path, split: str, image_sets: str = "ImageSets/Segmentation") -> list[str]:
    """Read the ids listed in ``root/<image_sets>/<split>.txt`` (see :func:`read_id_list`)."""
    return read_id_list(root / image_sets / f"{split}.txt", f"a list of image ids for split '{split}'")


class VOCSegmentationDataset(SegmentationReader):
    """Images, masks and (optionally) boxes of one split of a VOC-layout dataset.

    Masks are read per sample, so a dataset built with ``with_masks=False`` never opens a mask
    file. Subclasses change where masks and boxes come from by overriding :meth:`read_mask` and
    :meth:`fallback_boxes` (see :mod:`segmend.datamodules.sbd`).

    Args:
        root: Folder holding ``JPEGImages``, the mask folder and ``ImageSets``.
        split: Name of the id list in ``ImageSets/Segmentation`` (or, with ``ids``, a name for them).
        class_names: Class names by index, background first.
        transform: Callable ``(image, mask, box_mask, id) -> sample`` (see ``transforms.to_sample``).
        mask_dir: Folder of label PNGs, e.g. ``SegmentationClass`` or a coarse variant.
        with_masks: Read masks; ``False`` gives image-only (weak) samples.
        with_boxes: Read ``Annotations/<id>.xml`` and add the box mask.
        keep_difficult: Keep boxes flagged difficult.
        ids: Sample ids to serve instead of the ``split`` list.

    """

    image_dir = "JPEGImages"
    image_suffix = ".jpg"

    def __init__(
        self,
        root: str | Path,
        split: str,
        class_names: Sequence[str],
        transform: SampleTransform | None,
        mask_dir: str = "SegmentationClass",
        with_masks: bool = True,
        with_boxes: bool = False,
        keep_difficult: bool = True,
        ids: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.class_names = tuple(class_names)
        self.transform = transform
        self.mask_dir = mask_dir
        self.with_masks = with_masks
        self.with_boxes = with_boxes
        self.keep_difficult = keep_difficult
        if not (self.root / self.image_dir).is_dir():
            raise missing_data_error(self.root / self.image_dir, f"a folder of <id>{self.image_suffix} images", SECTION)
        self.ids = list(ids) if ids is not None else self.read_ids(split)
        if with_masks:
            self.check_mask_folders()

    def read_ids(self, split: str) -> list[str]:
        """The ids of ``split`` (``ImageSets/Segmentation/<split>.txt``)."""
        return read_split_ids(self.root, split)

    def check_mask_folders(self) -> None:
        """Raise FileNotFoundError if the folder masks are read from does not exist."""
        if not (self.root / self.mask_dir).is_dir():
            raise missing_data_error(self.root / self.mask_dir, "a folder of <id>.png label masks", SECTION)

    def image_path(self, sample_id: str) -> Path:
        """Path of the image of ``sample_id``."""
        return self.root / self.image_dir / f"{sample_id}{self.image_suffix}"

    def mask_path(self, sample_id: str) -> Path:
        """Path of the label mask of ``sample_id``."""
        return self.root / self.mask_dir / f"{sample_id}.png"

    def annotation_path(self, sample_id: str) -> Path:
        """Path of the VOC XML annotation (object boxes) of ``sample_id``."""
        return self.root / "Annotations" / f"{sample_id}.xml"

    def read_mask(self, sample_id: str) -> tuple[np.ndarray, Path]:
        """Read the raw label mask of ``sample_id``, unchecked, and the file it came from.

        Raises:
            DataFormatError: If there is no mask file or it cannot be read as class indices.

        """
        path = self.mask_path(sample_id)
        if not path.is_file():
            raise DataFormatError(f"Image {self.image_path(sample_id)} has no mask: expected {path}.")
        return read_index_mask(path), path

    def load_mask(self, sample_id: str, image_shape: tuple[int, int]) -> np.ndarray:
        """Read and check the mask of ``sample_id`` (see :func:`check_mask`).

        Raises:
            DataFormatError: If the mask is missing, of another size than the image (saying so
                when it fits the raw pixels of an EXIF-rotated image), or holds values that are
                neither classes nor the ignore label.

        """
        mask, path = self.read_mask(sample_id)
        return check_mask(mask, path, image_shape, self.num_classes, self.image_path(sample_id))

    def boxes(self, sample_id: str, image_shape: tuple[int, int] | None = None) -> list[BoxAnnotation]:
        """Object boxes of ``sample_id``, 0-based inclusive.

        From ``Annotations/<id>.xml`` when it exists (nested ``part`` boxes skipped, difficult
        objects kept unless ``keep_difficult`` is off); otherwise from :meth:`fallback_boxes`.

        Args:
            sample_id: The sample id.
            image_shape: The image's (H, W), used by fallbacks that check sizes; read when needed.

        """
        xml = self.annotation_path(sample_id)
        if xml.is_file():
            return parse_voc_xml(xml, self.class_names, self.keep_difficult)
        return self.fallback_boxes(sample_id, image_shape)

    def fallback_boxes(self, sample_id: str, image_shape: tuple[int, int] | None) -> list[BoxAnnotation]:
        """Boxes of a sample without an XML annotation; VOC itself has no other source.

        Raises:
            DataFormatError: Always, naming the expected XML file.

        """
        raise DataFormatError(
            f"Image {self.image_path(sample_id)} has no box annotation: expected {self.annotation_path(sample_id)}."
        )
