"""A reader for Cityscapes exactly as distributed, and its DataModule.

```
root/
  leftImg8bit/{train,val,test,train_extra}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_{labelIds,instanceIds,color}.png
  gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_polygons.json
  gtCoarse/{train,val,train_extra}/<city>/<city>_<seq>_<frame>_gtCoarse_{labelIds,instanceIds,color}.png
  gtCoarse/{train,val,train_extra}/<city>/<city>_<seq>_<frame>_gtCoarse_polygons.json
```

Facts the format relies on (from cityscapesScripts' ``labels.py`` and ``json2labelImg``/
``json2instanceImg``): ``labelIds`` PNGs are 8-bit ('L') and hold the 34 label ids 0..33, which
are not the 19 training classes (a lookup table maps id -> trainId, everything else is void);
license plates have id -1 and are never drawn. ``instanceIds`` PNGs are 16-bit and hold
``labelId * 1000 + k`` (k from 0 per class and image) for objects of the ten instance classes,
and the plain label id (< 1000) elsewhere, including crowd ("...group") regions. Poles, traffic
lights and traffic signs have no instance ids; their objects are only in ``polygons.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage
from segmend.datamodules.base import SegmentationDataModule
from segmend.datamodules.image_io import check_label_orientation, read_image, read_image_size
from segmend.datamodules.voc import missing_data_error
from segmend.datamodules.voc_format import IGNORE_INDEX, BoxAnnotation, DataFormatError, box_mask
from torch.utils.data import Dataset

SECTION = "Cityscapes"
LabelMode = Literal["trainid19", "objects11"]
Annotation = Literal["fine", "coarse"]


class CityscapesLabel(NamedTuple):
    """One row of cityscapesScripts' label table."""

    name: str
    id: int
    train_id: int
    has_instances: bool
    color: tuple[int, int, int]


LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel("unlabeled", 0, 255, False, (0, 0, 0)),
    CityscapesLabel("ego vehicle", 1, 255, False, (0, 0, 0)),
    CityscapesLabel("rectification border", 2, 255, False, (0, 0, 0)),
    CityscapesLabel("out of roi", 3, 255, False, (0, 0, 0)),
    CityscapesLabel("static", 4, 255, False, (0, 0, 0)),
    CityscapesLabel("dynamic", 5, 255, False, (111, 74, 0)),
    CityscapesLabel("ground", 6, 255, False, (81, 0, 81)),
    CityscapesLabel("road", 7, 0, False, (128, 64, 128)),
    CityscapesLabel("sidewalk", 8, 1, False, (244, 35, 232)),
    CityscapesLabel("parking", 9, 255, False, (250, 170, 160)),
    CityscapesLabel("rail track", 10, 255, False, (230, 150, 140)),
    CityscapesLabel("building", 11, 2, False, (70, 70, 70)),
    CityscapesLabel("wall", 12, 3, False, (102, 102, 156)),
    CityscapesLabel("fence", 13, 4, False, (190, 153, 153)),
    CityscapesLabel("guard rail", 14, 255, False, (180, 165, 180)),
    CityscapesLabel("bridge", 15, 255, False, (150, 100, 100)),
    CityscapesLabel("tunnel", 16, 255, False, (150, 120, 90)),
    CityscapesLabel("pole", 17, 5, False, (153, 153, 153)),
    CityscapesLabel("polegroup", 18, 255, False, (153, 153, 153)),
    CityscapesLabel("traffic light", 19, 6, False, (250, 170, 30)),
    CityscapesLabel("traffic sign", 20, 7, False, (220, 220, 0)),
    CityscapesLabel("vegetation", 21, 8, False, (107, 142, 35)),
    CityscapesLabel("terrain", 22, 9, False, (152, 251, 152)),
    CityscapesLabel("sky", 23, 10, False, (70, 130, 180)),
    CityscapesLabel("person", 24, 11, True, (220, 20, 60)),
    CityscapesLabel("rider", 25, 12, True, (255, 0, 0)),
    CityscapesLabel("car", 26, 13, True, (0, 0, 142)),
    CityscapesLabel("truck", 27, 14, True, (0, 0, 70)),
    CityscapesLabel("bus", 28, 15, True, (0, 60, 100)),
    CityscapesLabel("caravan", 29, 255, True, (0, 0, 90)),
    CityscapesLabel("trailer", 30, 255, True, (0, 0, 110)),
    CityscapesLabel("train", 31, 16, True, (0, 80, 100)),
    CityscapesLabel("motorcycle", 32, 17, True, (0, 0, 230)),
    CityscapesLabel("bicycle", 33, 18, True, (119, 11, 32)),
    CityscapesLabel("license plate", -1, 255, False, (0, 0, 142)),
)
NAME_TO_LABEL = {label.name: label for label in LABELS}
NUM_LABEL_IDS = 34  # label ids 0..33; -1 (license plate) is never drawn
LICENSE_PLATE_8BIT = 255  # -1 stored in an unsigned 8-bit PNG

