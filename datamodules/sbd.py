"""Readers for the Semantic Boundaries Dataset (SBD) and for VOC 2012 ``train_aug``.

SBD (``benchmark.tgz``, 11355 images of VOC2011 trainval) as distributed:

```
benchmark_RELEASE/dataset/
  img/<id>.jpg
  cls/<id>.mat     struct GTcls: Segmentation (H, W) uint8 class indices 0..20 (no 255 band),
                   Boundaries (20 sparse maps), CategoriesPresent
  inst/<id>.mat    struct GTinst: Segmentation (H, W) uint8 instance numbers (0 = none, k = k-th
                   instance), Boundaries, Categories (N x 1: class of instance k at row k)
  train.txt        8498 ids
  val.txt          2857 ids
```

SBD's train/val split is not VOC's: some SBD ids are VOC 2012 val images. ``train_aug``
(10582 images) is SBD train ∪ SBD val ∪ VOC train, minus VOC val. The pre-converted variant
ships SBD's masks as ``SegmentationClassAug/<id>.png`` ('L' or 'P' PNGs of class indices) inside
``VOC2012``; its ids are the file stems.

Which file each ``train_aug`` sample comes from is described in :class:`VOCAugDataset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.io import loadmat

from segmend.datamodules.errors import DataFormatError, missing_data_error
from segmend.datamodules.image_io import read_image_size
from segmend.datamodules.label_files import IGNORE_INDEX, check_label_size
from segmend.datamodules.reader import SampleTransform
from segmend.datamodules.voc_format import BoxAnnotation, read_index_mask, region_boxes
from segmend.datamodules.voc_reader import SECTION, VOC_CLASSES, VOCSegmentationDataset, read_id_list, read_split_ids

SBD_SPLITS = ("train", "val")
AugSource = Literal["sbd", "png"]
"""Where ``train_aug`` masks of ids VOC did not segment come from: SBD's ``.mat`` files or pre-converted PNGs."""


def check_aug_source(aug_source: str, sbd_root: str | Path | None, reads_train_aug: bool = True) -> None:
    """Refuse an unknown ``aug_source``, or ``"sbd"`` without ``sbd_root``: the one check of these arguments.

    Args:
        aug_source: ``"sbd"`` or ``"png"``.
        sbd_root: SBD's ``benchmark_RELEASE/dataset`` folder, or ``None``.
        reads_train_aug: Whether ``train_aug`` masks are read (``sbd_root`` is only needed then).

    Raises:
        ValueError: For another source, or ``"sbd"`` without ``sbd_root`` when ``train_aug`` is read.

    """
    if aug_source not in ("sbd", "png"):
        raise ValueError(f"aug_source must be 'sbd' or 'png', got {aug_source!r}.")
    if reads_train_aug and aug_source == "sbd" and sbd_root is None:
        raise ValueError(
            "train_aug with aug_source 'sbd' needs sbd_root: set it to SBD's benchmark_RELEASE/dataset "
            "folder (from benchmark.tgz), or use aug_source: png with a SegmentationClassAug folder in root."
        )


def read_mat_struct(path: Path, struct: str, fields: Sequence[str]) -> dict[str, np.ndarray]:
    """Read fields of a MATLAB struct stored in a ``.mat`` file (as SBD's ``GTcls`` / ``GTinst``).

    Args:
        path: The ``.mat`` file.
        struct: Name of the struct variable.
        fields: Fields to return.

    Returns:
        Field name -> value (the array stored in the 1x1 struct).

    Raises:
        DataFormatError: If the file is missing or unreadable, or lacks the struct or a field.

    """
    if not path.is_file():
        raise DataFormatError(f"SBD file not found: {path}")
    try:
        mat = loadmat(str(path))
    except Exception as err:  # scipy raises MatReadError, OSError, IndexError, ValueError... on corrupt files
        raise DataFormatError(
            f"Cannot read MATLAB file {path}: {type(err).__name__}: {err}. The file is corrupt or truncated; "
            "re-extract it from SBD's benchmark.tgz."
        ) from err
    value = mat.get(struct)
    names = getattr(getattr(value, "dtype", None), "names", None)
    if value is None or not names:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataFormatError(
            f"{path} has no struct {struct!r} (found variables {found}); SBD files hold a struct {struct} "
            f"with fields {list(fields)}. Is this an SBD {'cls' if struct == 'GTcls' else 'inst'} file?"
        )
    missing = [f for f in fields if f not in names]
    if missing or value.size != 1:
        raise DataFormatError(
            f"{path}: struct {struct} has fields {list(names)} and {value.size} element(s); expected one "
            f"element with fields {list(fields)}."
        )
    return {f: np.asarray(value[f].flat[0]) for f in fields}


