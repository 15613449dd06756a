"""Seeded writer of tiny Cityscapes trees in exactly the distributed layout and formats.

Label images are rendered from the objects' polygons the way cityscapesScripts' ``json2labelImg``
and ``json2instanceImg`` do: objects are drawn in order (later ones occlude earlier ones), a
``...group`` label is the crowd form of an instance class (its plain label id, no instance),
labels with a negative id (license plate) are not drawn, and instances of a class are numbered
``labelId * 1000 + k`` with k counting from 0 per image. labelIds are 'L' PNGs, instanceIds 16-bit
PNGs, colour images RGBA PNGs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from segmend.datamodules.cityscapes import NAME_TO_LABEL

SIZE = (32, 64)  # (H, W)
CITIES = {
    "train": ("aachen", "bochum"),
    "val": ("frankfurt", "lindau"),
    "test": ("berlin", "bielefeld"),
    "train_extra": ("augsburg", "bad-honnef"),
}
IMAGES_PER_CITY = (2, 1)
FOLDERS = {
    "train": ("gtFine", "gtCoarse"),
    "val": ("gtFine", "gtCoarse"),
    "test": ("gtFine",),
    "train_extra": ("gtCoarse",),
}


def rect(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    """A rectangle polygon; drawn, it covers x0..x1 and y0..y1 inclusive."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _resolve(name: str):
    if name not in NAME_TO_LABEL and name.endswith("group") and name[: -len("group")] in NAME_TO_LABEL:
        return NAME_TO_LABEL[name[: -len("group")]], True
    return NAME_TO_LABEL[name], False


