"""Cityscapes' label format: the label table (from cityscapesScripts' ``labels.py``), its lookup tables, id PNGs.

``labelIds`` hold the 34 label ids 0..33, which are not the 19 training classes: :func:`label_lut`
maps ids to the class indices of a label mode (everything else void, 255). License plates have
id -1 and are never drawn (255 in an 8-bit file). ``instanceIds`` are 16-bit PNGs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image

from segmend.datamodules.errors import DataFormatError
from segmend.datamodules.label_files import IGNORE_INDEX, label_values, read_label_png

LabelMode = Literal["trainid19", "objects11"]
#: Classes without instance ids, whose boxes come from ``polygons.json``.
POLYGON_BOX_LABELS = ("pole", "traffic light", "traffic sign")
#: Modes of id PNGs: 8-bit labelIds, 16-bit instanceIds (opened as 'I;16*' or 'I' by Pillow).
ID_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I")
COLOUR_ADVICE = (
    "expected a greyscale PNG of Cityscapes ids ('L' labelIds, 16-bit instanceIds). The _color.png files are "
    "for viewing only; use the original _labelIds.png / _instanceIds.png from the dataset archive."
)
REEXTRACT = "The file is corrupt or truncated; re-extract it from the archive."


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


def bad_label_ids(ids: np.ndarray) -> list[int]:
    """Values of a labelIds array that are neither 0..33 nor the license plate (-1, or 255 in 8 bits)."""
    if ids.dtype == np.uint8:
        counts = np.bincount(ids.ravel(), minlength=256)
        counts[:NUM_LABEL_IDS] = 0
        counts[LICENSE_PLATE_8BIT] = 0
        return np.flatnonzero(counts).tolist()
    values = np.unique(ids)
    return values[((values < 0) | (values >= NUM_LABEL_IDS)) & (values != -1) & (values != 255)].tolist()


def ids_from_image(img: Image.Image, path: Path) -> np.ndarray:
    """Pixel values of an open Cityscapes id PNG as an integer array, without any conversion.

    ``labelIds`` are 8-bit ('L'); ``instanceIds`` are 16-bit, which Pillow opens as 'I;16' (recent
    versions) or 'I' (32-bit, older versions); both give the stored values (uint8, else int32).

    Raises:
        DataFormatError: If the image is a colour image or of another mode.

    """
    array = label_values(img, path, "Cityscapes ids file", COLOUR_ADVICE, ID_MODES)
    return array if array.dtype == np.uint8 else array.astype(np.int32)


def read_id_png(path: Path, what: str) -> np.ndarray:
    """Read a ``labelIds`` or ``instanceIds`` PNG (``what``, for messages) as :func:`ids_from_image` does.

    Raises:
        DataFormatError: If the file is missing, unreadable or of a wrong mode.

    """
    array = read_label_png(path, f"Cityscapes {what}", COLOUR_ADVICE, ID_MODES, decode_advice=REEXTRACT)
    return array if array.dtype == np.uint8 else array.astype(np.int32)


def read_polygon_boxes(path: Path, image_shape: tuple[int, int]) -> list[tuple[str, int, int, int, int]]:
    """Boxes of the :data:`POLYGON_BOX_LABELS` objects of a ``polygons.json``: ``(label, xmin, ymin, xmax, ymax)``.

    Each box is its polygon's bounding box clipped to the image, 0-based inclusive; deleted objects
    and polygons entirely outside the image give none.

    Raises:
        DataFormatError: If the file is missing or not such JSON, describes an image of another
            size, or an object has no valid polygon.

    """
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
            boxes.append((obj["label"], int(xmin), int(ymin), int(xmax), int(ymax)))
    return boxes
