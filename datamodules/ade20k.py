"""A reader for ADE20K as distributed for the MIT Scene Parsing benchmark (``ADEChallengeData2016``).

```
root/
  images/training/ADE_train_00000001.jpg        20210 images
  images/validation/ADE_val_00000001.jpg        2000 images
  annotations/training/ADE_train_00000001.png   8-bit greyscale ('L'): 0 = "other", 1..150 = classes
  annotations/validation/ADE_val_00000001.png
```

The 150 classes are stored as 1..150 and 0 marks "other"; :func:`reduce_zero_label` maps them once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from segmend.datamodules.base import SegmentationDataModule
from segmend.datamodules.errors import DataFormatError, missing_data_error
from segmend.datamodules.label_files import IGNORE_INDEX, check_label_size
from segmend.datamodules.reader import SampleTransform, SegmentationReader
from segmend.datamodules.voc_format import read_index_mask

SECTION = "ADE20K"

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip

NUM_STORED_CLASSES = len(ADE20K_CLASSES)  # stored as 1..150 on disk

# value on disk -> training label: 0 ("other") -> 255, v -> v - 1 for 1..150, 255 -> 255
_REDUCE_LUT = np.full(256, IGNORE_INDEX, dtype=np.uint8)
_REDUCE_LUT[1 : NUM_STORED_CLASSES + 1] = np.arange(NUM_STORED_CLASSES, dtype=np.uint8)


def reduce_zero_label(mask: np.ndarray) -> np.ndarray:
    """Map an ADE20K annotation as stored on disk to training labels: 0 -> 255, v -> v - 1, 255 -> 255.

    This is the only place segmend applies the mapping; it returns a new array and never modifies
    ``mask``, so reading a sample twice gives the same labels.

    Args:
        mask: (H, W) integer annotation with values in 0..150 or 255 (checked by the caller).

    Returns:
        (H, W) uint8 labels, 0..149 for the classes and 255 for ignore.

    """
    return _REDUCE_LUT[mask.astype(np.intp)]


class ADE20KDataset(SegmentationReader):
    """One split of ``ADEChallengeData2016``: images and reduced (0..149, 255 = ignore) label masks.

    Args:
        root: The ``ADEChallengeData2016`` folder (holding ``images`` and ``annotations``).
        split: Split folder name, ``"training"`` or ``"validation"``.
        transform: Callable ``(image, mask, box_mask, id) -> sample`` (see ``transforms.to_sample``).

    Raises:
        FileNotFoundError: If a split folder is missing or holds no images.
        DataFormatError: If an image has no annotation file.

    """

    class_names = ADE20K_CLASSES

    def __init__(self, root: str | Path, split: str, transform: SampleTransform | None) -> None:
        self.root = Path(root)
        self.split = split
        self.transform = transform
        image_dir, mask_dir = self.root / "images" / split, self.root / "annotations" / split
        if not image_dir.is_dir():
            raise missing_data_error(image_dir, f"a folder of ADE_*.jpg images of the '{split}' split", SECTION)
        if not mask_dir.is_dir():
            raise missing_data_error(mask_dir, f"a folder of ADE_*.png annotations of the '{split}' split", SECTION)
        self.ids = sorted(p.stem for p in image_dir.glob("*.jpg"))
        if not self.ids:
            raise missing_data_error(
                image_dir, f"ADE_*.jpg images of the '{split}' split (the folder is empty)", SECTION
            )
        annotated = {p.stem for p in mask_dir.glob("*.png")}
        missing = [i for i in self.ids if i not in annotated]
        if missing:
            raise DataFormatError(
                f"Image {self.image_path(missing[0])} has no annotation: expected {self.mask_path(missing[0])} "
                f"({len(missing)} of {len(self.ids)} images in {image_dir} have none). Re-extract "
                "ADEChallengeData2016.zip."
            )

    def image_path(self, sample_id: str) -> Path:
        """Path of the image of ``sample_id``."""
        return self.root / "images" / self.split / f"{sample_id}.jpg"

    def mask_path(self, sample_id: str) -> Path:
        """Path of the annotation PNG of ``sample_id``."""
        return self.root / "annotations" / self.split / f"{sample_id}.png"

    def load_mask(self, sample_id: str, image_shape: tuple[int, int]) -> np.ndarray:
        """Read, check and reduce the annotation of ``sample_id``.

        Returns:
            (H, W) uint8 labels: 0..149 for the classes, 255 for "other" and ignore.

        Raises:
            DataFormatError: If the annotation is missing, unreadable, an RGB image, of another size
                than the image, or holds values other than 0..150 and 255.

        """
        path = self.mask_path(sample_id)
        if not path.is_file():
            raise DataFormatError(f"Image {self.image_path(sample_id)} has no annotation: expected {path}.")
        stored = read_index_mask(path)
        check_label_size(path, stored.shape, image_shape, self.image_path(sample_id), what="Annotation")
        values = np.unique(stored)
        bad = values[(values > NUM_STORED_CLASSES) & (values != IGNORE_INDEX)]
        if bad.size:
            raise DataFormatError(
                f"Annotation {path} holds values {bad.tolist()[:10]}; ADE20K annotations hold 0 (other), "
                f"1..{NUM_STORED_CLASSES} (classes) or {IGNORE_INDEX}. Use the annotations of "
                "ADEChallengeData2016 (the full ADE20K release uses another, 3000+ class encoding)."
            )
        return reduce_zero_label(stored)


class ADE20KDataModule(SegmentationDataModule):
    """ADE20K SceneParsing (150 classes, "other" ignored) from its ``ADEChallengeData2016`` folder.

    ``train`` reads ``training``; ``val`` and ``test`` read ``validation`` (the benchmark's test
    images have no public annotations). Other split names are used as folder names.

    Args:
        root: The ``ADEChallengeData2016`` folder.
        **kwargs: Loader and augmentation settings of :class:`SegmentationDataModule`;
            ``with_boxes`` is not available (the benchmark has no object boxes).

    Raises:
        ValueError: If ``with_boxes`` is set.

    """

    class_names = ADE20K_CLASSES
    splits = {"train": "training", "val": "validation", "test": "validation"}

    def __init__(self, root: str = "data/ADEChallengeData2016", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.with_boxes:
            raise ValueError(
                "ADE20K (ADEChallengeData2016) has no object box annotations; set with_boxes to false "
                "or use a dataset with boxes (PASCAL VOC, synthetic)."
            )
        self.root = Path(root)

    def build_dataset(self, split: str, train: bool) -> Dataset:  # noqa: D102
        return ADE20KDataset(self.root, self.splits.get(split, split), self.sample_kwargs(train)["transform"])
