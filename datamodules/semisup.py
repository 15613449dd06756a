"""The semi-supervised split of self-correcting networks: a fully supervised set F and a weak set W.

F (image + mask + boxes) is a seeded subset of ``num_full`` ids drawn from a candidate pool (for
VOC: the 1464 VOC train images; the paper uses 200/400/800/1464), W (image + boxes, masks never
read) is the rest of the training set (for VOC: train_aug minus F), and "half of F", on which the
ancillary model is trained first, is a seeded subset of ⌊|F|/2⌋ ids of F. The same function serves
Cityscapes (e.g. 914 of the 2975 train images).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
from segmend.datamodules.voc import TRAIN_AUG, AugSource, VOCDataModule
from segmend.datamodules.voc_format import BoxAnnotation
from torch.utils.data import ConcatDataset, Dataset


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


class SemiSupervisedVOCDataModule(VOCDataModule):
    """PASCAL VOC with the F/W split of self-correcting networks; training serves F then W, concatenated.

    A subclass of :class:`VOCDataModule` (not a ``mode`` of it) so its F/W arguments are only
    accepted where they mean something. Training samples of F carry image, mask and boxes
    (``has_mask`` true); samples of W carry image and boxes only (``has_mask`` false, mask all 255),
    read with ``with_masks=False`` so W mask files are never opened. The training loader is a plain
    shuffled loader over ``ConcatDataset([F, W])``; mixing F and W at a fixed ratio per batch is
    left to a sampler. Validation and test are the VOC lists, as in :class:`VOCDataModule`.

    Args:
        num_full: Size of F (200, 400, 800 or 1464 in the paper's VOC settings).
        split_seed: Seed of the F / half-of-F draw (independent of ``seed_everything``).
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
        if num_full < 2:
            raise ValueError(f"num_full must be at least 2 (half of F trains the ancillary model), got {num_full}.")
        if full_pool == TRAIN_AUG:
            self._check_aug_arguments()
        self.num_full = num_full
        self.split_seed = split_seed
        self.full_pool = full_pool
        self.weak_split = weak_split
        self._split: SemiSupervisedSplit | None = None

    @property
    def augmented(self) -> bool:
        """Whether the sets are read with SBD / PNG masks (when ``train_aug`` is involved)."""
        return TRAIN_AUG in (self.weak_split, self.full_pool)

    def semisup_split(self) -> SemiSupervisedSplit:
        """The F / W / half-of-F ids (computed once from the id lists, the size and the seed)."""
        if self._split is None:
            self._split = split_fully_and_weakly_supervised(
                self.split_ids(self.weak_split), self.num_full, self.split_seed, self.split_ids(self.full_pool)
            )
        return self._split

    def build_dataset(self, split: str, train: bool) -> Dataset:  # noqa: D102
        if split == "train":
            return ConcatDataset([self.full_dataset(train), self.weak_dataset(train)])
        sets = {"full": (0, True), "weak": (1, False), "half_full": (2, True)}
        if split in sets:
            index, with_masks = sets[split]
            ids = self.semisup_split()[index]
            return self.make_dataset(split, ids, train, with_masks=with_masks, augmented=self.augmented)
        return super().build_dataset(split, train)

    def full_dataset(self, train: bool = True) -> Dataset:
        """F: image, mask and boxes of ``num_full`` ids."""
        return self.dataset("full", train)

    def weak_dataset(self, train: bool = True) -> Dataset:
        """W: image and boxes (no mask read) of the training set minus F."""
        return self.dataset("weak", train)

    def half_full_dataset(self, train: bool = True) -> Dataset:
        """Half of F (⌊|F|/2⌋ ids, a subset of F): the ancillary model's training set."""
        return self.dataset("half_full", train)

    def boxes(self, sample_id: str, split: str = "train") -> list[BoxAnnotation]:
        """Object boxes (0-based inclusive) of ``sample_id``; for ``train``, from F or W, whichever holds it."""
        if split == "train":
            split = "full" if sample_id in set(self.semisup_split().full) else "weak"
        return super().boxes(sample_id, split)
