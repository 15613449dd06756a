"""Training sets of the semi-supervised DataModules: half of F, F, mixed F + W batches, the W-masks baseline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segmend.datamodules.base import merge_batches
from segmend.datamodules.semisup import SemiSupervisedCityscapesDataModule, SemiSupervisedSyntheticDataModule
from tests.fixtures.batches import train_batches
from tests.fixtures.cityscapes import make_cityscapes
from tests.fixtures.data import TINY_SYNTHETIC

TINY = {**TINY_SYNTHETIC, "num_train": 12, "batch_size": 4}


def synthetic(data_cache: Path, **kwargs) -> SemiSupervisedSyntheticDataModule:
    return SemiSupervisedSyntheticDataModule(cache_dir=str(data_cache), **{**TINY, "num_full": 4, **kwargs})


def test_mixed_batches_hold_f_and_w_in_the_configured_ratio(data_cache: Path):
    dm = synthetic(data_cache, num_full=2, full_per_batch=1)
    full, weak, _ = dm.semisup_split()
    batches = train_batches(dm)
    # an epoch is one pass over the loader with more batches: here W (10 // 3), while F (2 // 1) cycles
    assert len(weak) == 10 and len(batches) == 3
    seen_weak = []
    for batch in batches:
        assert batch["image"].shape == (4, 3, 64, 64) and batch["boxes"].shape == (4, 6, 64, 64)
        assert batch["has_mask"].tolist() == [True, False, False, False]
        assert batch["id"][0] in full and all(i in weak for i in batch["id"][1:])
        assert torch.all(batch["mask"][1:] == 255) and bool((batch["mask"][0] != 255).any())
        seen_weak += batch["id"][1:]
    assert len(set(seen_weak)) == len(seen_weak) == len(batches) * 3


def test_default_ratio_follows_the_set_sizes(data_cache: Path):
    assert synthetic(data_cache).batch_split() == (1, 3)  # 4 of 12 -> 1.33 of 4
    assert synthetic(data_cache, num_full=10).batch_split() == (3, 1)  # 10 of 12 -> 3.33 of 4


def test_switching_training_sets(data_cache: Path):
    dm = synthetic(data_cache, full_per_batch=2)
    full, weak, half = dm.semisup_split()
    dm.use_train_set("half_full")
    ids = [i for batch in train_batches(dm) for i in batch["id"]]
    assert set(ids) == set(half) and len(half) == 2
    dm.use_train_set("full")
    batches = train_batches(dm)
    assert {i for b in batches for i in b["id"]} == set(full)
    assert all(bool(b["has_mask"].all()) for b in batches)
    dm.use_train_set("full+weak_masks")  # the fully supervised baseline reads W's masks
    for batch in train_batches(dm):
        assert bool(batch["has_mask"].all())
        assert all(bool((m != 255).any()) for m in batch["mask"])
    assert len(dm.dataset("train", True)) == len(full) + len(weak)
    with pytest.raises(ValueError, match=r"train_set must be one of .*'full\+weak'.*got 'everything'"):
        dm.use_train_set("everything")


def test_bad_settings_are_refused(data_cache: Path):
    with pytest.raises(ValueError, match=r"full_per_batch=4 must be in \[1, batch_size - 1\] = \[1, 3\]"):
        synthetic(data_cache, full_per_batch=4)
    with pytest.raises(ValueError, match="num_full must be at least 2"):
        synthetic(data_cache, num_full=1)
    with pytest.raises(ValueError, match="num_full=13 is larger than the pool of 12"):
        synthetic(data_cache, num_full=13).semisup_split()


def test_merge_batches():
    a = {"image": torch.zeros(1, 3, 2, 2), "id": ["a"], "has_mask": torch.tensor([True])}
    b = {"image": torch.ones(2, 3, 2, 2), "id": ["b", "c"], "has_mask": torch.tensor([False, False])}
    merged = merge_batches([a, b])
    assert merged["id"] == ["a", "b", "c"] and merged["image"].shape[0] == 3
    assert merged["has_mask"].tolist() == [True, False, False]
    with pytest.raises(ValueError, match="different keys"):
        merge_batches([a, {"image": torch.zeros(1, 3, 2, 2)}])


def test_cityscapes_weak_labels_never_read(tmp_path: Path):
    root = make_cityscapes(tmp_path / "cityscapes")
    dm = SemiSupervisedCityscapesDataModule(
        root=str(root), num_full=2, full_per_batch=1, batch_size=2, crop_size=32, scale_range=(1.0, 1.0)
    )
    full, weak, half = dm.semisup_split()
    assert len(full) == 2 and len(half) == 1 and len(weak) >= 1 and dm.num_classes == 12
    for sample_id in weak:  # W's label files are gone; its boxes (instanceIds, polygons) stay
        next(root.glob(f"gtFine/train/*/{sample_id}_gtFine_labelIds.png")).unlink()
    batches = train_batches(dm)
    assert batches
    for batch in batches:
        assert batch["has_mask"].tolist() == [True, False]
        assert batch["id"][0] in full and batch["id"][1] in weak
        assert batch["boxes"].shape[1] == 12 and torch.all(batch["mask"][1] == 255)
    assert dm.dataset("full", True).ids == full