def read_sbd_segmentation(path: Path) -> np.ndarray:
    """The raw (unchecked) class-index array ``GTcls.Segmentation`` of an SBD ``cls/<id>.mat`` file.

    Raises:
        DataFormatError: If the file is unreadable or has no ``GTcls.Segmentation``.

    """
    return read_mat_struct(path, "GTcls", ("Segmentation",))["Segmentation"]


def read_sbd_instances(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Instance numbers ``GTinst.Segmentation`` (H, W) and classes ``GTinst.Categories`` (N,) of ``inst/<id>.mat``.

    Raises:
        DataFormatError: If the file is unreadable or lacks ``GTinst.Segmentation`` / ``Categories``.

    """
    fields = read_mat_struct(path, "GTinst", ("Segmentation", "Categories"))
    return fields["Segmentation"], fields["Categories"].ravel().astype(np.int64)


def instance_boxes(
    instances: np.ndarray,
    categories: np.ndarray,
    num_classes: int,
    path: Path,
    image_shape: tuple[int, int] | None = None,
) -> list[BoxAnnotation]:
    """Boxes of an SBD instance map: one per instance number present, in instance order, 0-based inclusive.

    Instance ``k`` (pixel value ``k``, 1-based) has class ``categories[k - 1]``; 0 is background and
    255, should it occur, marks no instance. Instances listed but absent from the map give no box.

    Args:
        instances: (H, W) instance numbers (``GTinst.Segmentation``).
        categories: (N,) class of each instance (``GTinst.Categories``).
        num_classes: Number of classes (background included).
        path: The ``inst`` file, named in errors.
        image_shape: The image's (H, W), checked against the map when given.

    Raises:
        DataFormatError: If the map is not 2-D or of another size than the image, holds instance
            numbers above N, or a category is not a class 1..num_classes-1.

    """
    if instances.ndim != 2:
        raise DataFormatError(f"{path}: GTinst.Segmentation has shape {instances.shape}; expected (H, W).")
    if image_shape is not None:
        check_label_size(path, instances.shape, image_shape, what="Instance map (GTinst.Segmentation)")
    bad_classes = categories[(categories < 1) | (categories >= num_classes)]
    if bad_classes.size:
        raise DataFormatError(
            f"{path}: GTinst.Categories holds {bad_classes.tolist()[:10]}, not classes 1..{num_classes - 1}."
        )
    values = instances.astype(np.int64)
    values = np.where(values == IGNORE_INDEX, 0, values)
    bad = np.unique(values[(values < 0) | (values > len(categories))])
    if bad.size:
        raise DataFormatError(
            f"{path}: GTinst.Segmentation holds instance numbers {bad.tolist()[:10]} but GTinst.Categories "
            f"lists {len(categories)} instance(s); values must be 0 (none) or 1..{len(categories)}."
        )
    found = region_boxes(values, max_label=len(categories))
    return [BoxAnnotation(int(categories[number - 1]), *box) for number, box in found.items()]


def read_sbd_ids(sbd_root: Path, split: str, argument: str = "sbd_root") -> list[str]:
    """The ids of SBD's ``<sbd_root>/<split>.txt`` (``train`` or ``val``).

    Args:
        sbd_root: SBD's ``benchmark_RELEASE/dataset`` folder.
        split: ``train`` or ``val``.
        argument: Name of the argument holding ``sbd_root``, named in the error.

    Raises:
        ValueError: For another split name.
        DatasetNotFoundError: If the list is missing.

    """
    if split not in SBD_SPLITS:
        raise ValueError(f"SBD splits are {SBD_SPLITS}, got {split!r}.")
    expected = f"SBD's list of '{split}' ids ({argument} must be the benchmark_RELEASE/dataset folder)"
    return read_id_list(Path(sbd_root) / f"{split}.txt", expected, argument)


def train_aug_ids(
    voc_root: str | Path,
    aug_source: AugSource = "sbd",
    sbd_root: str | Path | None = None,
    aug_dir: str = "SegmentationClassAug",
) -> list[str]:
    """The ``train_aug`` ids: augmented ids ∪ VOC train, minus VOC val, sorted.

    The augmented ids are SBD train ∪ SBD val (``aug_source="sbd"``) or the stems of
    ``<voc_root>/<aug_dir>/*.png`` (``aug_source="png"``). On the real data this gives 10582 ids.

    Raises:
        ValueError: For ``aug_source="sbd"`` without ``sbd_root`` or an unknown source.
        FileNotFoundError: If a list or the PNG folder is missing.

    """
    voc_root = Path(voc_root)
    check_aug_source(aug_source, sbd_root)
    if aug_source == "sbd":
        augmented = set(read_sbd_ids(Path(sbd_root), "train")) | set(read_sbd_ids(Path(sbd_root), "val"))
    elif aug_source == "png":
        folder = voc_root / aug_dir
        if not folder.is_dir():
            raise missing_data_error(
                folder, "the pre-converted SBD masks as <id>.png (SegmentationClassAug)", SECTION, "aug_dir"
            )
        augmented = {p.stem for p in folder.glob("*.png")}
    voc_train = set(read_split_ids(voc_root, "train"))
    voc_val = set(read_split_ids(voc_root, "val"))
    return sorted((augmented | voc_train) - voc_val)


class SBDDataset(VOCSegmentationDataset):
    """SBD on its own, as distributed: images ``img/<id>.jpg``, masks ``cls/<id>.mat``, boxes ``inst/<id>.mat``.

    Masks go through the same check as VOC masks (:func:`segmend.datamodules.label_files.check_mask`).

    Args:
        root: SBD's ``benchmark_RELEASE/dataset`` folder.
        split: ``train`` or ``val`` (SBD's own lists; not VOC's split).
        class_names: Class names by index (the 21 VOC classes).
        transform: Callable ``(image, mask, box_mask, id) -> sample`` (see ``transforms.to_sample``).
        **reader_kwargs: ``with_masks``, ``with_boxes`` (the instances of ``inst/<id>.mat``) and ``ids``
            of :class:`~segmend.datamodules.voc_reader.VOCSegmentationDataset`.

    """

    image_dir = "img"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        class_names: Sequence[str] = VOC_CLASSES,
        transform: SampleTransform | None = None,
        **reader_kwargs: Any,
    ) -> None:
        super().__init__(root, split, class_names, transform, mask_dir="cls", **reader_kwargs)

    def read_ids(self, split: str) -> list[str]:  # noqa: D102
        return read_sbd_ids(self.root, split, argument="root")

    def check_mask_folders(self) -> None:  # noqa: D102
        if not (self.root / "cls").is_dir():
            raise missing_data_error(self.root / "cls", "SBD's class masks as <id>.mat (GTcls)", SECTION)

    def mask_path(self, sample_id: str) -> Path:  # noqa: D102
        return self.root / "cls" / f"{sample_id}.mat"

    def inst_path(self, sample_id: str) -> Path:
        """Path of the instance file of ``sample_id``."""
        return self.root / "inst" / f"{sample_id}.mat"

    def read_mask(self, sample_id: str) -> tuple[np.ndarray, Path]:  # noqa: D102
        path = self.mask_path(sample_id)
        if not path.is_file():
            raise DataFormatError(f"Image {self.image_path(sample_id)} has no mask: expected {path}.")
        return read_sbd_segmentation(path), path

    def boxes(self, sample_id: str, image_shape: tuple[int, int] | None = None) -> list[BoxAnnotation]:
        """Boxes of the instances of ``inst/<id>.mat``, in instance order, 0-based inclusive."""
        path = self.inst_path(sample_id)
        if not path.is_file():
            raise DataFormatError(f"Image {self.image_path(sample_id)} has no instance annotation: expected {path}.")
        return instance_boxes(*read_sbd_instances(path), self.num_classes, path, image_shape)


class VOCAugDataset(VOCSegmentationDataset):
    """VOC 2012 images with VOC masks where VOC has them and SBD (or ``SegmentationClassAug``) masks elsewhere.

    The reader of ``train_aug``. Precedence per id:

    - image: ``<root>/JPEGImages/<id>.jpg`` (every SBD image is a VOC2011 image and exists there);
    - mask: ``<root>/<mask_dir>/<id>.png`` if it exists (VOC's mask, with its 255 band), else
      ``<sbd_root>/cls/<id>.mat`` (``aug_source="sbd"``) or ``<root>/<aug_dir>/<id>.png``
      (``aug_source="png"``); all go through :func:`segmend.datamodules.label_files.check_mask`;
    - boxes: ``<root>/Annotations/<id>.xml`` if it exists, else ``<sbd_root>/inst/<id>.mat``;
      neither -> :class:`DataFormatError` naming both.

    Args:
        root: The ``VOC2012`` folder.
        split: A name for the ids (e.g. ``train_aug``); with ``ids`` unset, the VOC list read.
        class_names: Class names by index (the 21 VOC classes).
        transform: Callable ``(image, mask, box_mask, id) -> sample``.
        aug_source: ``"sbd"`` or ``"png"``.
        sbd_root: SBD's ``benchmark_RELEASE/dataset`` folder (required for ``aug_source="sbd"``).
        aug_dir: Folder of ``root`` with the pre-converted PNG masks (``aug_source="png"``).
        **reader_kwargs: ``ids`` (e.g. from :func:`train_aug_ids`), ``mask_dir``, ``with_masks`` (``False``
            never opens a mask), ``with_boxes`` and ``keep_difficult`` of
            :class:`~segmend.datamodules.voc_reader.VOCSegmentationDataset`.

    Raises:
        ValueError: For ``aug_source="sbd"`` without ``sbd_root`` or an unknown source.

    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        class_names: Sequence[str],
        transform: SampleTransform | None,
        aug_source: AugSource = "sbd",
        sbd_root: str | Path | None = None,
        aug_dir: str = "SegmentationClassAug",
        **reader_kwargs: Any,
    ) -> None:
        check_aug_source(aug_source, sbd_root)
        self.aug_source = aug_source
        self.sbd_root = Path(sbd_root) if sbd_root is not None else None
        self.aug_dir = aug_dir
        self.aug_folder = Path(sbd_root) / "cls" if aug_source == "sbd" else Path(root) / aug_dir  # sbd_root checked
        super().__init__(root, split, class_names, transform, **reader_kwargs)

    def check_mask_folders(self) -> None:  # noqa: D102
        super().check_mask_folders()
        if not self.aug_folder.is_dir():
            if self.aug_source == "sbd":
                raise missing_data_error(self.aug_folder, "SBD's class masks as <id>.mat (GTcls)", SECTION, "sbd_root")
            raise missing_data_error(self.aug_folder, "<id>.png label masks", SECTION, "aug_dir")

    def aug_mask_path(self, sample_id: str) -> Path:
        """Path of the augmented mask of ``sample_id``."""
        return self.aug_folder / f"{sample_id}{'.mat' if self.aug_source == 'sbd' else '.png'}"

    def inst_path(self, sample_id: str) -> Path | None:
        """Path of SBD's instance file of ``sample_id`` (``None`` without ``sbd_root``)."""
        return None if self.sbd_root is None else self.sbd_root / "inst" / f"{sample_id}.mat"

    def read_mask(self, sample_id: str) -> tuple[np.ndarray, Path]:
        """VOC's mask if the id has one, else the augmented one (raw, unchecked) and its path.

        Raises:
            DataFormatError: If neither exists (naming both) or the file cannot be read.

        """
        voc = self.mask_path(sample_id)
        if voc.is_file():
            return read_index_mask(voc), voc
        aug = self.aug_mask_path(sample_id)
        if not aug.is_file():
            raise DataFormatError(f"Image {self.image_path(sample_id)} has no mask: expected {voc} or {aug}.")
        return (read_sbd_segmentation(aug) if self.aug_source == "sbd" else read_index_mask(aug)), aug

    def fallback_boxes(self, sample_id: str, image_shape: tuple[int, int] | None) -> list[BoxAnnotation]:
        """Boxes of SBD's ``inst/<id>.mat`` for an id without an XML annotation.

        Raises:
            DataFormatError: If there is no instance file either, naming both expected files.

        """
        inst = self.inst_path(sample_id)
        if inst is None or not inst.is_file():
            alternative = f" or {inst}" if inst is not None else " (set sbd_root to read SBD's inst/<id>.mat instead)"
            raise DataFormatError(
                f"Image {self.image_path(sample_id)} has no box annotation: expected "
                f"{self.annotation_path(sample_id)}{alternative}."
            )
        image_shape = image_shape or read_image_size(self.image_path(sample_id))
        return instance_boxes(*read_sbd_instances(inst), self.num_classes, inst, image_shape)
