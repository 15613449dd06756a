"""The built-in synthetic dataset, written once in the PASCAL VOC layout and read back by the VOC reader.

Layout of the cache folder (one per set of generation parameters)::

    JPEGImages/<id>.jpg  SegmentationClass/<id>.png  SegmentationClassCoarse/<id>.png
    Annotations/<id>.xml  ImageSets/Segmentation/{train,val,trainval,wild,wild_ood}.txt
    wild.json (domain and nuisances of each wild image)  segmend_synthetic.json (parameters)

``wild`` is a shifted split for troubleshooting (unseen colours, extreme scales, clutter, low
contrast, and out-of-domain images with no known class); its masks are the hidden ground truth.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from segmend.datamodules import synthetic_scenes
from segmend.datamodules.base import SegmentationDataModule
from segmend.datamodules.synthetic_scenes import CLASS_NAMES, render_scene, scene_rng
from segmend.datamodules.voc_format import BoxAnnotation, write_palette_mask, write_voc_xml
from segmend.datamodules.voc_reader import VOCSegmentationDataset

GENERATOR_VERSION = 1
MARKER = "segmend_synthetic.json"


def generator_fingerprint() -> str:
    """Hash of the scene generator's source, so a changed generator never reuses a stale cache."""
    source = Path(synthetic_scenes.__file__).read_bytes()
    return f"{GENERATOR_VERSION}-{hashlib.sha1(source).hexdigest()[:12]}"


def default_cache_dir() -> Path:
    """``$SEGMEND_CACHE`` or ``~/.cache/segmend``."""
    return Path(os.environ.get("SEGMEND_CACHE", Path.home() / ".cache" / "segmend"))


def jitter_box(
    box: tuple[int, int, int, int], jitter: float, rng: np.random.Generator, size: int
) -> tuple[int, int, int, int]:
    """An annotator's imprecise box: each side moved by N(0, ``jitter`` x the box's side), kept in the image.

    Args:
        box: (xmin, ymin, xmax, ymax), 0-based inclusive.
        jitter: Standard deviation of each side's shift, as a fraction of the box's width (x) or height (y).
        rng: The random stream of the box.
        size: Image side; the box is clipped to it and kept at least one pixel wide and high.

    """
    xmin, ymin, xmax, ymax = box
    width, height = xmax - xmin + 1, ymax - ymin + 1
    shifts = rng.normal(0.0, jitter, 4) * np.array([width, height, width, height])
    x0, y0, x1, y1 = (int(round(v + d)) for v, d in zip(box, shifts, strict=True))
    x0, y0 = min(max(x0, 0), size - 1), min(max(y0, 0), size - 1)
    return x0, y0, min(max(x1, x0), size - 1), min(max(y1, y0), size - 1)


def _write_sample(root: Path, sample_id: str, scene: Any, box_jitter: float = 0.0, seed: int = 0) -> None:
    Image.fromarray(scene.image).save(root / "JPEGImages" / f"{sample_id}.jpg", quality=95)
    write_palette_mask(root / "SegmentationClass" / f"{sample_id}.png", scene.mask)
    write_palette_mask(root / "SegmentationClassCoarse" / f"{sample_id}.png", scene.coarse)
    boxes = [BoxAnnotation(inst.label, *inst.box) for inst in scene.instances]
    if box_jitter > 0:  # a stream of its own, so the scenes are those of the unjittered dataset
        rng = np.random.default_rng([int(seed), zlib.crc32(f"box_jitter/{sample_id}".encode())])
        size = scene.mask.shape[0]
        tight = [(b.label, (b.xmin, b.ymin, b.xmax, b.ymax)) for b in boxes]
        boxes = [BoxAnnotation(label, *jitter_box(box, box_jitter, rng, size)) for label, box in tight]
    write_voc_xml(
        root / "Annotations" / f"{sample_id}.xml",
        f"{sample_id}.jpg",
        scene.mask.shape,
        boxes,
        CLASS_NAMES,
    )


def generate_synthetic_voc(
    root: Path,
    seed: int,
    num_train: int,
    num_val: int,
    num_wild: int,
    ood_fraction: float,
    image_size: int,
    box_jitter: float = 0.0,
) -> None:
    """Render every split of the synthetic dataset into ``root`` in the VOC layout.

    ``box_jitter`` > 0 writes jittered boxes (see :func:`jitter_box`) to ``Annotations``; the images
    and masks are the same as without it.

    Writes into a temporary sibling folder and renames it at the end, so an interrupted run
    never leaves a half-written dataset behind.
    """
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in (
        "JPEGImages",
        "SegmentationClass",
        "SegmentationClassCoarse",
        "Annotations",
        "ImageSets/Segmentation",
    ):
        (tmp / sub).mkdir(parents=True)
    lists: dict[str, list[str]] = {"train": [], "val": [], "wild": [], "wild_ood": []}
    wild_meta: dict[str, dict[str, Any]] = {}
    num_ood = int(round(num_wild * ood_fraction))
    plan = [("train", i, "train") for i in range(num_train)]
    plan += [("val", i, "train") for i in range(num_val)]
    plan += [("wild", i, "ood" if i >= num_wild - num_ood else "wild") for i in range(num_wild)]
    for split, index, domain in plan:
        sample_id = f"{split}_{index:05d}"
        scene = render_scene(scene_rng(seed, split, index), image_size, domain)
        _write_sample(tmp, sample_id, scene, box_jitter, seed)
        lists[split].append(sample_id)
        if split == "wild":
            wild_meta[sample_id] = {"domain": domain, "nuisances": list(scene.nuisances)}
            if domain == "ood":
                lists["wild_ood"].append(sample_id)
    lists["trainval"] = lists["train"] + lists["val"]
    for split, ids in lists.items():
        (tmp / "ImageSets/Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    (tmp / "wild.json").write_text(json.dumps(wild_meta, indent=1))
    params = {
        "generator": generator_fingerprint(),
        "seed": seed,
        "num_train": num_train,
        "num_val": num_val,
        "num_wild": num_wild,
        "ood_fraction": ood_fraction,
        "image_size": image_size,
        "classes": list(CLASS_NAMES),
    }
    if box_jitter > 0:
        params["box_jitter"] = box_jitter
    (tmp / MARKER).write_text(json.dumps(params, indent=1))
    try:
        tmp.rename(root)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)


