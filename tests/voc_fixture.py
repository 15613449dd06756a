"""Seeded writer of a tiny PASCAL VOC 2012 devkit and SBD release in exactly their distributed layouts.

```
<base>/VOCdevkit/VOC2012/
  JPEGImages/<id>.jpg
  SegmentationClass/<id>.png              palette PNG, class indices, 255 band along object borders
  Annotations/<id>.xml                    1-based boxes; a person with nested <part> boxes; a difficult object
  ImageSets/Segmentation/{train,val,trainval}.txt
  SegmentationClassAug/<id>.png           only with aug_png=True: 'L' PNGs (one 'P'), SBD masks + VOC trainval
<base>/benchmark_RELEASE/dataset/
  img/<id>.jpg                            the same bytes as VOC's JPEGImages/<id>.jpg
  cls/<id>.mat                            struct GTcls {Boundaries (20x1 sparse cell), Segmentation, CategoriesPresent}
  inst/<id>.mat                           struct GTinst {Segmentation, Boundaries (Nx1 cell), Categories (Nx1)}
  train.txt  val.txt
```

Objects are axis-aligned rectangles in disjoint horizontal slots, so the box of an instance in
the SBD instance map is exactly its rectangle. SBD masks have no 255 band (as in the real SBD).
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image
from scipy import ndimage
from segmend.datamodules.voc import VOC_CLASSES
from segmend.datamodules.voc_format import write_palette_mask

SIZE = (48, 64)  # (H, W)

# ids and splits: overlaps between VOC and SBD as in the real data
VOC_TRAIN = ("2007_000032", "2007_000039", "2008_000002")
VOC_VAL = ("2007_000033", "2008_000003")
SBD_TRAIN = ("2008_000002", "2008_000003", "2008_000008", "2009_000012")  # 2008_000003 is VOC val
SBD_VAL = ("2007_000032", "2010_000015")
NO_XML = ("2010_000015",)  # boxes of this id come from SBD's inst/<id>.mat
ALL_IDS = tuple(sorted(set(VOC_TRAIN) | set(VOC_VAL) | set(SBD_TRAIN) | set(SBD_VAL)))
# hand-computed: (SBD train ∪ SBD val ∪ VOC train) − VOC val
TRAIN_AUG = ("2007_000032", "2007_000039", "2008_000002", "2008_000008", "2009_000012", "2010_000015")
P_MODE_AUG_ID = "2008_000008"  # the one SegmentationClassAug PNG saved as palette ('P')

CLS = {name: i for i, name in enumerate(VOC_CLASSES)}


@dataclass
class Obj:
    """One object: class, 0-based inclusive rectangle, VOC flags, nested parts (0-based boxes)."""

    label: int
    x0: int
    y0: int
    x1: int
    y1: int
    difficult: bool = False
    parts: list[tuple[str, tuple[int, int, int, int]]] = field(default_factory=list)


# hand-made objects of two ids the tests check box by box
FIXED: dict[str, list[Obj]] = {
    "2007_000032": [
        Obj(CLS["person"], 10, 5, 19, 39, parts=[("head", (12, 5, 17, 11)), ("hand", (10, 20, 13, 24))]),
        Obj(CLS["bottle"], 40, 20, 54, 34, difficult=True),
    ],
    "2010_000015": [Obj(CLS["dog"], 3, 10, 18, 30), Obj(CLS["car"], 25, 2, 41, 20), Obj(CLS["dog"], 46, 30, 60, 44)],
}


@dataclass
class VOCSBDTree:
    """Paths of a generated tree and the objects of every image."""

    base: Path
    voc_root: Path
    sbd_root: Path
    objects: dict[str, list[Obj]]


def _random_objects(rng: np.random.Generator) -> list[Obj]:
    objects = []
    for slot in range(int(rng.integers(1, 4))):
        x0 = slot * 21 + int(rng.integers(0, 4))
        x1 = x0 + int(rng.integers(8, 16))
        y0 = int(rng.integers(0, 20))
        y1 = y0 + int(rng.integers(8, 26))
        objects.append(Obj(int(rng.integers(1, 21)), x0, y0, x1, min(y1, SIZE[0] - 1)))
    return objects


def render(objects: list[Obj]) -> tuple[np.ndarray, np.ndarray]:
    """Class map (uint8, no band) and instance map (instance k = value k) of ``objects``."""
    cls = np.zeros(SIZE, np.uint8)
    inst = np.zeros(SIZE, np.uint8)
    for number, obj in enumerate(objects, start=1):
        cls[obj.y0 : obj.y1 + 1, obj.x0 : obj.x1 + 1] = obj.label
        inst[obj.y0 : obj.y1 + 1, obj.x0 : obj.x1 + 1] = number
    return cls, inst


def voc_mask(cls: np.ndarray, inst: np.ndarray) -> np.ndarray:
    """VOC's version of a class map: a 255 band over every object border (1 px inside and outside)."""
    mask = cls.copy()
    for number in range(1, int(inst.max()) + 1):
        region = inst == number
        band = ndimage.binary_dilation(region) & ~ndimage.binary_erosion(region)
        mask[band] = 255
    return mask


def _boundaries(regions: list[np.ndarray]) -> np.ndarray:
    """A MATLAB cell (N x 1 object array) of sparse logical boundary maps, as SBD stores them."""
    cell = np.empty((len(regions), 1), dtype=object)
    for i, region in enumerate(regions):
        cell[i, 0] = scipy.sparse.csc_matrix(region & ~ndimage.binary_erosion(region))
    return cell


