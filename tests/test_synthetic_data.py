"""SyntheticDataModule: VOC layout on disk, read back through the VOC reader, seeded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segmend.datamodules import SyntheticDataModule
from segmend.datamodules.synthetic_scenes import CLASS_NAMES, render_scene, scene_rng
from segmend.datamodules.voc_format import parse_voc_xml
from tests.fixtures.data import TINY_SYNTHETIC


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_written_in_voc_layout(tiny_synthetic: SyntheticDataModule):
    tiny_synthetic.prepare_data()
    root = tiny_synthetic.root
    lists = {
        s: (root / "ImageSets/Segmentation" / f"{s}.txt").read_text().split()
        for s in ("train", "val", "trainval", "wild", "wild_ood")
    }
    assert len(lists["train"]) == 8 and len(lists["val"]) == 4 and len(lists["wild"]) == 4
    assert lists["trainval"] == lists["train"] + lists["val"]
    sample = lists["train"][0]
    assert (root / "JPEGImages" / f"{sample}.jpg").is_file()
    with Image.open(root / "SegmentationClass" / f"{sample}.png") as mask:
        assert mask.mode == "P"
    with Image.open(root / "SegmentationClassCoarse" / f"{sample}.png") as coarse:
        assert coarse.mode == "P"
    boxes = parse_voc_xml(root / "Annotations" / f"{sample}.xml", CLASS_NAMES)
    scene = render_scene(scene_rng(0, "train", 0), 64, "train")
    assert [(b.label, b.xmin, b.ymin, b.xmax, b.ymax) for b in boxes] == [(i.label, *i.box) for i in scene.instances]


def test_masks_read_back_equal_the_generated_scene(tiny_synthetic: SyntheticDataModule):
    tiny_synthetic.setup("fit")
    dataset = tiny_synthetic.dataset("val")
    sample = dataset[1]
    scene = render_scene(scene_rng(0, "val", 1), 64, "train")
    assert sample["id"] == "val_00001"
    assert torch.equal(sample["mask"], torch.from_numpy(scene.mask).long())


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path):
    small = {**TINY_SYNTHETIC, "num_train": 3, "num_val": 2, "num_wild": 2}
    a = SyntheticDataModule(cache_dir=str(tmp_path / "a"), seed=5, **small)
    b = SyntheticDataModule(cache_dir=str(tmp_path / "b"), seed=5, **small)
    c = SyntheticDataModule(cache_dir=str(tmp_path / "c"), seed=6, **small)
    for dm in (a, b, c):
        dm.prepare_data()
    assert tree_digest(a.root) == tree_digest(b.root)
    assert tree_digest(a.root) != tree_digest(c.root)


def test_coarse_labels_train_and_fine_labels_validate(data_cache: Path):
    fine = SyntheticDataModule(cache_dir=str(data_cache), **TINY_SYNTHETIC)
    coarse = SyntheticDataModule(cache_dir=str(data_cache), labels="coarse", **TINY_SYNTHETIC)
    assert fine.root == coarse.root  # one cached copy serves both
    fine_train = fine.dataset("train").load_mask("train_00000", (64, 64))
    coarse_train = coarse.dataset("train").load_mask("train_00000", (64, 64))
    assert (coarse_train == 255).any() and not (fine_train == 255).any()
    assert np.array_equal(fine.dataset("val")[0]["mask"], coarse.dataset("val")[0]["mask"])


def test_wild_split_has_nuisances_and_out_of_domain_images(tiny_synthetic: SyntheticDataModule):
    meta = tiny_synthetic.wild_metadata()
    assert len(meta) == 4
    domains = {m["domain"] for m in meta.values()}
    assert "wild" in domains
    for _sample_id, info in meta.items():
        if info["domain"] == "wild":
            assert info["nuisances"]
    dataset = tiny_synthetic.dataset("wild")
    ood = [i for i, sid in enumerate(dataset.ids) if meta[sid]["domain"] == "ood"]
    for index in ood:
        assert (dataset[index]["mask"] == 0).all()


def test_batches_follow_the_contract_with_boxes(data_cache: Path):
    dm = SyntheticDataModule(cache_dir=str(data_cache), with_boxes=True, **TINY_SYNTHETIC)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 64, 64) and batch["mask"].dtype == torch.long
    assert batch["has_mask"].dtype == torch.bool and bool(batch["has_mask"].all())
    assert len(batch["id"]) == 4
    boxes = batch["boxes"]
    assert boxes.shape == (4, 6, 64, 64)
    covered = boxes[:, 1:].amax(1)
    inside = batch["mask"] != 255  # padded pixels carry no box at all
    assert torch.equal(boxes[:, 0][inside], (1 - covered)[inside])
    objects = (batch["mask"] > 0) & inside
    assert bool((covered[objects] == 1).all())  # every object pixel lies in a box


def test_default_crop_is_the_scene_size_with_little_padding(data_cache: Path):
    from segmend.datamodules import SemiSupervisedSyntheticDataModule

    # every argument of the crop at its Python default (the base class alone would crop 512 px)
    datamodule = SyntheticDataModule(cache_dir=str(data_cache), num_train=8, num_val=2, num_wild=0)
    image_size = datamodule.params["image_size"]
    assert datamodule.crop_size == image_size == 128
    train = datamodule.dataset("train", train=True)
    padded = []
    for _ in range(5):  # 40 random scale-and-crop draws
        for index in range(len(train)):
            sample = train[index]
            assert tuple(sample["image"].shape[-2:]) == (image_size, image_size)
            padded.append((sample["mask"] == 255).float().mean().item())
    # scales 0.75-1.25 pad only the crops of downscaled images: 11% on average in expectation
    assert float(np.mean(padded)) < 0.2 and max(padded) < 0.5
    eval_masks = datamodule.dataset("train", train=False)  # the scenes' masks have no ignore label: all 255 is padding
    assert all(not bool((eval_masks[i]["mask"] == 255).any()) for i in range(len(eval_masks)))

    assert SyntheticDataModule(cache_dir=str(data_cache), image_size=64).crop_size == 64
    assert SyntheticDataModule(cache_dir=str(data_cache), crop_size=96).crop_size == 96
    semisup = SemiSupervisedSyntheticDataModule(cache_dir=str(data_cache), image_size=64, num_train=8, num_full=4)
    assert semisup.crop_size == 64
