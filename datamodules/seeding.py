"""Reproducible data loading: seeded epoch-aware samplers, per-sample augmentation seeds, RNG state.

Every random draw of the data is a pure function of keys fixed by the run, never of where or when
a sample is loaded (``docs/reproducibility.md``, How it works, says why and what was measured): a
training loader's order in one pass is seeded from ``(seed, stream, epoch, pass)``
(:class:`EpochShuffleSampler`), a sample's augmentation from ``(seed, stream, epoch, pass, index)``
(:class:`SeededIndex`, :class:`SeededAugmentation`), every DataLoader has its own seeded
``generator``, and :func:`rng_state` / :func:`set_rng_state` carry the main process's global RNGs
through a DataModule's ``state_dict``. The samplers are ``DistributedSampler`` subclasses built
with the trainer's world size and rank, so Lightning calls their ``set_epoch`` and keeps them
under DDP.
"""

from __future__ import annotations

import os
import random
import zlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

SEED_ENV = "PL_GLOBAL_SEED"


def resolve_seed(seed: int | None) -> int:
    """The seed of a run's data: ``seed`` if given, else ``seed_everything``'s, else 0.

    ``seed_everything`` stores its seed in the ``PL_GLOBAL_SEED`` environment variable (inherited by
    DDP processes); without it the seed is 0, as for the ``DistributedSampler`` Lightning injects,
    so every rank agrees without communicating.
    """
    if seed is not None:
        return int(seed)
    return int(os.environ.get(SEED_ENV, 0))


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from non-negative integer keys, well mixed (numpy's ``SeedSequence``)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def stream_key(name: str) -> int:
    """A stable integer for a loader's name (``train``, ``full``, ``weak``, ``eval``)."""
    return zlib.crc32(name.encode())


def loader_generator(seed: int, stream: str) -> torch.Generator:
    """A DataLoader ``generator`` seeded from ``(seed, stream)`` (worker base seeds never touch the global RNG)."""
    return torch.Generator().manual_seed(derive_seed(seed, stream_key(stream)))


class SeededIndex(NamedTuple):
    """A dataset index and the seed of that sample's augmentation (yielded by :class:`EpochShuffleSampler`)."""

    index: int
    seed: int


class EpochShuffleSampler(DistributedSampler):
    """A shuffled order drawn from ``(seed, stream, epoch, pass)`` that carries each sample's augmentation seed.

    Yields :class:`SeededIndex` pairs, to be read through :class:`SeededAugmentation`. The order
    of the whole set is the same for any ``num_replicas``; rank ``r`` takes positions ``r, r + R,
    r + 2R, ...`` of it (padded by repeating its start, like ``DistributedSampler``, so every rank
    runs the same number of steps), so the samples of one global step are those of a one-process
    step with an ``R`` times larger batch. ``set_epoch`` (called by Lightning before each epoch)
    selects the epoch and restarts the pass count. Serve it from a :class:`LazyStartDataLoader`:
    a loader with workers draws its first indices when its iterator is made, which Lightning may do
    before ``set_epoch`` (on resume, with the epoch still 0).

    Args:
        dataset: The training dataset.
        seed: The run's data seed (:func:`resolve_seed`).
        stream: Name of the loader, so two loaders of one DataModule draw independent streams.
        num_replicas: Number of processes (the trainer's world size).
        rank: This process's rank.

    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int,
        stream: str = "train",
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.stream = stream
        self.passes = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; a new epoch starts at its first pass.

        Setting the current epoch again keeps the pass count, so a repeated call cannot make a
        cycled loader repeat a pass.
        """
        if epoch != self.epoch:
            self.passes = 0
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[SeededIndex]:  # type: ignore[override]
        # a generator: the pass is counted when the first index is drawn, not when an iterator is made
        keys = (self.seed, stream_key(self.stream), self.epoch, self.passes)
        self.passes += 1
        size = len(self.dataset)  # type: ignore[arg-type]
        order = torch.randperm(size, generator=torch.Generator().manual_seed(derive_seed(*keys))).tolist()
        padding = self.total_size - size
        while padding > 0:
            order += order[:padding]
            padding = self.total_size - len(order)
        for index in order[self.rank : self.total_size : self.num_replicas]:
            yield SeededIndex(index, derive_seed(*keys, index))


class LazyStartDataLoader(DataLoader):
    """A DataLoader whose iteration starts at the first batch, not when ``iter()`` is called.

    With workers, a DataLoader iterator draws its first indices from the sampler as soon as it is
    made. Lightning makes the training iterator while it sets up the data (also inside
    ``trainer.estimated_stepping_batches``, which a schedule may ask for in ``configure_optimizers``, before
    a checkpoint's loop state is restored) and only then calls ``set_epoch``. Measured: a fit
    resumed at epoch 1 with 2 workers trained its first epoch on epoch 0's order. Deferring the
    start makes every draw of an epoch happen after its ``set_epoch``.
    """

    def __iter__(self) -> Iterator[Any]:
        yield from super().__iter__()


class UnrepeatedDistributedSampler(DistributedSampler):
    """Every sample exactly once across the ranks, in order: rank ``r`` gets samples ``r, r + R, ...``.

    For evaluation: the shards differ by at most one sample (nothing is repeated to even them out),
    which is correct for metrics summed across ranks, such as a confusion matrix.

    Raises:
        ValueError: If the dataset has fewer samples than there are processes (a process without
            a sample would skip the epoch-end synchronisation the others wait in).

    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        size = len(dataset)  # type: ignore[arg-type]
        if size < num_replicas:
            raise ValueError(
                f"The evaluation set has {size} samples for {num_replicas} processes, so a process would get none; "
                f"evaluate with at most {size} devices (e.g. --trainer.devices={max(size, 1)}) or on more samples."
            )
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, size, num_replicas))
        self.total_size = size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))


class SeededAugmentation(Dataset):
    """Seed an albumentations pipeline from each :class:`SeededIndex` before the sample is built.

    Plain integer indices (e.g. from the sequential sampler Lightning puts in for
    ``overfit_batches``) read the sample with the pipeline's own random state.

    Args:
        dataset: A dataset whose samples are built with ``augmentation``.
        augmentation: The pipeline (``A.Compose``); its transforms share one numpy and one Python
            generator per sample through ``set_random_state`` (not ``set_random_seed``, which would
            give every transform an identical stream, e.g. tie the flip to the scale drawn).

    """

    def __init__(self, dataset: Dataset, augmentation: Any) -> None:
        self.dataset = dataset
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | SeededIndex) -> Any:
        if isinstance(key, tuple):
            index, seed = key
            self.augmentation.set_random_state(np.random.default_rng(seed), random.Random(seed))
        else:
            index = key
        return self.dataset[index]


def rng_state() -> dict[str, Any]:
    """The global RNG states of this process (torch, CUDA, numpy, random), as checkpoint-safe values."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (keys that are missing are left as they are)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        kind, keys, position, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
