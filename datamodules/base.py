"""Shared DataModule plumbing: augmentation settings, datasets per stage, loaders, mixed batches.

A mixed training batch holds samples of two datasets, each from its own loader, cycled together by
Lightning and concatenated before the module sees them: self-correction's F + W batches
(:mod:`segmend.datamodules.full_weak`) and labelled images added to a training set, such as MAD's
counterexamples (:meth:`SegmentationDataModule.add_labelled`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from segmend.datamodules.extra_labels import LabelledFile, LabelledFilesDataset
from segmend.datamodules.label_files import IGNORE_INDEX
from segmend.datamodules.seeding import (
    EpochShuffleSampler,
    LazyStartDataLoader,
    SeededAugmentation,
    UnrepeatedDistributedSampler,
    loader_generator,
    resolve_seed,
    rng_state,
    set_rng_state,
)
from segmend.datamodules.transforms import eval_transform, to_sample, train_transform
from segmend.datamodules.voc_format import voc_palette
from segmend.hparams import LoggedHyperparameters

#: The split of the labelled images added with :meth:`SegmentationDataModule.add_labelled`.
EXTRA = "extra"


class SegmentationDataModule(LoggedHyperparameters, LightningDataModule, ABC):
    """Base of segmend's DataModules; subclasses implement :meth:`build_dataset`.

    Batches follow segmend's batch contract: ``image`` (B, 3, H, W) float, ``mask`` (B, H, W)
    long with 255 = ignore, ``has_mask`` (B,) bool, ``id`` list of str, and ``boxes``
    (B, C, H, W) when ``with_boxes`` is set.

    Args:
        batch_size: Training batch size (per device).
        eval_batch_size: Validation/test/predict batch size; ``None`` uses ``batch_size``.
        num_workers: DataLoader worker processes.
        crop_size: Training random-crop side (padded with the ignore label); ``None`` trains
            on whole images, which needs images of one size and ``scale_range`` (1, 1).
        scale_range: Training random rescale range.
        hflip: Training random horizontal flip.
        color_jitter: Training colour jitter strength (0 disables it).
        rotation: Training maximum rotation in degrees (0 disables it).
        with_boxes: Add the (C, H, W) box mask of each sample's object boxes.
        predict_split: Split served by ``predict_dataloader``.
        loader_seed: Seed of the training order and augmentation; ``None`` uses the run's seed
            (``seed_everything``), or 0 without one. Each sample's augmentation is seeded from
            (seed, epoch, sample index), so it does not depend on ``num_workers`` or on a resume
            (see ``docs/reproducibility.md``).

    Under DDP the loaders shard the data themselves: training with a seeded
    ``DistributedSampler`` (Lightning calls its ``set_epoch``), evaluation (val, test,
    predict) with every sample exactly once across the processes, so metrics summed across
    ranks count no sample twice.

    """

    class_names: tuple[str, ...] = ()
    palette: np.ndarray = voc_palette()
    #: The label of unlabeled pixels in the masks served (the batch contract's; models must use the same).
    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        crop_size: int | None = 512,
        scale_range: tuple[float, float] = (0.5, 2.0),
        hflip: bool = True,
        color_jitter: float = 0.0,
        rotation: float = 0.0,
        with_boxes: bool = False,
        predict_split: str = "val",
        loader_seed: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # every subclass's arguments too: logged beside the model's
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if loader_seed is not None and loader_seed < 0:
            raise ValueError(f"loader_seed must be a non-negative integer or null (the run's seed), got {loader_seed}.")
        if crop_size is None and tuple(scale_range) != (1.0, 1.0):
            raise ValueError(
                f"scale_range={tuple(scale_range)} rescales training images, so crop_size must be "
                "set to give every batch one size; set crop_size or scale_range: [1.0, 1.0]."
            )
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.crop_size = crop_size  # read by SegmentationModule.check_datamodule
        self.num_workers = num_workers
        self.with_boxes = with_boxes
        self.predict_split = predict_split
        self.loader_seed = loader_seed
        self.train_augmentation = train_transform(crop_size, scale_range, hflip, color_jitter, rotation)
        self.train_sample = partial(to_sample, self.train_augmentation)
        self.eval_sample = partial(to_sample, eval_transform())
        self.datasets: dict[str, Dataset] = {}
        self.extra_labelled: dict[str, LabelledFile] = {}
        self.extra_per_batch: int | None = None
        self.mixed_parts: tuple[str, ...] = ()  # names of the loaders of a mixed training batch, in merge order

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.class_names)

    @abstractmethod
    def build_dataset(self, split: str, train: bool) -> Dataset:
        """Create the dataset of ``split`` ("train", "val", "test" or another split name).

        Args:
            split: Split name.
            train: Whether to apply training augmentation.

        """

    def dataset(self, split: str, train: bool = False) -> Dataset:
        """The dataset of ``split``, built once (per ``train``)."""
        key = dataset_key(split, train)
        if key not in self.datasets:
            self.datasets[key] = self.build_extra_dataset() if split == EXTRA else self.build_dataset(split, train)
        return self.datasets[key]

    def has_dataset(self, split: str, train: bool = False) -> bool:
        """Whether the dataset of ``split`` has been built."""
        return dataset_key(split, train) in self.datasets

    def forget_dataset(self, split: str) -> None:
        """Drop the built datasets of ``split`` (with and without training augmentation) so they are built anew."""
        for train in (True, False):
            self.datasets.pop(dataset_key(split, train), None)

    def setup(self, stage: str) -> None:
        """Build (and so check) the datasets the stage needs."""
        splits = {
            "fit": [("train", True), ("val", False)],
            "validate": [("val", False)],
            "test": [("test", False)],
            "predict": [(self.predict_split, False)],
        }[stage]
        for split, train in splits:
            self.dataset(split, train)

    @property
    def data_seed(self) -> int:
        """Seed of the loaders: ``loader_seed``, else ``seed_everything``'s (read when a loader is built), else 0."""
        return resolve_seed(self.loader_seed)

    def process_shard(self) -> tuple[int, int]:
        """``(number of processes, this process's rank)`` of the attached trainer; ``(1, 0)`` without one."""
        kwargs = self.trainer.distributed_sampler_kwargs if self.trainer is not None else None
        if not kwargs:
            return 1, 0
        return int(kwargs["num_replicas"]), int(kwargs["rank"])

    def eval_sampler(self, dataset: Dataset) -> UnrepeatedDistributedSampler | None:
        """Under DDP, a sampler giving every sample to exactly one process (``None`` with one process)."""
        replicas, rank = self.process_shard()
        return UnrepeatedDistributedSampler(dataset, replicas, rank) if replicas > 1 else None

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, stream: str = "train") -> DataLoader:
        """A training loader (``shuffle``: seeded order and augmentation) or an evaluation loader.

        Args:
            dataset: A dataset built by :meth:`build_dataset` (``train=shuffle``).
            batch_size: Batch size per process.
            shuffle: Training loader: an :class:`EpochShuffleSampler` whose pairs seed
                :attr:`train_augmentation` per sample, in a :class:`LazyStartDataLoader`.
            stream: Name of a training loader (independent streams for two loaders, e.g. F and W).

        """
        seed = self.data_seed
        if shuffle:
            replicas, rank = self.process_shard()
            sampler = EpochShuffleSampler(dataset, seed, stream, replicas, rank)
            dataset = SeededAugmentation(dataset, self.train_augmentation)
        else:
            sampler, stream = self.eval_sampler(dataset), "eval"
        return (LazyStartDataLoader if shuffle else DataLoader)(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=shuffle and len(sampler) > batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=loader_generator(seed, stream),
        )

    def state_dict(self) -> dict[str, Any]:
        """The main process's global RNG states (torch, numpy, random, CUDA) and the extra labelled images.

        Lightning does not checkpoint the RNG states; restoring them when a fit resumes from an
        epoch-end checkpoint gives the model the random stream (dropout) the uninterrupted fit had.
        """
        extra = {key: list(files) for key, files in self.extra_labelled.items()}
        return {"rng": rng_state(), "extra_labelled": extra, "extra_per_batch": self.extra_per_batch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (checkpoints without some of its keys are accepted)."""
        if "rng" in state_dict:
            set_rng_state(state_dict["rng"])
        if state_dict.get("extra_labelled"):
            self.add_labelled(state_dict["extra_labelled"], state_dict.get("extra_per_batch"))

    def add_labelled(self, entries: Mapping[str, LabelledFile], per_batch: int | None = None) -> None:
        """Add labelled images (e.g. MAD's counterexamples) to the training data, mixed into every batch.

        Every training batch then holds ``per_batch`` of them (``None``: their share of the union,
        at least one) and original training samples for the rest; the two loaders are cycled
        together (an epoch is the longer one). Adding an id again replaces its files.

        Args:
            entries: ``id -> (image path, label path)``; labels are index PNGs (255 = ignore).
            per_batch: Extra samples per batch, in [1, batch_size - 1].

        Raises:
            ValueError: If ``per_batch`` does not fit the batch size.

        """
        if per_batch is not None:
            batch_split(self.batch_size, 1, 1, per_batch)  # checks it
        self.extra_labelled.update({key: (str(image), str(label)) for key, (image, label) in entries.items()})
        self.extra_per_batch = per_batch
        self.forget_dataset(EXTRA)

    def build_extra_dataset(self) -> Dataset:
        """The extra labelled images as a training dataset (with training augmentation): the split ``"extra"``."""
        return LabelledFilesDataset(self.extra_labelled, self.class_names, self.train_sample)

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        """The training loader; with extra labelled images, ``{"train": ..., "extra": ...}`` cycled together."""
        train = self.dataset("train", True)
        if not self.extra_labelled:
            return self._loader(train, self.batch_size, shuffle=True)
        extra = self.dataset(EXTRA, True)
        own, part = batch_split(self.batch_size, len(train), len(extra), self.extra_per_batch)
        return self.mixed_loaders({"train": (train, own), EXTRA: (extra, part)})

    def mixed_loaders(self, parts: Mapping[str, tuple[Dataset, int]]) -> dict[str, DataLoader]:
        """Training loaders of a mixed batch, ``name -> (dataset, samples per batch)``, merged in this order.

        Lightning cycles them together; each draws its order and augmentation from the seeded stream ``name``.
        """
        self.mixed_parts = tuple(parts)
        return {name: self._loader(dataset, size, shuffle=True, stream=name) for name, (dataset, size) in parts.items()}

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Concatenate the parts of a mixed training batch (see :meth:`mixed_loaders`) into one batch."""
        if self.mixed_parts and isinstance(batch, dict) and set(batch) == set(self.mixed_parts):
            return merge_batches([batch[name] for name in self.mixed_parts])
        return batch

    def val_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader(self.dataset("val"), self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader(self.dataset("test"), self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader(self.dataset(self.predict_split), self.eval_batch_size, shuffle=False)

    def sample_kwargs(self, train: bool) -> dict[str, Any]:
        """Keyword arguments shared by the readers: the sample builder and the box switch."""
        return {
            "transform": self.train_sample if train else self.eval_sample,
            "with_boxes": self.with_boxes,
        }


def dataset_key(split: str, train: bool) -> str:
    """The key of a built dataset in :attr:`SegmentationDataModule.datasets`."""
    return f"{split}:{'train' if train else 'eval'}"


def batch_split(
    batch_size: int,
    num_rest: int,
    num_part: int,
    per_batch: int | None,
    name: str = "per_batch",
    what: str = "extra labelled images",
) -> tuple[int, int]:
    """Numbers of samples of the rest and of a part in a mixed batch.

    Args:
        batch_size: The training batch size (at least 2).
        num_rest: Size of the dataset filling the rest of each batch.
        num_part: Size of the part with a share of each batch.
        per_batch: Samples of the part per batch; ``None`` gives it its share of the union, rounded,
            at least 1 and at most ``batch_size - 1``.
        name: The argument holding ``per_batch``, named in errors.
        what: What the part is, for errors.

    Returns:
        ``(rest, part)`` samples per batch, summing to ``batch_size``.

    Raises:
        ValueError: If the batch cannot hold both kinds, or ``per_batch`` leaves no room for one.

    """
    if batch_size < 2:
        raise ValueError(f"Mixing {what} into every batch needs batch_size >= 2 (one sample of each kind at least).")
    if per_batch is not None and not 1 <= per_batch <= batch_size - 1:
        raise ValueError(
            f"{name}={per_batch} must be in [1, batch_size - 1] = [1, {batch_size - 1}] so every batch holds both "
            "kinds; use null for a share proportional to the set sizes."
        )
    part = per_batch if per_batch is not None else round(batch_size * num_part / (num_rest + num_part))
    part = min(max(part, 1), batch_size - 1)
    return batch_size - part, part


def merge_batches(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate batches of the batch contract along the batch dimension (tensors and id lists).

    Raises:
        ValueError: If the batches do not have the same keys (e.g. one lacks ``boxes``).

    """
    keys = set(parts[0])
    if any(set(part) != keys for part in parts):
        raise ValueError(f"Cannot merge batches with different keys: {[sorted(part) for part in parts]}.")
    merged: dict[str, Any] = {}
    for key in parts[0]:
        values = [part[key] for part in parts]
        merged[key] = torch.cat(values) if isinstance(values[0], torch.Tensor) else sum(map(list, values), [])
    return merged
