"""The semi-supervised split of self-correcting networks: a fully supervised set F and a weak set W.

F (image + mask + boxes) is a seeded subset of ``num_full`` ids drawn from a candidate pool (for
VOC: the 1464 VOC train images; the paper uses 200/400/800/1464), W (image + boxes, masks never
read) is the rest of the training set (for VOC: train_aug minus F), and "half of F", on which the
ancillary model is trained first, is a seeded subset of ⌊|F|/2⌋ ids of F. The same function serves
Cityscapes (e.g. 914 of the 2975 train images) and the synthetic scenes.

The DataModules here serve one of four training sets, switched with ``use_train_set`` between the
stages of a self-correction run:

- ``half_full``: half of F (stage 1, the ancillary model);
- ``full``: F (stage 2, primary + convolutional self-correction; also the "F only" baseline);
- ``full+weak``: every batch holds ``full_per_batch`` F samples and the rest W samples (main stage);
- ``full+weak_masks``: the same mixing with W read *with* its masks: the fully supervised upper
  bound, the only set that ever opens a W mask file.

The mixed sets are a dict of two loaders, ``{"full": ..., "weak": ...}``, which Lightning cycles
together (``max_size_cycle``: an epoch is one pass over the longer loader, usually W) and, under
DDP, shards each with its own distributed sampler; ``on_before_batch_transfer`` concatenates the
two halves into one batch of segmend's batch contract before the module sees it. Each loader draws
its order and augmentation from its own seeded stream (``full`` / ``weak``), and the shorter one
gets a new order in each pass within an epoch (:mod:`segmend.datamodules.seeding`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
import torch
from segmend.datamodules.cityscapes import Annotation, CityscapesDataModule, CityscapesDataset, LabelMode
from segmend.datamodules.synthetic import SyntheticDataModule
from segmend.datamodules.voc import TRAIN_AUG, AugSource, VOCDataModule, VOCSegmentationDataset, read_split_ids
from segmend.datamodules.voc_format import BoxAnnotation
from torch.utils.data import ConcatDataset, DataLoader, Dataset

TrainSet = Literal["full+weak", "full", "half_full", "full+weak_masks"]
MIXED_SETS = ("full+weak", "full+weak_masks")


class SemiSupervisedSplit(NamedTuple):
    """Ids of the fully supervised set, the weak set and the half of F (each sorted)."""

    full: list[str]
    weak: list[str]
    half_full: list[str]


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
    if num_full < 2:
        raise ValueError(f"num_full must be at least 2 (half of F trains the ancillary model), got {num_full}.")
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
        if num_full < 2:
            raise ValueError(f"num_full must be at least 2 (half of F trains the ancillary model), got {num_full}.")
        self.num_full = num_full
        self.split_seed = split_seed
        batch_size = self.batch_size
        if full_per_batch is not None and not 1 <= full_per_batch < batch_size:
            raise ValueError(
                f"full_per_batch={full_per_batch} must be in [1, batch_size - 1] = [1, {batch_size - 1}] so every "
                "batch holds both F and W samples; use null for a share proportional to the set sizes."
            )
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
        for key in [k for k in self.datasets if k.startswith("train:")]:
            del self.datasets[key]

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

    def full_dataset(self, train: bool = True) -> Dataset:
        """F: image, mask and boxes of ``num_full`` ids."""
        return self.dataset("full", train)

    def weak_dataset(self, train: bool = True) -> Dataset:
        """W: image and boxes (no mask read) of the training ids not in F."""
        return self.dataset("weak", train)

    def half_full_dataset(self, train: bool = True) -> Dataset:
        """Half of F (⌊|F|/2⌋ ids, a subset of F): the ancillary model's training set."""
        return self.dataset("half_full", train)

    def batch_split(self) -> tuple[int, int]:
        """Numbers of F and W samples in a mixed training batch.

        With ``full_per_batch`` unset, F's share of the batch follows its share of F ∪ W (at least one
        sample of each).
        """
        batch_size = self.batch_size
        if batch_size < 2:
            raise ValueError("Mixed F + W batches need batch_size >= 2 (one F and one W sample at least).")
        full = self.full_per_batch
        if full is None:
            split = self.semisup_split()
            share = len(split.full) / (len(split.full) + len(split.weak))
            full = min(max(round(share * batch_size), 1), batch_size - 1)
        return full, batch_size - full

    def train_dataloader(self) -> DataLoader | dict[str, DataLoader]:
        """F, half of F, or (mixed sets) ``{"full": F loader, "weak": W loader}`` cycled together."""
        if self.train_set not in MIXED_SETS:
            return super().train_dataloader()
        full, weak = self.batch_split()
        return {
            "full": self._loader(self.dataset("full", True), full, shuffle=True, stream="full"),
            "weak": self._loader(self.dataset(self.weak_set_name(), True), weak, shuffle=True, stream="weak"),
        }

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Concatenate the F and W halves of a mixed training batch into one batch (F samples first)."""
        if isinstance(batch, dict) and set(batch) == {"full", "weak"}:
            return merge_batches([batch["full"], batch["weak"]])
        return batch


class SemiSupervisedVOCDataModule(SemiSupervisedMixin, VOCDataModule):
    """PASCAL VOC with the F/W split of self-correcting networks.

    A subclass of :class:`VOCDataModule` (not a ``mode`` of it) so its F/W arguments are only
    accepted where they mean something. F samples carry image, mask and boxes (``has_mask``
    true); W samples carry image and boxes only (``has_mask`` false, mask all 255), read with
    ``with_masks=False`` so W mask files are never opened (except in ``full+weak_masks``, the fully
    supervised baseline). Validation and test are the VOC lists, as in :class:`VOCDataModule`.

    Args:
        num_full: Size of F (200, 400, 800 or 1464 in the paper's VOC settings).
        split_seed: Seed of the F / half-of-F draw (independent of ``seed_everything``).
        full_per_batch: F samples in each mixed training batch (the rest are W); ``None`` gives F
            its share of F ∪ W.
        train_set: Initial training set: ``full+weak``, ``full``, ``half_full`` or
            ``full+weak_masks`` (see :mod:`segmend.datamodules.semisup`).
        full_pool: Split whose ids are the candidates for F (default: the VOC train list).
        weak_split: The whole training set; W is this minus F (default ``train_aug``).
        root: The ``VOC2012`` folder.
        val_split: Id list used for validation.
        test_split: Id list used for testing.
        mask_dir: Folder of VOC label PNGs.
        keep_difficult: Keep boxes flagged difficult.
        aug_source: ``"sbd"`` or ``"png"`` (see :class:`VOCDataModule`).
        sbd_root: SBD's ``benchmark_RELEASE/dataset`` folder.
        aug_dir: Folder of ``root`` with pre-converted PNG masks.
        with_boxes: Add box masks (on by default: both F and W are box-annotated).
        **kwargs: Loader and augmentation settings of :class:`SegmentationDataModule`.

    Raises:
        ValueError: If ``num_full`` is below 2 (at construction) or above the pool size (when the
            split is first needed, with both sizes).

    """

    def __init__(
        self,
        num_full: int = 1464,
        split_seed: int = 0,
        full_per_batch: int | None = None,
        train_set: TrainSet = "full+weak",
        full_pool: str = "train",
        weak_split: str = TRAIN_AUG,
        root: str = "data/VOCdevkit/VOC2012",
        val_split: str = "val",
        test_split: str = "val",
        mask_dir: str = "SegmentationClass",
        keep_difficult: bool = True,
        aug_source: AugSource = "sbd",
        sbd_root: str | None = None,
        aug_dir: str = "SegmentationClassAug",
        with_boxes: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            root=root,
            train_split=weak_split,
            val_split=val_split,
            test_split=test_split,
            mask_dir=mask_dir,
            keep_difficult=keep_difficult,
            aug_source=aug_source,
            sbd_root=sbd_root,
            aug_dir=aug_dir,
            with_boxes=with_boxes,
            **kwargs,
        )
        if full_pool == TRAIN_AUG:
            self._check_aug_arguments()
        self.full_pool = full_pool
        self.weak_split = weak_split
        self.init_semisup(num_full, split_seed, full_per_batch, train_set)

    @property
    def augmented(self) -> bool:
        """Whether the sets are read with SBD / PNG masks (when ``train_aug`` is involved)."""
        return TRAIN_AUG in (self.weak_split, self.full_pool)

    def stage_splits(self, stage: str | None = None) -> set[str]:
        """The VOC DataModule's splits of ``stage``, plus ``full_pool`` when training."""
        splits = super().stage_splits(stage)
        return splits | {self.full_pool} if stage in (None, "fit") else splits

    def training_ids(self) -> list[str]:  # noqa: D102
        self.check_data("fit")  # every missing root at once, before any list is read
        return self.split_ids(self.weak_split)

    def full_pool_ids(self) -> list[str]:  # noqa: D102
        return self.split_ids(self.full_pool)

    def subset(self, name: str, ids: list[str], train: bool, with_masks: bool) -> Dataset:  # noqa: D102
        return self.make_dataset(name, ids, train, with_masks=with_masks, augmented=self.augmented)

    def boxes(self, sample_id: str, split: str = "train") -> list[BoxAnnotation]:
        """Object boxes (0-based inclusive) of ``sample_id``; for ``train``, from F or W, whichever holds it."""
        if split == "train":
            split = "full" if sample_id in set(self.semisup_split().full) else "weak"
        return super().boxes(sample_id, split)


class SemiSupervisedSyntheticDataModule(SemiSupervisedMixin, SyntheticDataModule):
    """The synthetic scenes split into F (fine masks + boxes) and W (boxes only) for box-supervised training.

    F is drawn from the ``train`` split, W is the rest of it; validation is the fine ``val``
    split. With ``labels: coarse`` the F masks are the simulated coarse ones.

    Args:
        num_full: Size of F (at most ``num_train``).
        split_seed: Seed of the F / half-of-F draw.
        full_per_batch: F samples in each mixed training batch; ``None`` gives F its share.
        train_set: Initial training set (see :mod:`segmend.datamodules.semisup`).
        with_boxes: Add box masks (on by default).
        **kwargs: Arguments of :class:`SyntheticDataModule` (``num_train``, ``image_size``, ...).

    """

    def __init__(
        self,
        num_full: int = 40,
        split_seed: int = 0,
        full_per_batch: int | None = None,
        train_set: TrainSet = "full+weak",
        with_boxes: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(with_boxes=with_boxes, **kwargs)
        self.init_semisup(num_full, split_seed, full_per_batch, train_set)

    def training_ids(self) -> list[str]:  # noqa: D102
        self.prepare_data()
        return read_split_ids(self.root, "train")

    def subset(self, name: str, ids: list[str], train: bool, with_masks: bool) -> Dataset:  # noqa: D102
        self.prepare_data()
        mask_dir = "SegmentationClassCoarse" if self.labels == "coarse" else "SegmentationClass"
        return VOCSegmentationDataset(
            self.root, name, self.class_names, mask_dir=mask_dir, with_masks=with_masks, ids=ids,
            **self.sample_kwargs(train),
        )  # fmt: skip


class SemiSupervisedCityscapesDataModule(SemiSupervisedMixin, CityscapesDataModule):
    """Cityscapes split into F (labels + boxes) and W (boxes only), by default the paper's 11 object classes.

    F is ``num_full`` images drawn from the training split (914 of the 2975 ``train`` images in the
    paper), W is the rest. W boxes come from the instanceIds / polygons files; W label files are
    never opened (except in ``full+weak_masks``).

    Args:
        num_full: Size of F.
        split_seed: Seed of the F / half-of-F draw.
        full_per_batch: F samples in each mixed training batch; ``None`` gives F its share.
        train_set: Initial training set (see :mod:`segmend.datamodules.semisup`).
        root: Folder holding ``leftImg8bit`` and ``gtFine``.
        classes: Label mode (``objects11`` as in the paper, or ``trainid19``).
        annotation: Labels of F (``fine`` in the paper).
        with_boxes: Add box masks (on by default).
        **kwargs: Other arguments of :class:`CityscapesDataModule` and :class:`SegmentationDataModule`.

    """

    def __init__(
        self,
        num_full: int = 914,
        split_seed: int = 0,
        full_per_batch: int | None = None,
        train_set: TrainSet = "full+weak",
        root: str = "data/cityscapes",
        classes: LabelMode = "objects11",
        annotation: Annotation = "fine",
        with_boxes: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, classes=classes, annotation=annotation, with_boxes=with_boxes, **kwargs)
        self.init_semisup(num_full, split_seed, full_per_batch, train_set)

    def _reader(self, train: bool, with_masks: bool, ids: list[str] | None = None) -> CityscapesDataset:
        names: tuple[str, ...] = (self.splits["train"], *(("train_extra",) if self.use_train_extra else ()))
        return CityscapesDataset(
            self.root, names, self.classes, self.annotation, with_masks=with_masks, ids=ids, **self.sample_kwargs(train)
        )

    def training_ids(self) -> list[str]:  # noqa: D102
        return self._reader(False, with_masks=False).ids

    def subset(self, name: str, ids: list[str], train: bool, with_masks: bool) -> Dataset:  # noqa: D102
        return self._reader(train, with_masks, ids)