class SyntheticDataModule(SegmentationDataModule):
    """Seeded procedural scenes with fine, coarse and box labels and a shifted "wild" split.

    The data is generated on first use into ``cache_dir`` (a sub-folder per parameter set) and
    always read back through :class:`VOCSegmentationDataset`, so runs on it exercise the real
    reader path. Validation and test use the fine masks of the ``val`` split.

    Args:
        cache_dir: Where to write the dataset; ``None`` uses ``$SEGMEND_CACHE`` or
            ``~/.cache/segmend``.
        seed: Generation seed; the same seed always gives the same images.
        num_train: Images in the training split.
        num_val: Images in the validation split (also served as ``test``).
        num_wild: Images in the shifted ``wild`` split.
        ood_fraction: Fraction of ``wild`` images that hold no known class.
        image_size: Side of the square images.
        labels: Training labels: ``"fine"`` masks or simulated ``"coarse"`` annotation.
        crop_size: Side of the training crop; ``None`` crops at ``image_size`` (the scenes' own
            size, so the crop is the whole image at scale 1). A crop larger than the scaled image
            is padded with the ignore label.
        scale_range: Training random rescale range. The defaults (``image_size`` crops, scales
            0.75-1.25, as in the shipped synthetic configs) pad about a tenth of a crop on average;
            the base class's 512 crops of scales 0.5-2.0 are sized for VOC / ADE20K photographs.
        box_jitter: Opt-in: move each side of every written box by N(0, ``box_jitter`` x the box's
            width or height), like an imprecise annotator (see :func:`jitter_box`); 0 (the default)
            writes the tight boxes of the visible pixels. Images and masks do not change.
        **kwargs: Loader and augmentation settings of :class:`SegmentationDataModule`.

    """

    class_names = CLASS_NAMES

    def __init__(
        self,
        cache_dir: str | None = None,
        seed: int = 0,
        num_train: int = 400,
        num_val: int = 100,
        num_wild: int = 100,
        ood_fraction: float = 0.1,
        image_size: int = 128,
        labels: Literal["fine", "coarse"] = "fine",
        crop_size: int | None = None,
        scale_range: tuple[float, float] = (0.75, 1.25),
        box_jitter: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(crop_size=image_size if crop_size is None else crop_size, scale_range=scale_range, **kwargs)
        if min(num_train, num_val) < 1 or num_wild < 0:
            raise ValueError(
                f"num_train and num_val must be >= 1 and num_wild >= 0; got {num_train}, {num_val}, {num_wild}."
            )
        self.params = dict(
            seed=seed,
            num_train=num_train,
            num_val=num_val,
            num_wild=num_wild,
            ood_fraction=ood_fraction,
            image_size=image_size,
        )
        if box_jitter < 0:
            raise ValueError(f"box_jitter must be >= 0, got {box_jitter}.")
        if box_jitter > 0:  # only then part of the cache key: the default keeps today's folders
            self.params["box_jitter"] = box_jitter
        self.labels = labels
        self.image_size = image_size
        key = hashlib.sha1(json.dumps([generator_fingerprint(), self.params], sort_keys=True).encode())
        self.root = Path(cache_dir or default_cache_dir()) / f"synthetic-{key.hexdigest()[:10]}"

    def prepare_data(self) -> None:
        """Generate the dataset unless this parameter set is already cached."""
        if not (self.root / MARKER).is_file():
            self.root.parent.mkdir(parents=True, exist_ok=True)
            generate_synthetic_voc(self.root, **self.params)

    def build_dataset(self, split: str, train: bool) -> Dataset:  # noqa: D102
        self.prepare_data()  # no-op when cached; covers use without a Trainer
        split = "val" if split == "test" else split
        return VOCSegmentationDataset(
            self.root, split, self.class_names, mask_dir=self.mask_dir(split), **self.sample_kwargs(train)
        )

    def mask_dir(self, split: str) -> str:
        """The mask folder of ``split``: the simulated coarse masks for ``train`` with ``labels: coarse``."""
        return "SegmentationClassCoarse" if split == "train" and self.labels == "coarse" else "SegmentationClass"

    def wild_metadata(self) -> dict[str, dict[str, Any]]:
        """Domain (``wild`` or ``ood``) and nuisances of each image of the wild split."""
        self.prepare_data()
        return json.loads((self.root / "wild.json").read_text())