def write_sbd_mats(sbd_root: Path, sample_id: str, cls: np.ndarray, inst: np.ndarray, categories: list[int]) -> None:
    """Write ``cls/<id>.mat`` and ``inst/<id>.mat`` with the structs (and field order) of the SBD release."""
    present = sorted(set(np.unique(cls).tolist()) - {0})
    scipy.io.savemat(
        sbd_root / "cls" / f"{sample_id}.mat",
        {
            "GTcls": {
                "Boundaries": _boundaries([cls == c for c in range(1, 21)]),
                "Segmentation": cls,
                "CategoriesPresent": np.asarray(present, np.uint8).reshape(-1, 1),
            }
        },
    )
    scipy.io.savemat(
        sbd_root / "inst" / f"{sample_id}.mat",
        {
            "GTinst": {
                "Segmentation": inst,
                "Boundaries": _boundaries([inst == k for k in range(1, len(categories) + 1)]),
                "Categories": np.asarray(categories, np.uint8).reshape(-1, 1),
            }
        },
    )


def write_xml(path: Path, sample_id: str, objects: list[Obj]) -> None:
    """A VOC2012 annotation file; boxes 1-based; a person's <part> boxes nested in its object.

    The first part of an object is written before its own <bndbox> (a parser iterating over all
    <bndbox> elements would take the part's box), the others after it, as in VOC.
    """
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2012"
    ET.SubElement(root, "filename").text = f"{sample_id}.jpg"
    source = ET.SubElement(root, "source")
    for key, value in (("database", "The VOC2008 Database"), ("annotation", "PASCAL VOC2008"), ("image", "flickr")):
        ET.SubElement(source, key).text = value
    size = ET.SubElement(root, "size")
    for key, value in (("width", SIZE[1]), ("height", SIZE[0]), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "segmented").text = "1"

    def bndbox(parent: ET.Element, box: tuple[int, int, int, int]) -> None:
        element = ET.SubElement(parent, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
            ET.SubElement(element, key).text = str(value + 1)

    def part(parent: ET.Element, name: str, box: tuple[int, int, int, int]) -> None:
        element = ET.SubElement(parent, "part")
        ET.SubElement(element, "name").text = name
        bndbox(element, box)

    for obj in objects:
        element = ET.SubElement(root, "object")
        ET.SubElement(element, "name").text = VOC_CLASSES[obj.label]
        ET.SubElement(element, "pose").text = "Unspecified"
        ET.SubElement(element, "truncated").text = "0"
        ET.SubElement(element, "difficult").text = "1" if obj.difficult else "0"
        for name, box in obj.parts[:1]:
            part(element, name, box)
        bndbox(element, (obj.x0, obj.y0, obj.x1, obj.y1))
        for name, box in obj.parts[1:]:
            part(element, name, box)
    ET.indent(root, space="\t")
    ET.ElementTree(root).write(path)


def _image(rng: np.random.Generator, cls: np.ndarray) -> np.ndarray:
    colours = rng.integers(0, 256, (21, 3))
    noise = rng.integers(-20, 21, (*SIZE, 3))
    return np.clip(colours[cls] + noise, 0, 255).astype(np.uint8)


def make_voc_sbd(base: Path, seed: int = 0, aug_png: bool = False) -> VOCSBDTree:
    """Write the tiny VOC 2012 + SBD tree under ``base``; the same seed gives the same files.

    Args:
        base: Output folder (holds ``VOCdevkit`` and ``benchmark_RELEASE``).
        seed: Seed of images and random objects.
        aug_png: Also write ``VOC2012/SegmentationClassAug`` (SBD masks for SBD ids, VOC masks for
            the other VOC trainval ids), the pre-converted train_aug variant.

    """
    rng = np.random.default_rng(seed)
    voc = base / "VOCdevkit" / "VOC2012"
    sbd = base / "benchmark_RELEASE" / "dataset"
    for sub in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("img", "cls", "inst"):
        (sbd / sub).mkdir(parents=True, exist_ok=True)
    if aug_png:
        (voc / "SegmentationClassAug").mkdir(exist_ok=True)
    voc_ids = set(VOC_TRAIN) | set(VOC_VAL)
    sbd_ids = set(SBD_TRAIN) | set(SBD_VAL)
    objects: dict[str, list[Obj]] = {}
    for sample_id in ALL_IDS:
        objs = FIXED.get(sample_id) or _random_objects(rng)
        objects[sample_id] = objs
        cls, inst = render(objs)
        Image.fromarray(_image(rng, cls)).save(voc / "JPEGImages" / f"{sample_id}.jpg", quality=90)
        if sample_id not in NO_XML:
            write_xml(voc / "Annotations" / f"{sample_id}.xml", sample_id, objs)
        if sample_id in voc_ids:
            write_palette_mask(voc / "SegmentationClass" / f"{sample_id}.png", voc_mask(cls, inst))
        if sample_id in sbd_ids:
            shutil.copyfile(voc / "JPEGImages" / f"{sample_id}.jpg", sbd / "img" / f"{sample_id}.jpg")
            write_sbd_mats(sbd, sample_id, cls, inst, [o.label for o in objs])
        if aug_png:
            aug = cls if sample_id in sbd_ids else voc_mask(cls, inst)
            path = voc / "SegmentationClassAug" / f"{sample_id}.png"
            if sample_id == P_MODE_AUG_ID:
                write_palette_mask(path, aug)
            else:
                Image.fromarray(aug, mode="L").save(path)
    lists = {"train": VOC_TRAIN, "val": VOC_VAL, "trainval": tuple(sorted(voc_ids))}
    for name, ids in lists.items():
        (voc / "ImageSets/Segmentation" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    (sbd / "train.txt").write_text("".join(f"{i}\n" for i in SBD_TRAIN))
    (sbd / "val.txt").write_text("".join(f"{i}\n" for i in SBD_VAL))
    return VOCSBDTree(base, voc, sbd, objects)
