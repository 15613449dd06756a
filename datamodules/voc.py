"""A reader for datasets in the PASCAL VOC segmentation layout, and the PASCAL VOC 2012 DataModule.

```
root/                                   e.g. VOCdevkit/VOC2012
  JPEGImages/<id>.jpg
  SegmentationClass/<id>.png            palette PNG, class indices, 255 = ignore
  Annotations/<id>.xml                  object boxes (1-based inclusive)
  ImageSets/Segmentation/<split>.txt    train (1464), val (1449), trainval (2913)
```

``train_aug`` (10582 images: SBD train+val and VOC train, minus VOC val) adds the masks of the
Semantic Boundaries Dataset; its reader is :class:`segmend.datamodules.sbd.VOCAugDataset`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from segmend.datamodules.base import SegmentationDataModule
from segmend.datamodules.image_io import check_label_orientation, read_image
from segmend.datamodules.voc_format import (
    IGNORE_INDEX,
    BoxAnnotation,
    DataFormatError,
    box_mask,
    parse_voc_xml,
    read_index_mask,
)
from torch.utils.data import Dataset

DATASETS_DOC = "docs/datasets.md"
SECTION = "PASCAL VOC and SBD"
DOWNLOAD_SECTIONS = ("PASCAL VOC and SBD", "Cityscapes", "ADE20K")  # sections of DATASETS_DOC with download pages
AugSource = Literal["sbd", "png"]


def _see_docs(section: str) -> str:
    downloads = " and the official download pages" if section in DOWNLOAD_SECTIONS else ""
    return f"See {DATASETS_DOC} ({section}) for the layout{downloads}."


def missing_data_error(path: Path, expected: str, section: str, argument: str = "root") -> FileNotFoundError:
    """Error for a dataset path that does not hold what a reader needs.

    Args:
        path: The path that was looked at.
        expected: What should be there.
        section: Section of ``docs/datasets.md`` that explains the layout.
        argument: The argument that leads to ``path`` and must be fixed (``root``, ``sbd_root``, ...).

    """
    return FileNotFoundError(
        f"Dataset not found: looked at {path}, expected {expected}. Set `{argument}` to the folder that "
        f"holds it. {_see_docs(section)}"
    )


@dataclass(frozen=True)
class MissingData:
    """A path that a DataModule argument leads to and that does not hold what it should.

    Attributes:
        argument: The argument to fix (``root``, ``sbd_root``, ``aug_dir``, ...).
        value: The argument's value.
        path: The path looked at (``value`` itself or a file or folder in it).
        expected: What should be there.

    """

    argument: str
    value: Path | str
    path: Path
    expected: str


def missing_roots_error(owner: str, missing: Sequence[MissingData], section: str) -> FileNotFoundError:
    """One error listing every missing path, grouped by the argument to fix.

    Args:
        owner: Name of the DataModule (or reader) the arguments belong to.
        missing: What is missing (see :class:`MissingData`), in the order to report.
        section: Section of ``docs/datasets.md`` that explains the layouts.

    """
    arguments = list(dict.fromkeys(m.argument for m in missing))
    lines = []
    for argument in arguments:
        items = [m for m in missing if m.argument == argument]
        lines.append(f"  - {argument}={items[0].value}:")
        lines += [f"      {m.path} is missing; expected {m.expected}" for m in items]
    return FileNotFoundError(
        f"Dataset not found: {owner} cannot find the data of {' and '.join(arguments)}.\n"
        + "\n".join(lines)
        + f"\nSet {' and '.join(arguments)} to "
        + ("the folder that holds the data" if len(arguments) == 1 else "the folders that hold their data")
        + f" (e.g. --data.init_args.{arguments[0]}=<folder>). {_see_docs(section)}"
    )


def read_split_ids(root: Path, split: str, image_sets: str = "ImageSets/Segmentation") -> list[str]:
    """Read the ids listed in ``root/<image_sets>/<split>.txt``.

    Raises:
        FileNotFoundError: If the list is missing, with the path and what was expected.

    """
    path = root / image_sets / f"{split}.txt"
    if not path.is_file():
        raise missing_data_error(path, f"a list of image ids for split '{split}'", SECTION)
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def check_mask(
    mask: np.ndarray,
    path: Path,
    image_shape: tuple[int, int],
    num_classes: int,
) -> np.ndarray:
    """Check a label mask read from ``path`` against its image and the classes; the one check of every reader.

    Used for VOC palette PNGs, ``SegmentationClassAug`` PNGs and SBD ``GTcls.Segmentation`` arrays.

    Args:
        mask: The mask as read (class indices).
        path: The file it came from, named in errors.
        image_shape: (H, W) of its image.
        num_classes: Number of classes; valid values are ``0..num_classes-1`` and 255 (ignore).

    Returns:
        The mask as (H, W) uint8.

    Raises:
        DataFormatError: If the mask is not 2-D, has another size than the image, or holds values
            that are neither classes nor the ignore label.

    """
    if mask.ndim != 2:
        raise DataFormatError(
            f"Mask {path} has shape {mask.shape}; expected a (H, W) array of class indices. A colour "
            "(RGB) mask loses the class indices; use the original file from the dataset archive."
        )
    if mask.shape != tuple(image_shape):
        raise DataFormatError(
            f"Mask {path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is "
            f"{image_shape[1]}x{image_shape[0]}; masks must match their images pixel for pixel."
        )
    values = np.unique(mask)
    bad = values[((values < 0) | (values >= num_classes) | (values != np.round(values))) & (values != IGNORE_INDEX)]
    if bad.size:
        raise DataFormatError(
            f"Mask {path} holds label values {bad.tolist()[:10]}, outside 0..{num_classes - 1} "
            f"and not {IGNORE_INDEX} (ignore); check that the dataset matches its {num_classes} classes."
        )
    return mask.astype(np.uint8)


class VOCSegmentationDataset(Dataset):
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
        transform: Callable[..., dict[str, Any]],
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

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

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
        if mask.shape != tuple(image_shape):
            check_label_orientation(path, mask.shape, self.image_path(sample_id), image_shape)
        return check_mask(mask, path, image_shape, self.num_classes)

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

    def read_sample(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The (H, W, 3) uint8 image and checked (H, W) uint8 mask (``None`` without masks), before any transform."""
        sample_id = self.ids[index]
        image = read_image(self.image_path(sample_id))
        return image, (self.load_mask(sample_id, image.shape[:2]) if self.with_masks else None)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.read_sample(index)
        sample_id = self.ids[index]
        boxes = None
        if self.with_boxes:
            boxes = box_mask(self.boxes(sample_id, image.shape[:2]), self.num_classes, *image.shape[:2])
        return self.transform(image, mask, boxes, sample_id)


VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

TRAIN_AUG = "train_aug"


class VOCDataModule(SegmentationDataModule):
    """PASCAL VOC 2012 segmentation (21 classes) from ``VOCdevkit/VOC2012``, optionally with SBD (``train_aug``).

    Splits are the lists of ``ImageSets/Segmentation`` (``train``, ``val``, ``trainval``) or
    ``train_aug``: SBD train ∪ SBD val ∪ VOC train, minus VOC val (10582 images). ``train_aug``
    ids, images and precedence (see :class:`segmend.datamodules.sbd.VOCAugDataset`):

    - images always come from VOC's ``JPEGImages`` (every SBD image is a VOC2011 image);
    - the mask of an id is VOC's ``SegmentationClass/<id>.png`` when that file exists (it has
      the 255 band around objects), otherwise the augmented mask: SBD's ``cls/<id>.mat``
      (``aug_source: sbd``) or ``<root>/<aug_dir>/<id>.png`` (``aug_source: png``);
    - boxes come from ``Annotations/<id>.xml`` when it exists, otherwise from SBD's
      ``inst/<id>.mat`` (needs ``sbd_root``).

    Args:
        root: The ``VOC2012`` folder (holding ``JPEGImages``, ``SegmentationClass``, ``ImageSets``).
        train_split: Id list used for training (``ImageSets/Segmentation/<name>.txt``) or ``train_aug``.
        val_split: Id list used for validation.
        test_split: Id list used for testing.
        mask_dir: Folder of VOC label PNGs.
        keep_difficult: Keep boxes flagged difficult (with ``with_boxes``).
        aug_source: Where ``train_aug`` masks of ids VOC did not segment come from: ``"sbd"`` (the
            SBD release at ``sbd_root``) or ``"png"`` (a pre-converted ``SegmentationClassAug``
            folder of PNGs inside ``root``).
        sbd_root: SBD's ``benchmark_RELEASE/dataset`` folder (holding ``img``, ``cls``, ``inst``,
            ``train.txt``, ``val.txt``). Required for ``train_aug`` with ``aug_source: sbd``; with
            ``aug_source: png`` it is optional and only supplies boxes of ids without an XML.
        aug_dir: Folder of ``root`` holding the pre-converted PNGs (``aug_source: png``).
        **kwargs: Loader and augmentation settings of :class:`SegmentationDataModule`.

    Raises:
        ValueError: For an unknown ``aug_source`` or ``train_aug`` from SBD without ``sbd_root``.

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
        aug_source: AugSource = "sbd",
        sbd_root: str | None = None,
        aug_dir: str = "SegmentationClassAug",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if aug_source not in ("sbd", "png"):
            raise ValueError(f"aug_source must be 'sbd' or 'png', got {aug_source!r}.")
        self.root = Path(root)
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.mask_dir = mask_dir
        self.keep_difficult = keep_difficult
        self.aug_source = aug_source
        self.sbd_root = Path(sbd_root) if sbd_root is not None else None
        self.aug_dir = aug_dir
        if TRAIN_AUG in self.splits.values():
            self._check_aug_arguments()

    def _check_aug_arguments(self) -> None:
        if self.aug_source == "sbd" and self.sbd_root is None:
            raise ValueError(
                "train_aug with aug_source 'sbd' needs sbd_root: set it to SBD's benchmark_RELEASE/dataset "
                "folder (from benchmark.tgz), or use aug_source: png with a SegmentationClassAug folder in root."
            )

    def setup(self, stage: str) -> None:
        """Check that the data the stage needs is there (:meth:`check_data`), then build the datasets."""
        self.check_data(stage)
        super().setup(stage)

    def stage_splits(self, stage: str | None = None) -> set[str]:
        """Names of the splits (``ImageSets/Segmentation`` lists or ``train_aug``) a Trainer stage reads.

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"``, ``"predict"``, or ``None`` for every stage.

        """
        keys = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": (self.predict_split,)}
        wanted = keys[stage] if stage in keys else ("train", "val", "test", self.predict_split)
        return {self.splits.get(key, key) for key in wanted}

    def missing_data(self, stage: str | None = None) -> list[MissingData]:
        """Every folder and list the stage needs that is not on disk, with the argument leading to it.

        Checks ``root`` (``JPEGImages``, the mask folder, the split lists), and for ``train_aug``
        ``sbd_root`` (``cls``, ``train.txt``, ``val.txt``) or ``aug_dir``. Reads no sample.

        Args:
            stage: As in :meth:`stage_splits`.

        """
        splits = self.stage_splits(stage)
        root = self.root
        missing: list[MissingData] = []
        if not root.is_dir():
            missing.append(
                MissingData(
                    "root",
                    root,
                    root,
                    "the VOC2012 folder (VOCdevkit/VOC2012 of VOCtrainval_11-May-2012.tar) holding "
                    f"JPEGImages, {self.mask_dir} and ImageSets/Segmentation",
                )
            )
        else:
            mask_argument = "root" if self.mask_dir == "SegmentationClass" else "mask_dir"
            needed = [
                ("root", root / "JPEGImages", "a folder of <id>.jpg images"),
                (mask_argument, root / self.mask_dir, "a folder of <id>.png label masks"),
            ]
            lists = {s for s in splits if s != TRAIN_AUG} | ({"train", "val"} if TRAIN_AUG in splits else set())
            needed += [
                ("root", root / "ImageSets/Segmentation" / f"{name}.txt", f"the list of ids of split '{name}'")
                for name in sorted(lists)
            ]
            for argument, path, expected in needed:
                if not path.exists():
                    value = self.mask_dir if argument == "mask_dir" else root
                    missing.append(MissingData(argument, value, path, expected))
        if TRAIN_AUG in splits and self.aug_source == "sbd" and self.sbd_root is not None:
            sbd = self.sbd_root
            if not sbd.is_dir():
                missing.append(
                    MissingData(
                        "sbd_root",
                        sbd,
                        sbd,
                        "SBD's benchmark_RELEASE/dataset folder (from benchmark.tgz) holding cls, inst, "
                        "train.txt and val.txt",
                    )
                )
            else:
                for path, expected in (
                    (sbd / "cls", "SBD's class masks as <id>.mat (GTcls)"),
                    (sbd / "train.txt", "SBD's list of 'train' ids"),
                    (sbd / "val.txt", "SBD's list of 'val' ids"),
                ):
                    if not path.exists():
                        missing.append(MissingData("sbd_root", sbd, path, expected))
        elif TRAIN_AUG in splits and self.aug_source == "png" and root.is_dir() and not (root / self.aug_dir).is_dir():
            missing.append(
                MissingData(
                    "aug_dir",
                    self.aug_dir,
                    root / self.aug_dir,
                    "the pre-converted SBD masks as <id>.png (SegmentationClassAug) inside root",
                )
            )
        return missing

    def check_data(self, stage: str | None = None) -> None:
        """Raise one error naming every argument whose data is missing (see :meth:`missing_data`).

        Raises:
            FileNotFoundError: Listing, per argument (``root``, ``sbd_root``, ...), its value and each
                missing path with what was expected there.

        """
        missing = self.missing_data(stage)
        if missing:
            raise missing_roots_error(type(self).__name__, missing, SECTION)

    def train_aug_ids(self) -> list[str]:
        """The ``train_aug`` ids: augmented ids ∪ VOC train, minus VOC val (see :func:`sbd.train_aug_ids`)."""
        from segmend.datamodules.sbd import train_aug_ids  # sbd.py builds on this module

        self._check_aug_arguments()
        return train_aug_ids(self.root, self.aug_source, self.sbd_root, self.aug_dir)

    def split_ids(self, split: str) -> list[str]:
        """The ids of a split name: an ``ImageSets/Segmentation`` list or ``train_aug``."""
        return self.train_aug_ids() if split == TRAIN_AUG else read_split_ids(self.root, split)

    def make_dataset(
        self,
        name: str,
        ids: Sequence[str] | None,
        train: bool,
        with_masks: bool = True,
        augmented: bool = False,
    ) -> VOCSegmentationDataset:
        """A reader over ``ids`` (or the list ``name`` when ``ids`` is ``None``).

        Args:
            name: Split name (also the list read when ``ids`` is ``None``).
            ids: Ids to serve.
            train: Apply training augmentation.
            with_masks: Read masks (``False`` for weak, image+boxes samples).
            augmented: Read through :class:`~segmend.datamodules.sbd.VOCAugDataset` (SBD / PNG
                masks for ids VOC did not segment, SBD instance boxes for ids without an XML).

        """
        kwargs = self.sample_kwargs(train)
        if augmented:
            from segmend.datamodules.sbd import VOCAugDataset  # sbd.py builds on this module

            return VOCAugDataset(
                self.root,
                name,
                self.class_names,
                ids=self.split_ids(name) if ids is None else ids,
                aug_source=self.aug_source,
                sbd_root=self.sbd_root,
                aug_dir=self.aug_dir,
                mask_dir=self.mask_dir,
                with_masks=with_masks,
                keep_difficult=self.keep_difficult,
                **kwargs,
            )
        return VOCSegmentationDataset(
            self.root,
            name,
            self.class_names,
            mask_dir=self.mask_dir,
            with_masks=with_masks,
            keep_difficult=self.keep_difficult,
            ids=ids,
            **kwargs,
        )

    def build_dataset(self, split: str, train: bool) -> Dataset:  # noqa: D102
        name = self.splits.get(split, split)
        return self.make_dataset(name, None, train, augmented=name == TRAIN_AUG)

    def boxes(self, sample_id: str, split: str = "train") -> list[BoxAnnotation]:
        """Object boxes (0-based inclusive) of ``sample_id`` as the reader of ``split`` finds them."""
        return self.dataset(split).boxes(sample_id)
