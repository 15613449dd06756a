"""A reader for Cityscapes exactly as distributed, and its DataModule.

```
root/
  leftImg8bit/{train,val,test,train_extra}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_{labelIds,instanceIds,color}.png
  gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_polygons.json
  gtCoarse/{train,val,train_extra}/<city>/<city>_<seq>_<frame>_gtCoarse_{labelIds,instanceIds,color}.png
  gtCoarse/{train,val,train_extra}/<city>/<city>_<seq>_<frame>_gtCoarse_polygons.json
```

The label ids, their tables and the id PNGs are in :mod:`segmend.datamodules.cityscapes_format`.
``instanceIds`` hold ``labelId * 1000 + k`` for objects of the ten instance classes and the plain
label id (< 1000) elsewhere, crowd regions included. Poles, traffic lights and traffic signs have
no instance ids; their objects are only in ``polygons.json``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch.utils.data import Dataset

from segmend.datamodules.base import SegmentationDataModule
from segmend.datamodules.cityscapes_format import (
    CLASS_NAMES,
    LICENSE_PLATE_8BIT,
    NAME_TO_LABEL,
    NUM_LABEL_IDS,
    LabelMode,
    bad_label_ids,
    cityscapes_palette,
    label_lut,
    read_id_png,
    read_polygon_boxes,
)
from segmend.datamodules.errors import DataFormatError, missing_data_error
from segmend.datamodules.image_io import read_image_size
from segmend.datamodules.label_files import IGNORE_INDEX, check_label_size
from segmend.datamodules.reader import SampleTransform, SegmentationReader
from segmend.datamodules.voc_format import BoxAnnotation, region_boxes

SECTION = "Cityscapes"
Annotation = Literal["fine", "coarse"]

ANNOTATION_DIRS = {"fine": "gtFine", "coarse": "gtCoarse"}
ANNOTATION_SPLITS = {"fine": ("train", "val", "test"), "coarse": ("train", "val", "train_extra")}
IMAGE_SUFFIX = "_leftImg8bit.png"


def check_choices(**arguments: str) -> None:
    """Refuse a label mode (``classes``) or annotation (``annotation``, ``eval_annotation``) Cityscapes does not have.

    Raises:
        ValueError: Naming the argument, its value and the choices.

    """
    for key, value in arguments.items():
        choices = tuple(CLASS_NAMES if key == "classes" else ANNOTATION_DIRS)
        if value not in choices:
            raise ValueError(f"{key} must be one of {choices}, got {value!r}.")


class CityscapesDataset(SegmentationReader):
    """Images, masks and (optionally) boxes of Cityscapes splits, read from the distributed layout.

    Sample ids are the file stems ``<city>_<seq>_<frame>``.

    Args:
        root: Folder holding ``leftImg8bit`` and ``gtFine`` / ``gtCoarse``.
        split: One split name (``train``, ``val``, ``test``, ``train_extra``) or several, read in order.
        classes: Label mode: ``"trainid19"`` (19 classes, index = trainId) or ``"objects11"``
            (background + the 11 object classes).
        annotation: ``"fine"`` (gtFine) or ``"coarse"`` (gtCoarse) labels.
        transform: Callable ``(image, mask, box_mask, id) -> sample`` (see ``transforms.to_sample``).
        with_masks: Read label masks; ``False`` gives image-only samples.
        with_boxes: Add the (C, H, W) box mask built from instanceIds and polygons.json.
        ids: Serve only these sample ids (file stems), in this order; only their files are checked.

    Raises:
        ValueError: If a split has no labels of ``annotation`` or an argument is unknown.
        FileNotFoundError: If an image or label split folder is missing or holds no images.
        DataFormatError: If an image has no label file.

    """

    def __init__(
        self,
        root: str | Path,
        split: str | Sequence[str],
        classes: LabelMode = "trainid19",
        annotation: Annotation = "fine",
        transform: SampleTransform | None = None,
        with_masks: bool = True,
        with_boxes: bool = False,
        ids: Sequence[str] | None = None,
    ) -> None:
        check_choices(classes=classes, annotation=annotation)
        self.root = Path(root)
        self.splits = (split,) if isinstance(split, str) else tuple(split)
        self.classes = classes
        self.class_names = CLASS_NAMES[classes]
        self.annotation = annotation
        self.gt_dir = ANNOTATION_DIRS[annotation]
        self.transform = transform
        self.with_masks = with_masks
        self.with_boxes = with_boxes
        self.lut = label_lut(classes)
        needs_labels = with_masks or with_boxes
        for name in self.splits:
            if name not in ("train", "val", "test", "train_extra"):
                raise ValueError(f"Unknown Cityscapes split {name!r}; expected train, val, test or train_extra.")
            if needs_labels and name not in ANNOTATION_SPLITS[annotation]:
                raise ValueError(
                    f"Cityscapes has no {annotation} labels ({self.gt_dir}) for split {name!r}; "
                    f"{annotation} labels exist for {', '.join(ANNOTATION_SPLITS[annotation])}. "
                    + (
                        "train_extra has only coarse labels: use annotation 'coarse'."
                        if name == "train_extra"
                        else "The test split has only fine labels: use annotation 'fine'."
                    )
                )
        self.entries: list[tuple[str, str, str]] = []  # (split, city, stem)
        wanted = None if ids is None else set(ids)
        for name in self.splits:
            self.entries += self._list_split(name, needs_labels, wanted)
        if ids is not None:
            by_stem = {entry[2]: entry for entry in self.entries}
            unknown = [i for i in ids if i not in by_stem]
            if unknown:
                raise KeyError(f"No Cityscapes images {unknown[:5]} in splits {self.splits} under {self.root}.")
            self.entries = [by_stem[i] for i in ids]
        self.ids = [stem for _, _, stem in self.entries]
        self.index = {stem: i for i, stem in enumerate(self.ids)}
        if len(self.index) != len(self.ids):
            raise DataFormatError(
                f"Cityscapes splits {self.splits} under {self.root} list the same image more than once; "
                "each <city>_<seq>_<frame> stem must occur in one split only."
            )

    def _list_split(self, split: str, needs_labels: bool, wanted: set[str] | None = None) -> list[tuple[str, str, str]]:
        """List the images of one split (only ``wanted`` stems if given) and check each has its label file."""
        image_dir = self.root / "leftImg8bit" / split
        if not image_dir.is_dir():
            raise missing_data_error(
                image_dir, f"the Cityscapes '{split}' images as <city>/<city>_<seq>_<frame>{IMAGE_SUFFIX}", SECTION
            )
        gt_split_dir = self.root / self.gt_dir / split
        if needs_labels and not gt_split_dir.is_dir():
            raise missing_data_error(
                gt_split_dir,
                f"the Cityscapes {self.annotation} labels of '{split}' as "
                f"<city>/<city>_<seq>_<frame>_{self.gt_dir}_labelIds.png",
                SECTION,
            )
        entries = []
        missing: list[tuple[Path, Path]] = []
        # the file every sample needs: labelIds for masks, instanceIds when only boxes are read
        suffix = "labelIds.png" if self.with_masks else "instanceIds.png"
        for city in sorted(p.name for p in image_dir.iterdir() if p.is_dir()):
            stems = sorted(f[: -len(IMAGE_SUFFIX)] for f in os.listdir(image_dir / city) if f.endswith(IMAGE_SUFFIX))
            if wanted is not None:
                stems = [s for s in stems if s in wanted]
            if needs_labels and stems:
                gt_city = gt_split_dir / city
                present = set(os.listdir(gt_city)) if gt_city.is_dir() else set()
                for stem in stems:
                    if f"{stem}_{self.gt_dir}_{suffix}" not in present:
                        missing.append(
                            (image_dir / city / f"{stem}{IMAGE_SUFFIX}", self._gt_path(split, city, stem, suffix))
                        )
            entries += [(split, city, stem) for stem in stems]
        if missing:
            image, label = missing[0]
            more = f" ({len(missing) - 1} more images of '{split}' lack labels)" if len(missing) > 1 else ""
            raise DataFormatError(
                f"Image {image} has no {self.annotation} label: expected {label}{more}. Extract "
                f"{'gtFine_trainvaltest.zip' if self.annotation == 'fine' else 'gtCoarse.zip'} into {self.root}."
            )
        if not entries and wanted is None:
            raise missing_data_error(
                image_dir, f"city folders of <city>_<seq>_<frame>{IMAGE_SUFFIX} images for split '{split}'", SECTION
            )
        return entries

    def _entry(self, sample_id: str | int) -> tuple[str, str, str]:
        if isinstance(sample_id, str):
            if sample_id not in self.index:
                raise KeyError(f"No Cityscapes sample {sample_id!r} in splits {self.splits} under {self.root}.")
            return self.entries[self.index[sample_id]]
        return self.entries[sample_id]

    def _gt_path(self, split: str, city: str, stem: str, suffix: str = "labelIds.png") -> Path:
        return self.root / self.gt_dir / split / city / f"{stem}_{self.gt_dir}_{suffix}"

    def image_path(self, sample_id: str | int) -> Path:
        """Path of the ``leftImg8bit`` image of a sample (by id or index)."""
        split, city, stem = self._entry(sample_id)
        return self.root / "leftImg8bit" / split / city / f"{stem}{IMAGE_SUFFIX}"

    def label_path(self, sample_id: str | int, suffix: str = "labelIds.png") -> Path:
        """Path of a label file of a sample, e.g. suffix ``labelIds.png``, ``instanceIds.png``, ``polygons.json``."""
        return self._gt_path(*self._entry(sample_id), suffix)

    def load_label_ids(self, sample_id: str | int, image_shape: tuple[int, int]) -> np.ndarray:
        """Read and check the raw ``labelIds`` of a sample (values 0..33; license plate -1 allowed).

        Raises:
            DataFormatError: If the file is unreadable, of another size than the image, or holds
                values that are not Cityscapes label ids.

        """
        path = self.label_path(sample_id)
        ids = read_id_png(path, "labelIds")
        check_label_size(path, ids.shape, image_shape, self.image_path(sample_id), what="Label")
        bad = bad_label_ids(ids)
        if bad:
            raise DataFormatError(
                f"Label {path} holds values {bad[:10]}, which are not Cityscapes labelIds (0..{NUM_LABEL_IDS - 1}, "
                "or -1 for license plates); was a trainId or colour image saved under a labelIds name?"
            )
        return ids

    def load_mask(self, sample_id: str | int, image_shape: tuple[int, int]) -> np.ndarray:
        """The (H, W) uint8 class-index mask of a sample in the current label mode (255 = void)."""
        ids = self.load_label_ids(sample_id, image_shape)
        if ids.dtype != np.uint8:  # signed ids: -1 (license plate) -> 255, like its 8-bit form
            ids = np.where(ids < 0, LICENSE_PLATE_8BIT, ids).astype(np.uint8)
        return self.lut[ids]

    def _box_label(self, label_id: int) -> int | None:
        """Class index of a label id in the current mode, or ``None`` if the mode has no such object class."""
        index = int(self.lut[label_id])
        if index == IGNORE_INDEX or (self.classes == "objects11" and index == 0):
            return None
        return index

    def _instance_boxes(self, sample_id: str | int, image_shape: tuple[int, int]) -> list[BoxAnnotation]:
        path = self.label_path(sample_id, "instanceIds.png")
        ids = read_id_png(path, "instanceIds")
        check_label_size(path, ids.shape, image_shape, self.image_path(sample_id), what="Label")
        ids = ids.astype(np.int32)
        bad = np.unique(ids[(ids < 0) | (ids >= NUM_LABEL_IDS * 1000) | ((ids >= NUM_LABEL_IDS) & (ids < 1000))])
        if bad.size:
            raise DataFormatError(
                f"{path} holds values {bad.tolist()[:10]}; Cityscapes instanceIds are labelId*1000+k for "
                f"instances and plain labelIds 0..{NUM_LABEL_IDS - 1} elsewhere."
            )
        found = region_boxes(np.where(ids >= 1000, ids, 0))  # instances only, in value order
        labelled = [(self._box_label(value // 1000), *box) for value, box in found.items()]
        return [BoxAnnotation(label, *box) for label, *box in labelled if label is not None]

    def _polygon_boxes(self, sample_id: str | int, image_shape: tuple[int, int]) -> list[BoxAnnotation]:
        found = read_polygon_boxes(self.label_path(sample_id, "polygons.json"), image_shape)
        labelled = [(self._box_label(NAME_TO_LABEL[name].id), *box) for name, *box in found]
        return [BoxAnnotation(label, *box) for label, *box in labelled if label is not None]

    def boxes(self, sample_id: str | int, image_shape: tuple[int, int] | None = None) -> list[BoxAnnotation]:
        """Object boxes of a sample in the current label mode, 0-based inclusive.

        Boxes of instance classes come from the instanceIds PNG (one per ``labelId*1000+k`` value,
        in value order; values below 1000, such as crowd regions, give none). Poles, traffic lights
        and traffic signs come from their polygons in ``polygons.json`` (the polygon's bounding box
        clipped to the image). Classes outside the label mode (e.g. caravan, or every class
        that is void in it) are dropped.

        Args:
            sample_id: Sample id (file stem) or index.
            image_shape: The image's (H, W); read from the image when ``None``.

        """
        if image_shape is None:
            image_shape = read_image_size(self.image_path(sample_id))
        return self._instance_boxes(sample_id, image_shape) + self._polygon_boxes(sample_id, image_shape)


class CityscapesDataModule(SegmentationDataModule):
    """Cityscapes (fine or coarse labels, 19 classes or 11 object classes) from its distributed folders.

    Training reads ``annotation`` labels; validation and test read ``eval_annotation`` labels
    (fine by default, as in the usual coarse-training protocol). The Cityscapes test labels are
    withheld (the gtFine test PNGs are placeholders), so ``test`` serves ``val`` by default.

    Args:
        root: Folder holding ``leftImg8bit`` and ``gtFine`` / ``gtCoarse``.
        classes: ``"trainid19"``: the 19 training classes (index = trainId, all other labels void
            255). ``"objects11"``: background 0 (every other valid class) and the object classes
            pole, traffic light, traffic sign, person, rider, car, truck, bus, train, motorcycle,
            bicycle as 1..11; void stays 255.
        annotation: Training labels: ``"fine"`` (gtFine) or ``"coarse"`` (gtCoarse).
        use_train_extra: Add the ``train_extra`` images (19998, coarse labels only) to training.
        eval_annotation: Labels of the validation and test splits.
        train_split: Split used for training (``train`` or ``val``).
        val_split: Split used for validation.
        test_split: Split used for testing.
        **kwargs: Loader and augmentation settings of :class:`SegmentationDataModule`. With
            ``with_boxes``, in ``trainid19`` mode channel 0 of the box mask (road, which never
            has boxes) is the "no box covers this pixel" channel of ``voc_format.box_mask``.

    Raises:
        ValueError: For an unknown label mode or annotation, ``use_train_extra`` with fine
            labels, or a split that has no labels of the requested annotation.

    """

    def __init__(
        self,
        root: str = "data/cityscapes",
        classes: LabelMode = "trainid19",
        annotation: Annotation = "fine",
        use_train_extra: bool = False,
        eval_annotation: Annotation = "fine",
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_choices(classes=classes, annotation=annotation, eval_annotation=eval_annotation)
        if use_train_extra and annotation != "coarse":
            raise ValueError(
                "use_train_extra adds the train_extra images, which have only coarse labels (gtCoarse); "
                "set annotation: coarse, or use_train_extra: false for fine labels."
            )
        for key, value, ann in (
            ("train_split", train_split, annotation),
            ("val_split", val_split, eval_annotation),
            ("test_split", test_split, eval_annotation),
        ):
            allowed = tuple(s for s in ANNOTATION_SPLITS[ann] if s != "train_extra")
            if value not in allowed:
                raise ValueError(
                    f"{key}={value!r} has no {ann} labels; choose one of {allowed}"
                    + (" (train_extra is added with use_train_extra: true)." if value == "train_extra" else ".")
                )
        self.root = Path(root)
        self.classes = classes
        self.class_names = CLASS_NAMES[classes]
        self.palette = cityscapes_palette(classes)
        self.annotation = annotation
        self.use_train_extra = use_train_extra
        self.eval_annotation = eval_annotation
        self.splits = {"train": train_split, "val": val_split, "test": test_split}

    def training_splits(self) -> tuple[str, ...]:
        """The Cityscapes splits read for training: ``train_split``, then ``train_extra`` with ``use_train_extra``."""
        return (self.splits["train"], *(("train_extra",) if self.use_train_extra else ()))

    def build_dataset(self, split: str, train: bool) -> Dataset:  # noqa: D102
        if split == "train":
            names, annotation = self.training_splits(), self.annotation
        elif split in ("val", "test"):
            names, annotation = (self.splits[split],), self.eval_annotation
        elif split == "train_extra":
            names, annotation = (split,), "coarse"
        else:
            raise ValueError(f"Unknown split {split!r}; CityscapesDataModule serves train, val, test and train_extra.")
        return CityscapesDataset(self.root, names, self.classes, annotation, **self.sample_kwargs(train))
