"""Seeded fits are reproducible on the CPU: repeated, resumed at an epoch boundary, with workers, F + W mixed.

Each fit is DeepLabV3+ (its ASPP has dropout, so the model draws from the global torch RNG) under
the default poly schedule (which asks for ``estimated_stepping_batches`` and so makes Lightning
build the training loader before it restores a checkpoint) on the tiny synthetic scenes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from segmend.datamodules import SemiSupervisedSyntheticDataModule, SyntheticDataModule, VOCSegmentationDataset
from segmend.datamodules.seeding import EpochShuffleSampler, SeededIndex, UnrepeatedDistributedSampler
from segmend.modules import SegmentationModule
from tests.fixtures.data import TINY_SYNTHETIC

SEMISUP = {**TINY_SYNTHETIC, "num_train": 12, "num_full": 2, "full_per_batch": 1}


class RecordBatches(Callback):
    """Keep the ids and a checksum of the images of every training batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[str], float]] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:  # noqa: D102
        self.batches.append((trainer.current_epoch, list(batch["id"]), float(batch["image"].double().sum())))


def datamodule(data_cache: Path, semisup: bool = False, **kwargs: Any) -> SyntheticDataModule:
    if semisup:
        return SemiSupervisedSyntheticDataModule(cache_dir=str(data_cache), **{**SEMISUP, **kwargs})
    return SyntheticDataModule(cache_dir=str(data_cache), **{**TINY_SYNTHETIC, "scale_range": (0.5, 1.5), **kwargs})


def fit(
    data_cache: Path,
    root: Path,
    epochs: int = 3,
    ckpt_path: Path | None = None,
    arch: str = "DeepLabV3Plus",
    semisup: bool = False,
    **data: Any,
) -> dict[str, Any]:
    """A seeded fit; returns its final validation metrics, weights and training batches."""
    seed_everything(0, workers=True, verbose=False)
    dm = datamodule(data_cache, semisup, **data)
    net_kwargs = {"decoder_channels": 32} if arch == "DeepLabV3Plus" else None
    module = SegmentationModule(num_classes=dm.num_classes, arch=arch, net_kwargs=net_kwargs)
    recorder = RecordBatches()
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        deterministic=True,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[recorder, ModelCheckpoint(dirpath=root, filename="{epoch}", save_top_k=-1)],
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return {"metrics": metrics, "weights": module.state_dict(), "batches": recorder.batches}


