"""The F/W semi-supervised split and SemiSupervisedVOCDataModule (W masks are never read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from segmend.datamodules.semisup import SemiSupervisedVOCDataModule, split_fully_and_weakly_supervised
from segmend.datamodules.voc_format import DataFormatError, box_mask
from tests.fixtures.batches import train_batches
from tests.fixtures.voc import TRAIN_AUG, VOC_TRAIN, VOCSBDTree, make_voc_sbd

# id lists of the real sizes: VOC train (1464) inside train_aug (10582)
VOC_TRAIN_IDS = [f"2007_{i:06d}" for i in range(1464)]
TRAIN_AUG_IDS = VOC_TRAIN_IDS + [f"2011_{i:06d}" for i in range(10582 - 1464)]


@pytest.mark.parametrize("num_full", [200, 400, 800, 1464])
def test_split_sizes_and_structure(num_full: int):
    full, weak, half = split_fully_and_weakly_supervised(TRAIN_AUG_IDS, num_full, seed=0, pool=VOC_TRAIN_IDS)
    assert (len(full), len(weak), len(half)) == (num_full, 10582 - num_full, num_full // 2)
    assert set(full) <= set(VOC_TRAIN_IDS)
    assert not set(full) & set(weak)
    assert set(full) | set(weak) == set(TRAIN_AUG_IDS)
    assert set(half) < set(full)
    assert full == sorted(full) and half == sorted(half)


def test_split_reproducible_per_seed_and_different_across_seeds():
    first = split_fully_and_weakly_supervised(TRAIN_AUG_IDS, 400, seed=3, pool=VOC_TRAIN_IDS)
    again = split_fully_and_weakly_supervised(list(reversed(TRAIN_AUG_IDS)), 400, seed=3, pool=VOC_TRAIN_IDS[::-1])
    assert first.full == again.full and first.half_full == again.half_full and set(first.weak) == set(again.weak)
    other = split_fully_and_weakly_supervised(TRAIN_AUG_IDS, 400, seed=4, pool=VOC_TRAIN_IDS)
    assert other.full != first.full and other.half_full != first.half_full
    # half of F is its own draw, not the first half of the sorted F
    assert first.half_full != first.full[:200]


def test_split_nested_across_sizes():
    sets = [set(split_fully_and_weakly_supervised(TRAIN_AUG_IDS, n, 0, VOC_TRAIN_IDS).full) for n in (200, 400, 800)]
    assert sets[0] < sets[1] < sets[2]


def test_split_for_cityscapes_without_pool():
    ids = [f"aachen_{i:06d}_000019" for i in range(2975)]
    full, weak, half = split_fully_and_weakly_supervised(ids, 914, seed=0)
    assert (len(full), len(weak), len(half)) == (914, 2061, 457)
    assert weak == [i for i in ids if i not in set(full)]  # W keeps the training set's order


def test_split_validates_sizes():
    with pytest.raises(ValueError, match=r"num_full=1465 is larger than the pool of 1464 .*training set: 10582"):
        split_fully_and_weakly_supervised(TRAIN_AUG_IDS, 1465, pool=VOC_TRAIN_IDS)
    with pytest.raises(ValueError, match="num_full must be at least 2"):
        split_fully_and_weakly_supervised(TRAIN_AUG_IDS, 1)
    with pytest.raises(ValueError, match=r"1 of the 3 candidate ids for F are not in the training set"):
        split_fully_and_weakly_supervised(["a", "b", "c"], 2, pool=["a", "b", "z"])


# ---------------------------------------------------------------- the DataModule on the VOC + SBD fixture


@pytest.fixture
def tree(tmp_path: Path) -> VOCSBDTree:
    return make_voc_sbd(tmp_path / "data")


def datamodule(tree: VOCSBDTree, **kwargs) -> SemiSupervisedVOCDataModule:
    args = dict(
        root=str(tree.voc_root), sbd_root=str(tree.sbd_root), num_full=2, split_seed=0, crop_size=32, batch_size=2
    )
    return SemiSupervisedVOCDataModule(**{**args, **kwargs})


def test_datasets_follow_the_split(tree: VOCSBDTree):
    dm = datamodule(tree)
    full, weak, half = dm.semisup_split()
    assert full == split_fully_and_weakly_supervised(TRAIN_AUG, 2, 0, VOC_TRAIN).full
    assert set(full) <= set(VOC_TRAIN) and len(half) == 1 and set(half) < set(full)
    assert sorted(full + weak) == list(TRAIN_AUG)
    full_set, weak_set, half_set = (dm.dataset(name, True) for name in ("full", "weak", "half_full"))
    assert full_set.ids == full and weak_set.ids == weak and half_set.ids == half
    assert full_set.with_masks and half_set.with_masks and not weak_set.with_masks
    assert len(dm.dataset("train", True)) == len(TRAIN_AUG)


def test_weak_masks_are_never_read(tree: VOCSBDTree):
    dm = datamodule(tree)
    full, weak, _ = dm.semisup_split()
    damaged = 0
    for index, sample_id in enumerate(weak):  # delete or corrupt every mask file W could read
        for path in (
            tree.voc_root / "SegmentationClass" / f"{sample_id}.png",
            tree.sbd_root / "cls" / f"{sample_id}.mat",
        ):
            if path.exists():
                damaged += 1
                if index % 2:
                    path.unlink()
                else:
                    path.write_bytes(b"not a mask")
    assert damaged >= len(weak) == 4
    dm.setup("fit")
    seen = {}
    for batch in train_batches(dm):
        assert batch["boxes"].shape[1:] == (21, 32, 32)
        for b, sample_id in enumerate(batch["id"]):
            seen[sample_id] = (bool(batch["has_mask"][b]), batch["mask"][b], batch["boxes"][b])
    assert set(seen) == set(TRAIN_AUG)
    for sample_id, (has_mask, mask, boxes) in seen.items():
        assert has_mask == (sample_id in full)
        if sample_id in weak:
            assert torch.all(mask == 255)
        assert boxes.sum() > 0
    # the same damage to a mask of F does stop loading
    bad = tree.voc_root / "SegmentationClass" / f"{full[0]}.png"
    bad.write_bytes(b"not a mask")
    with pytest.raises(DataFormatError, match=rf"Cannot decode mask .*{full[0]}.png"):
        dm.dataset("full", True)[dm.dataset("full", True).ids.index(full[0])]


def test_boxes_of_weak_samples(tree: VOCSBDTree):
    dm = datamodule(tree)
    weak = dm.semisup_split().weak
    sample = dm.dataset("weak", False)[0]
    expected = dm.dataset("weak", False).boxes(weak[0])
    assert expected and not sample["has_mask"]
    np.testing.assert_array_equal(sample["boxes"][:, :48, :64].numpy(), box_mask(expected, 21, 48, 64))


def test_num_full_larger_than_pool(tree: VOCSBDTree):
    dm = datamodule(tree, num_full=4)
    with pytest.raises(
        ValueError, match=r"num_full=4 is larger than the pool of 3 candidate ids .*training set: 6 ids"
    ):
        dm.setup("fit")
    with pytest.raises(ValueError, match="num_full must be at least 2"):
        datamodule(tree, num_full=1)
    big = datamodule(tree, num_full=6, full_pool="train_aug")
    assert big.semisup_split().weak == [] and len(big.dataset("half_full", True)) == 3


def test_split_seed_changes_the_sets(tree: VOCSBDTree):
    seeds = {tuple(datamodule(tree, split_seed=s).semisup_split().full) for s in range(6)}
    assert len(seeds) > 1


def test_fit_through_the_cli(tree: VOCSBDTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from segmend.cli import main
    from segmend.modules import SegmentationModule

    seen = []
    original = SegmentationModule.training_step

    def spy(self, batch, batch_idx):
        seen.append((list(batch["id"]), batch["has_mask"].tolist(), tuple(batch["boxes"].shape)))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(SegmentationModule, "training_step", spy)
    main(
        [
            "fit",
            "--model=SegmentationModule",
            "--model.init_args.arch=Unet",
            "--model.init_args.encoder_name=resnet18",
            "--data=segmend.datamodules.semisup.SemiSupervisedVOCDataModule",
            f"--data.init_args.root={tree.voc_root}",
            f"--data.init_args.sbd_root={tree.sbd_root}",
            "--data.init_args.num_full=2",
            "--data.init_args.crop_size=64",
            "--data.init_args.batch_size=2",
            "--trainer.fast_dev_run=1",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    full = set(split_fully_and_weakly_supervised(TRAIN_AUG, 2, 0, VOC_TRAIN).full)
    assert len(seen) == 1
    ids, has_mask, boxes_shape = seen[0]
    assert set(ids) <= set(TRAIN_AUG) and has_mask == [i in full for i in ids] and boxes_shape == (2, 21, 64, 64)
