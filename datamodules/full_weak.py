"""The semi-supervised split of self-correcting networks, for any DataModule: F, W and half of F.

F (image + mask + boxes) is a seeded subset of ``num_full`` ids drawn from a candidate pool (for
VOC: the 1464 VOC train images), W (image + boxes, masks never read) is the rest of the training
set, and half of F, on which the ancillary model trains first, a seeded subset of ⌊|F|/2⌋ ids of F.
:class:`SemiSupervisedMixin` serves one of four training sets (``half_full``, ``full``,
``full+weak``, ``full+weak_masks``; see ``docs/datasets.md``, Semi-supervised DataModules), the
mixed ones as an F and a W loader cycled together, each with its own seeded stream. The DataModules
of each dataset are in :mod:`segmend.datamodules.semisup`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple, get_args

import numpy as np
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from segmend.datamodules.base import batch_split

TrainSet = Literal["full+weak", "full", "half_full", "full+weak_masks"]
MIXED_SETS = ("full+weak", "full+weak_masks")
MIXING = "F and W samples"


class SemiSupervisedSplit(NamedTuple):
    """Ids of the fully supervised set, the weak set and the half of F (each sorted)."""

    full: list[str]
    weak: list[str]
    half_full: list[str]


def check_num_full(num_full: int) -> None:
    """Refuse a size of F below 2: half of F, at least one image, trains the ancillary model.

    Raises:
        ValueError: Naming the value.

    """
    if num_full < 2:
        raise ValueError(f"num_full must be at least 2 (half of F trains the ancillary model), got {num_full}.")


def split_fully_and_weakly_supervised(
    ids: Iterable[str],
    num_full: int,
    seed: int = 0,
    pool: Iterable[str] | None = None,
) -> SemiSupervisedSplit:
    """Split a training set into F (``num_full`` ids drawn from ``pool``), W (the rest) and half of F.

    The pool is sorted and permuted with ``numpy.random.default_rng(seed)``; F is the first
    ``num_full`` ids of that permutation and half of F its first ⌊num_full/2⌋. So the split depends
    only on the id sets, ``num_full`` and ``seed`` (not on input order), half ⊂ F, and for one seed
    and pool a smaller F is a subset of a larger one (F_200 ⊂ F_400 ⊂ F_800).

    Args:
        ids: The whole training set (e.g. VOC train_aug); duplicates are dropped.
        num_full: Size of F.
        seed: Seed of the draw.
        pool: Candidates for F, a subset of ``ids`` (e.g. the VOC train list); ``None`` uses ``ids``.

    Returns:
        ``(full, weak, half_full)``, each sorted: F, W = ids minus F, and half of F.

    Raises:
        ValueError: If ``num_full`` is below 2 or above the pool size, or the pool holds ids that
            are not in the training set.

    """
    ids = list(dict.fromkeys(ids))
    id_set = set(ids)
    pool_ids = sorted(id_set if pool is None else set(pool))
    outside = [i for i in pool_ids if i not in id_set]
    if outside:
        raise ValueError(
            f"{len(outside)} of the {len(pool_ids)} candidate ids for F are not in the training set of "
            f"{len(ids)} ids (e.g. {outside[:3]}); draw F from a subset of the training set."
        )
    check_num_full(num_full)
    if num_full > len(pool_ids):
        raise ValueError(
            f"num_full={num_full} is larger than the pool of {len(pool_ids)} candidate ids for F "
            f"(training set: {len(ids)} ids); choose num_full <= {len(pool_ids)} or a larger pool."
        )
    order = np.random.default_rng(seed).permutation(len(pool_ids))
    drawn = [pool_ids[i] for i in order[:num_full]]
    full = set(drawn)
    return SemiSupervisedSplit(
        full=sorted(full),
        weak=[i for i in ids if i not in full],
        half_full=sorted(drawn[: num_full // 2]),
    )


class SemiSupervisedMixin:
    """F / W / half-of-F training sets and F+W mixed batches for any :class:`SegmentationDataModule`.

    A concrete DataModule inherits from this mixin first, then from its dataset's DataModule, calls
    :meth:`init_semisup` in ``__init__`` and implements :meth:`training_ids`, :meth:`full_pool_ids`
    and :meth:`subset`. Validation, test and predict are those of the dataset's DataModule.
    """

    num_full: int
    split_seed: int
    full_per_batch: int | None
    train_set: TrainSet

    def init_semisup(self, num_full: int, split_seed: int, full_per_batch: int | None, train_set: str) -> None:
        """Check and store the split settings.

        Raises:
            ValueError: For ``num_full`` below 2, an unknown ``train_set`` or a ``full_per_batch``
                that leaves no room for F or for W in a batch.

        """
        check_num_full(num_full)
        self.num_full = num_full
        self.split_seed = split_seed
        if full_per_batch is not None:
            batch_split(self.batch_size, 1, 1, full_per_batch, "full_per_batch", MIXING)  # checks it
        self.full_per_batch = full_per_batch
        self._split: SemiSupervisedSplit | None = None
        self.use_train_set(train_set)

    # ------------------------------------------------------------------ what subclasses provide
    def training_ids(self) -> list[str]:
        """Every training id (F and W together)."""
        raise NotImplementedError

    def full_pool_ids(self) -> list[str] | None:
        """Candidates for F (a subset of :meth:`training_ids`); ``None`` means all training ids."""
        return None

    def subset(self, name: str, ids: list[str], train: bool, with_masks: bool) -> Dataset:
        """A dataset of ``ids`` (``with_masks=False``: image and boxes only, masks never opened)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the split and the sets
    def semisup_split(self) -> SemiSupervisedSplit:
        """The F / W / half-of-F ids (computed once from the id lists, ``num_full`` and ``split_seed``)."""
        if self._split is None:
            self._split = split_fully_and_weakly_supervised(
                self.training_ids(), self.num_full, self.split_seed, self.full_pool_ids()
            )
        return self._split

    def use_train_set(self, name: str) -> None:
        """Switch what :meth:`train_dataloader` serves from now on (see the module docstring).

        Raises:
            ValueError: For a name that is not one of ``full+weak``, ``full``, ``half_full``,
                ``full+weak_masks``.

        """
        if name not in get_args(TrainSet):
            raise ValueError(f"train_set must be one of {get_args(TrainSet)}, got {name!r}.")
        self.train_set = name
        self.forget_dataset("train")

    def build_dataset(self, split: str, train: bool) -> Dataset:  # noqa: D102
        sets = {"full": (0, True), "weak": (1, False), "weak_masks": (1, True), "half_full": (2, True)}
        if split in sets:
            index, with_masks = sets[split]
            return self.subset(split, list(self.semisup_split()[index]), train, with_masks)
        if split == "train":
            if self.train_set in MIXED_SETS:  # the whole training set (the loaders keep F and W apart)
                return ConcatDataset([self.dataset("full", train), self.dataset(self.weak_set_name(), train)])
            return self.dataset(self.train_set, train)
        return super().build_dataset(split, train)

    def weak_set_name(self) -> str:
        """The W dataset of the current training set: ``weak_masks`` only for the fully supervised baseline."""
        return "weak_masks" if self.train_set == "full+weak_masks" else "weak"

    def batch_split(self) -> tuple[int, int]:
        """Numbers of F and W samples in a mixed training batch.

        With ``full_per_batch`` unset, F's share of the batch follows its share of F ∪ W (at least one
        sample of each).
        """
        split = self.semisup_split()
        weak, full = batch_split(
            self.batch_size, len(split.weak), len(split.full), self.full_per_batch, "full_per_batch", MIXING
        )
        return full, weak

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        """F, half of F, or (mixed sets) ``{"full": F loader, "weak": W loader}`` cycled together."""
        if self.train_set not in MIXED_SETS:
            return super().train_dataloader()
        full, weak = self.batch_split()
        return self.mixed_loaders(
            {"full": (self.dataset("full", True), full), "weak": (self.dataset(self.weak_set_name(), True), weak)}
        )