def render(objects: list[dict], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw labelIds (uint8), instanceIds (uint16) and colour (RGBA) images from polygon objects."""
    height, width = size
    label_img = Image.new("L", (width, height), 0)
    inst_img = Image.new("I", (width, height), 0)
    color_img = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    counts: dict[str, int] = {}
    for obj in objects:
        if obj.get("deleted"):
            continue
        label, is_group = _resolve(obj["label"])
        if label.id < 0:
            continue
        polygon = [tuple(p) for p in obj["polygon"]]
        inst_id = label.id
        if label.has_instances and not is_group:
            inst_id = label.id * 1000 + counts.get(label.name, 0)
            counts[label.name] = counts.get(label.name, 0) + 1
        ImageDraw.Draw(label_img).polygon(polygon, fill=label.id)
        ImageDraw.Draw(inst_img).polygon(polygon, fill=inst_id)
        ImageDraw.Draw(color_img).polygon(polygon, fill=(*label.color, 255))
    return np.asarray(label_img), np.asarray(inst_img).astype(np.uint16), np.asarray(color_img)


def write_annotation(root: Path, folder: str, split: str, city: str, stem: str, objects: list[dict], size) -> None:
    """Write ``<stem>_<folder>_{labelIds,instanceIds,color}.png`` and ``_polygons.json``."""
    out = root / folder / split / city
    out.mkdir(parents=True, exist_ok=True)
    labels, instances, color = render(objects, size)
    Image.fromarray(labels, mode="L").save(out / f"{stem}_{folder}_labelIds.png")
    Image.fromarray(instances).save(out / f"{stem}_{folder}_instanceIds.png")  # 16-bit ('I;16')
    Image.fromarray(color, mode="RGBA").save(out / f"{stem}_{folder}_color.png")
    polygons = {"imgHeight": size[0], "imgWidth": size[1], "objects": objects}
    (out / f"{stem}_{folder}_polygons.json").write_text(json.dumps(polygons, indent=1))


def write_image(root: Path, split: str, city: str, stem: str, image: np.ndarray) -> Path:
    """Write ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` (RGB)."""
    out = root / "leftImg8bit" / split / city
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}_leftImg8bit.png"
    Image.fromarray(image, mode="RGB").save(path)
    return path


def scene_image(objects: list[dict], size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An RGB image: the label colours plus noise."""
    color = render(objects, size)[2][..., :3].astype(np.int16)
    return np.clip(color + rng.integers(-20, 21, color.shape), 0, 255).astype(np.uint8)


def random_scene(rng: np.random.Generator, size: tuple[int, int] = SIZE) -> list[dict]:
    """Polygon objects of a street-like scene: stuff, instances, crowds, poles, signs, void."""
    height, width = size
    horizon = int(rng.integers(height // 3, height // 2))

    def box(w: int, h: int, y_low: int, y_high: int) -> list[list[int]]:
        x0 = int(rng.integers(-w // 2, width - w // 2))
        y0 = int(rng.integers(y_low, y_high))
        return rect(x0, y0, x0 + w, y0 + h)

    objects = [
        {"label": "sky", "polygon": rect(0, 0, width - 1, horizon)},
        {"label": "building", "polygon": rect(0, 2, int(rng.integers(8, width // 2)), horizon + 2)},
        {"label": "vegetation", "polygon": box(10, 6, 0, horizon)},
        {"label": "road", "polygon": rect(0, horizon + 1, width - 1, height - 1)},
        {"label": "sidewalk", "polygon": rect(0, horizon + 1, width - 1, horizon + 4)},
        {"label": "parking", "polygon": box(8, 3, horizon + 2, height - 6)},
    ]
    for _ in range(int(rng.integers(1, 4))):
        objects.append({"label": "car", "polygon": box(int(rng.integers(8, 16)), 6, horizon - 2, height - 8)})
    objects.append(
        {"label": str(rng.choice(["truck", "bus", "caravan"])), "polygon": box(12, 8, horizon - 4, height - 10)}
    )
    objects.append({"label": "cargroup", "polygon": box(10, 5, horizon - 2, height - 8)})
    for _ in range(int(rng.integers(1, 3))):
        objects.append({"label": "person", "polygon": box(3, 10, horizon - 6, height - 12)})
    objects.append({"label": "rider", "polygon": box(3, 8, horizon - 6, height - 12)})
    objects.append({"label": "bicycle", "polygon": box(5, 4, horizon, height - 6)})
    objects.append({"label": "persongroup", "polygon": box(6, 8, horizon - 6, height - 10)})
    objects.append({"label": "license plate", "polygon": box(3, 1, horizon + 2, height - 4)})
    objects.append({"label": "pole", "polygon": box(1, height, -8, 2)})
    objects.append({"label": "polegroup", "polygon": box(3, 12, 0, horizon)})
    objects.append({"label": "traffic sign", "polygon": box(4, 3, 0, horizon)})
    objects.append({"label": "traffic light", "polygon": box(2, 5, 0, horizon)})
    objects.append({"label": "ego vehicle", "polygon": rect(0, height - 3, width - 1, height - 1)})
    return objects


def coarsen(objects: list[dict], rng: np.random.Generator) -> list[dict]:
    """Coarse annotation: shrunk polygons of a random subset of objects, gaps left unlabeled (0)."""
    coarse = []
    for obj in objects:
        if obj["label"] in ("ego vehicle", "license plate") or rng.random() < 0.25:
            continue
        pts = np.asarray(obj["polygon"])
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        dx, dy = min(2, (x1 - x0) // 3), min(2, (y1 - y0) // 3)
        coarse.append({"label": obj["label"], "polygon": rect(int(x0 + dx), int(y0 + dy), int(x1 - dx), int(y1 - dy))})
    return coarse


def make_cityscapes(root: Path, seed: int = 0, size: tuple[int, int] = SIZE) -> Path:
    """Write a tiny Cityscapes tree (2 cities x 3 images per split, fine and coarse labels).

    Returns:
        ``root``.

    """
    rng = np.random.default_rng(seed)
    for split, cities in CITIES.items():
        for city, count in zip(cities, IMAGES_PER_CITY, strict=True):
            for i in range(count):
                stem = f"{city}_{i:06d}_{int(rng.integers(0, 1_000_000)):06d}"
                objects = random_scene(rng, size)
                write_image(root, split, city, stem, scene_image(objects, size, rng))
                for folder in FOLDERS[split]:
                    labels = objects if folder == "gtFine" else coarsen(objects, rng)
                    write_annotation(root, folder, split, city, stem, labels, size)
    return root