def assert_same_fit(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["metrics"] == b["metrics"]
    assert a["weights"].keys() == b["weights"].keys()
    different = [k for k in a["weights"] if not torch.equal(a["weights"][k], b["weights"][k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_two_seeded_fits_are_identical_for_any_num_workers(tmp_path: Path, data_cache: Path):
    first = fit(data_cache, tmp_path / "a")
    second = fit(data_cache, tmp_path / "b")
    with_workers = fit(data_cache, tmp_path / "c", num_workers=2)
    assert {"val/mIoU", "val/aAcc", "val/mAcc"} <= first["metrics"].keys()
    assert_same_fit(first, second)
    assert_same_fit(first, with_workers)  # each sample's augmentation does not depend on the worker count


def epoch_images(dm: SyntheticDataModule, epoch: int) -> dict[str, torch.Tensor]:
    """Augmented training images of one epoch, by sample id (the loader served without a Trainer)."""
    loader = dm.train_dataloader()
    if hasattr(loader.sampler, "set_epoch"):  # as Lightning does before each epoch
        loader.sampler.set_epoch(epoch)
    return {i: image for batch in loader for i, image in zip(batch["id"], batch["image"], strict=True)}


def test_augmentation_changes_with_the_epoch_and_repeats_across_runs(data_cache: Path):
    seed_everything(0, verbose=False)
    run = [epoch_images(datamodule(data_cache), epoch) for epoch in (0, 1)]
    again = [epoch_images(datamodule(data_cache), epoch) for epoch in (0, 1)]
    workers = [epoch_images(datamodule(data_cache, num_workers=2), epoch) for epoch in (0, 1)]
    assert run[0].keys() == run[1].keys() and len(run[0]) == 8
    for sample_id in run[0]:
        assert not torch.equal(run[0][sample_id], run[1][sample_id]), sample_id
        for epoch in (0, 1):
            assert torch.equal(run[epoch][sample_id], again[epoch][sample_id]), (sample_id, epoch)
            assert torch.equal(run[epoch][sample_id], workers[epoch][sample_id]), (sample_id, epoch)


class OneSceneDataModule(SyntheticDataModule):
    """The training set is one scene 8 times: only the augmentation tells its samples apart."""

    def build_dataset(self, split: str, train: bool) -> Any:  # noqa: D102
        if split != "train":
            return super().build_dataset(split, train)
        self.prepare_data()
        ids = ["train_00000"] * 8
        return VOCSegmentationDataset(self.root, "train", self.class_names, ids=ids, **self.sample_kwargs(train))


def test_augmentation_differs_between_workers(data_cache: Path):
    seed_everything(0, workers=True, verbose=False)
    dm = OneSceneDataModule(
        cache_dir=str(data_cache), **{**TINY_SYNTHETIC, "num_workers": 2, "scale_range": (0.5, 1.5)}
    )
    batches = list(dm.train_dataloader())  # batch 0 from worker 0, batch 1 from worker 1
    assert len(batches) == 2
    images = [image for batch in batches for image in batch["image"]]
    for i in range(len(images)):
        for j in range(i):
            assert not torch.equal(images[i], images[j]), (i, j)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_at_an_epoch_boundary_equals_the_uninterrupted_fit(num_workers: int, tmp_path: Path, data_cache: Path):
    uninterrupted = fit(data_cache, tmp_path / "run", num_workers=num_workers)
    resumed = fit(
        data_cache, tmp_path / "resumed", ckpt_path=tmp_path / "run" / "epoch=0.ckpt", num_workers=num_workers
    )
    assert resumed["batches"] == uninterrupted["batches"][-len(resumed["batches"]) :]
    assert [b[0] for b in resumed["batches"]] == [1, 1, 2, 2]
    assert_same_fit(uninterrupted, resumed)


def test_semisupervised_mixed_loaders_repeat_and_resume(tmp_path: Path, data_cache: Path):
    # W: 10 images, 3 per batch -> 3 steps per epoch; F: 2 images, 1 per batch -> cycled in a second pass
    first = fit(data_cache, tmp_path / "a", semisup=True)
    second = fit(data_cache, tmp_path / "b", semisup=True, num_workers=2)
    assert_same_fit(first, second)
    resumed = fit(data_cache, tmp_path / "c", ckpt_path=tmp_path / "a" / "epoch=1.ckpt", semisup=True)
    assert resumed["batches"] == first["batches"][-3:]
    assert_same_fit(first, resumed)


def test_variants_of_one_seed_see_the_same_batches(tmp_path: Path, data_cache: Path):
    """Benchmarks pair variants by seed: their nets draw differently from the global RNG, their data does not."""
    deeplab = fit(data_cache, tmp_path / "a", epochs=2)
    unet = fit(data_cache, tmp_path / "b", epochs=2, arch="Unet")
    assert deeplab["batches"] == unet["batches"]


def test_shuffle_sampler_passes_epochs_and_shards():
    dataset = list(range(7))
    one = EpochShuffleSampler(dataset, seed=3)
    first, second = list(one), list(one)  # two passes of epoch 0 (a cycled loader)
    assert sorted(i for i, _ in first) == dataset and first != second
    one.set_epoch(0)  # the same epoch again keeps counting passes
    assert list(one) not in (first, second)
    one.set_epoch(1)
    epoch1 = list(one)
    assert epoch1 != first and list(EpochShuffleSampler(dataset, seed=3)) == first
    assert all(isinstance(key, SeededIndex) for key in first) and len({s for _, s in first}) == 7
    # two ranks: the one-process order dealt alternately (padded to 8 by repeating its start)
    ranks = [EpochShuffleSampler(dataset, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    shards = [list(r) for r in ranks]
    assert [len(s) for s in shards] == [4, 4]
    dealt = [shards[k % 2][k // 2] for k in range(8)]
    assert dealt == first + first[:1]


def test_unrepeated_sampler_gives_every_sample_once():
    dataset = list(range(7))
    shards = [list(UnrepeatedDistributedSampler(dataset, 2, r)) for r in (0, 1)]
    assert shards == [[0, 2, 4, 6], [1, 3, 5]]
    assert [len(UnrepeatedDistributedSampler(dataset, 2, r)) for r in (0, 1)] == [4, 3]
    with pytest.raises(ValueError, match="has 1 samples for 2 processes"):
        UnrepeatedDistributedSampler([0], 2, 0)