TRAINID19_CLASSES: tuple[str, ...] = tuple(
    label.name for label in sorted((lb for lb in LABELS if lb.train_id != 255), key=lambda lb: lb.train_id)
)
OBJECT_TRAIN_IDS = (5, 6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
OBJECTS11_CLASSES: tuple[str, ...] = ("background", *(TRAINID19_CLASSES[t] for t in OBJECT_TRAIN_IDS))
CLASS_NAMES: dict[str, tuple[str, ...]] = {"trainid19": TRAINID19_CLASSES, "objects11": OBJECTS11_CLASSES}

# classes without instance ids whose boxes come from polygons.json
POLYGON_BOX_LABELS = ("pole", "traffic light", "traffic sign")
ANNOTATION_DIRS = {"fine": "gtFine", "coarse": "gtCoarse"}
ANNOTATION_SPLITS = {"fine": ("train", "val", "test"), "coarse": ("train", "val", "train_extra")}
IMAGE_SUFFIX = "_leftImg8bit.png"


def train_id_lut() -> np.ndarray:
    """(256,) uint8 table from label id (index 255 = license plate -1) to trainId, 255 = void."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in LABELS:
        if label.id >= 0:
            lut[label.id] = label.train_id
    return lut


def label_lut(classes: LabelMode) -> np.ndarray:
    """(256,) uint8 table from label id to the class index of a label mode (255 = void).

    Args:
        classes: ``"trainid19"`` (the 19 training classes, index = trainId) or ``"objects11"``
            (background 0 and the 11 object classes 1..11; void stays 255).

    """
    to_train = train_id_lut()
    if classes == "trainid19":
        return to_train
    if classes == "objects11":
        train_to_object = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        train_to_object[: len(TRAINID19_CLASSES)] = 0
        for index, train_id in enumerate(OBJECT_TRAIN_IDS, start=1):
            train_to_object[train_id] = index
        return train_to_object[to_train]
    raise ValueError(f"classes must be 'trainid19' or 'objects11', got {classes!r}.")


def cityscapes_palette(classes: LabelMode) -> np.ndarray:
    """(256, 3) uint8 colours by class index of a label mode (Cityscapes' own colours)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index, name in enumerate(CLASS_NAMES[classes]):
        palette[index] = NAME_TO_LABEL[name].color if name in NAME_TO_LABEL else (0, 0, 0)
    return palette


def ids_from_image(img: Image.Image, path: Path) -> np.ndarray:
    """Pixel values of a Cityscapes id PNG as an integer array, without any conversion.

    ``labelIds`` are 8-bit ('L'); ``instanceIds`` are 16-bit, which Pillow opens as 'I;16' (recent
    versions) or 'I' (32-bit, older versions); both give the stored values.

    Raises:
        DataFormatError: If the image is a colour image or of another mode.

    """
    if img.mode in ("RGB", "RGBA"):
        raise DataFormatError(
            f"{path} is an {img.mode} image; expected a greyscale PNG of Cityscapes ids ('L' labelIds, "
            "16-bit instanceIds). The _color.png files are for viewing only; use the original "
            "_labelIds.png / _instanceIds.png from the dataset archive."
        )
    if img.mode not in ("L", "P", "I;16", "I;16B", "I;16L", "I"):
        raise DataFormatError(f"{path} has mode {img.mode}; expected an 'L' (8-bit) or 16-bit greyscale PNG.")
    array = np.asarray(img)
    return array if array.dtype == np.uint8 else array.astype(np.int32)


def read_id_png(path: Path, what: str) -> np.ndarray:
    """Read a ``labelIds`` or ``instanceIds`` PNG (see :func:`ids_from_image`).

    Args:
        path: The PNG file.
        what: Its kind, for error messages (e.g. ``"labelIds"``).

    Raises:
        DataFormatError: If the file is missing, unreadable or of a wrong mode.

    """
    try:
        with Image.open(path) as img:
            img.load()
            return ids_from_image(img, path)
    except FileNotFoundError as err:
        raise DataFormatError(f"Cityscapes {what} file not found: {path}") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataFormatError(
            f"Cannot decode {what} {path}: {err}. The file is corrupt or truncated; re-extract it from the archive."
        ) from err


def _bad_label_ids(ids: np.ndarray) -> list[int]:
    """Values of a labelIds array that are neither 0..33 nor the license plate (-1, or 255 in 8 bits)."""
    if ids.dtype == np.uint8:
        counts = np.bincount(ids.ravel(), minlength=256)
        counts[:NUM_LABEL_IDS] = 0
        counts[LICENSE_PLATE_8BIT] = 0
        return np.flatnonzero(counts).tolist()
    values = np.unique(ids)
    return values[((values < 0) | (values >= NUM_LABEL_IDS)) & (values != -1) & (values != 255)].tolist()


class CityscapesDataset(Dataset):
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
        transform: Callable[..., dict[str, Any]] | None = None,
        with_masks: bool = True,
        with_boxes: bool = False,
        ids: Sequence[str] | None = None,
    ) -> None:
        if classes not in CLASS_NAMES:
            raise ValueError(f"classes must be one of {tuple(CLASS_NAMES)}, got {classes!r}.")
        if annotation not in ANNOTATION_DIRS:
            raise ValueError(f"annotation must be one of {tuple(ANNOTATION_DIRS)}, got {annotation!r}.")
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

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def num_classes(self) -> int:
        """Number of classes of the label mode."""
        return len(self.class_names)

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

    def _check_shape(
        self, path: Path, array: np.ndarray, image_shape: tuple[int, int], sample_id: str | int | None = None
    ) -> None:
        if array.shape != tuple(image_shape):
            if sample_id is not None:
                check_label_orientation(path, array.shape, self.image_path(sample_id), image_shape)
            raise DataFormatError(
                f"Label {path} is {array.shape[1]}x{array.shape[0]} (WxH) but its image is "
                f"{image_shape[1]}x{image_shape[0]}; labels must match their images pixel for pixel."
            )

    def load_label_ids(self, sample_id: str | int, image_shape: tuple[int, int]) -> np.ndarray:
        """Read and check the raw ``labelIds`` of a sample (values 0..33; license plate -1 allowed).

        Raises:
            DataFormatError: If the file is unreadable, of another size than the image, or holds
                values that are not Cityscapes label ids.

        """
        path = self.label_path(sample_id)
        ids = read_id_png(path, "labelIds")
        self._check_shape(path, ids, image_shape, sample_id)
        bad = _bad_label_ids(ids)
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

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The (H, W, 3) uint8 image and raw labelIds of a sample, before any mapping or transform."""
        image = read_image(self.image_path(index))
        return image, (self.load_label_ids(index, image.shape[:2]) if self.with_masks else None)

    def read_sample(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The (H, W, 3) uint8 image and mapped (H, W) uint8 mask of a sample, before any transform."""
        image = read_image(self.image_path(index))
        return image, (self.load_mask(index, image.shape[:2]) if self.with_masks else None)

    def _box_label(self, label_id: int) -> int | None:
        """Class index of a label id in the current mode, or ``None`` if the mode has no such object class."""
        index = int(self.lut[label_id])
        if index == IGNORE_INDEX or (self.classes == "objects11" and index == 0):
            return None
        return index

    def _instance_boxes(self, sample_id: str | int, image_shape: tuple[int, int]) -> list[BoxAnnotation]:
        path = self.label_path(sample_id, "instanceIds.png")
        ids = read_id_png(path, "instanceIds")
        self._check_shape(path, ids, image_shape, sample_id)
        ids = ids.astype(np.int32)
        bad = np.unique(ids[(ids < 0) | (ids >= NUM_LABEL_IDS * 1000) | ((ids >= NUM_LABEL_IDS) & (ids < 1000))])
        if bad.size:
            raise DataFormatError(
                f"{path} holds values {bad.tolist()[:10]}; Cityscapes instanceIds are labelId*1000+k for "
                f"instances and plain labelIds 0..{NUM_LABEL_IDS - 1} elsewhere."
            )
        boxes = []
        slices = ndimage.find_objects(np.where(ids >= 1000, ids, 0))
        for value, found in enumerate(slices, start=1):
            if found is None or value < 1000:
                continue
            label = self._box_label(value // 1000)
            if label is not None:
                rows, cols = found
                boxes.append(BoxAnnotation(label, cols.start, rows.start, cols.stop - 1, rows.stop - 1))
        return boxes

    def _polygon_boxes(self, sample_id: str | int, image_shape: tuple[int, int]) -> list[BoxAnnotation]:
        path = self.label_path(sample_id, "polygons.json")
        try:
            data = json.loads(path.read_text())
            height, width = int(data["imgHeight"]), int(data["imgWidth"])
            objects = data["objects"]
        except FileNotFoundError as err:
            raise DataFormatError(f"Cityscapes polygons file not found: {path}") from err
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataFormatError(
                f"Cannot read Cityscapes polygons {path}: {err!r}; expected JSON with imgHeight, imgWidth "
                "and a list of objects {label, polygon}."
            ) from err
        if (height, width) != tuple(image_shape):
            raise DataFormatError(
                f"{path} describes a {width}x{height} (WxH) image but its image is {image_shape[1]}x{image_shape[0]}."
            )
        boxes = []
        for number, obj in enumerate(objects):
            if obj.get("deleted") or obj.get("label") not in POLYGON_BOX_LABELS:
                continue
            label = self._box_label(NAME_TO_LABEL[obj["label"]].id)
            if label is None:
                continue
            try:
                points = np.asarray(obj["polygon"], dtype=np.float64).reshape(-1, 2)
            except (KeyError, ValueError, TypeError) as err:
                raise DataFormatError(f"{path}: object {number} ({obj['label']}) has no valid polygon.") from err
            if not len(points):
                continue
            xmin, ymin = (max(math.floor(v), 0) for v in points.min(axis=0))
            xmax = min(math.ceil(points[:, 0].max()), width - 1)
            ymax = min(math.ceil(points[:, 1].max()), height - 1)
            if xmin <= xmax and ymin <= ymax:  # drop polygons entirely outside the image
                boxes.append(BoxAnnotation(label, int(xmin), int(ymin), int(xmax), int(ymax)))
        return boxes

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

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.transform is None:
            raise ValueError("CityscapesDataset needs a transform to build samples; use read_sample for raw arrays.")
        image, mask = self.read_sample(index)
        boxes = None
        if self.with_boxes:
            boxes = box_mask(self.boxes(index, image.shape[:2]), self.num_classes, *image.shape[:2])
        return self.transform(image, mask, boxes, self.ids[index])


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
        if classes not in CLASS_NAMES:
            raise ValueError(f"classes must be 'trainid19' or 'objects11', got {classes!r}.")
        for key, value in (("annotation", annotation), ("eval_annotation", eval_annotation)):
            if value not in ANNOTATION_DIRS:
                raise ValueError(f"{key} must be 'fine' or 'coarse', got {value!r}.")
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

    def build_dataset(self, split: str, train: bool) -> Dataset:  # noqa: D102
        if split == "train":
            names: tuple[str, ...] = (self.splits["train"], *(("train_extra",) if self.use_train_extra else ()))
            annotation = self.annotation
        elif split in ("val", "test"):
            names, annotation = (self.splits[split],), self.eval_annotation
        elif split == "train_extra":
            names, annotation = (split,), "coarse"
        else:
            raise ValueError(f"Unknown split {split!r}; CityscapesDataModule serves train, val, test and train_extra.")
        return CityscapesDataset(self.root, names, self.classes, annotation, **self.sample_kwargs(train))
