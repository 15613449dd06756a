"""Reading and writing the PASCAL VOC on-disk format: palette PNG masks and XML annotations.

Input images are read by :func:`segmend.datamodules.image_io.read_image`; masks by
:func:`read_index_mask`, never through the image reader.

Facts the format relies on: masks are palette ('P') PNGs whose pixel values are class indices
(255 marks the unlabeled band); converting them to RGB destroys the indices. XML boxes are
1-based and inclusive; a ``person`` object may nest ``part`` boxes, which are not objects.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from segmend.datamodules.errors import DataFormatError
from segmend.datamodules.label_files import read_label_png


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The VOC colour map: (num_colors, 3) uint8, index bits spread over the RGB high bits."""
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (r, g, b)
    return palette


@dataclass(frozen=True)
class BoxAnnotation:
    """One object box in 0-based inclusive pixel coordinates."""

    label: int
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    difficult: bool = False


def read_index_mask(path: Path) -> np.ndarray:
    """A label PNG's class indices, without palette expansion; a colour or unreadable file raises DataFormatError."""
    return read_label_png(path)


def write_palette_mask(path: Path, mask: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write (H, W) uint8 class indices as a VOC palette PNG."""
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette((voc_palette() if palette is None else palette).astype(np.uint8).ravel().tolist())
    img.save(path)


def parse_voc_xml(path: Path, class_names: Sequence[str], keep_difficult: bool = True) -> list[BoxAnnotation]:
    """Read the object boxes of a VOC ``Annotations/*.xml`` file.

    Args:
        path: The XML file.
        class_names: Class names by index (index 0 is background and never a box).
        keep_difficult: Keep objects flagged ``difficult``.

    Returns:
        Boxes converted to 0-based inclusive coordinates; nested ``part`` boxes are skipped.

    Raises:
        DataFormatError: If the file is unreadable or names an unknown class.

    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise DataFormatError(f"Cannot parse VOC annotation {path}: {err}") from err
    index = {name: i for i, name in enumerate(class_names)}
    boxes = []
    for obj in root.findall("object"):  # direct children only: parts are nested deeper
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            raise DataFormatError(
                f"{path}: object class {name!r} is not one of the dataset's classes {list(class_names)}."
            )
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        if difficult and not keep_difficult:
            continue
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DataFormatError(f"{path}: object {name!r} has no <bndbox>.")
        coords = [int(round(float(bndbox.findtext(k, "nan")))) - 1 for k in ("xmin", "ymin", "xmax", "ymax")]
        boxes.append(BoxAnnotation(index[name], *coords, difficult=difficult))
    return boxes


def write_voc_xml(
    path: Path,
    filename: str,
    size: tuple[int, int],
    boxes: Sequence[BoxAnnotation],
    class_names: Sequence[str],
) -> None:
    """Write a VOC annotation file; boxes are given 0-based and stored 1-based.

    Args:
        path: Output XML file.
        filename: Image file name recorded in the annotation.
        size: Image (height, width).
        boxes: Object boxes in 0-based inclusive coordinates.
        class_names: Class names by index.

    """
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2012"
    ET.SubElement(root, "filename").text = filename
    size_el = ET.SubElement(root, "size")
    for key, value in (("width", size[1]), ("height", size[0]), ("depth", 3)):
        ET.SubElement(size_el, key).text = str(value)
    ET.SubElement(root, "segmented").text = "1"
    for box in boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = class_names[box.label]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "1" if box.difficult else "0"
        bndbox = ET.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (box.xmin, box.ymin, box.xmax, box.ymax), strict=False):
            ET.SubElement(bndbox, key).text = str(value + 1)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8")


def box_mask(boxes: Sequence[BoxAnnotation], num_classes: int, height: int, width: int) -> np.ndarray:
    """Render boxes as a (num_classes, H, W) uint8 box mask.

    Channel ``c > 0`` is 1 inside every box of class ``c`` (overlapping boxes of different
    classes set several channels); channel 0 (background) is 1 where no box covers the pixel.
    """
    out = np.zeros((num_classes, height, width), dtype=np.uint8)
    for box in boxes:
        out[box.label, max(box.ymin, 0) : box.ymax + 1, max(box.xmin, 0) : box.xmax + 1] = 1
    out[0] = out[1:].max(axis=0) == 0
    return out


def region_boxes(regions: np.ndarray, max_label: int | None = None) -> dict[int, tuple[int, int, int, int]]:
    """The box ``(xmin, ymin, xmax, ymax)``, 0-based inclusive, of each positive value of an integer map, by value."""
    found = ndimage.find_objects(regions, max_label=max_label or 0)  # None for values absent from the map
    return {v: (sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1) for v, sl in enumerate(found, 1) if sl}
