"""The DataModules of self-correcting networks: PASCAL VOC, Cityscapes and the synthetic scenes split into F and W.

The split, the four training sets and the mixed F + W batches are those of
:mod:`segmend.datamodules.full_weak`; each DataModule here binds them to its dataset's reader.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from segmend.datamodules.cityscapes import Annotation, CityscapesDataModule, CityscapesDataset, LabelMode
from segmend.datamodules.full_weak import SemiSupervisedMixin, TrainSet, split_fully_and_weakly_supervised
from segmend.datamodules.sbd import check_aug_source
from segmend.datamodules.synthetic import SyntheticDataModule
from segmend.datamodules.voc import TRAIN_AUG, VOCDataModule
from segmend.datamodules.voc_reader import VOCSegmentationDataset, read_split_ids

__all__ = [
    "SemiSupervisedCityscapesDataModule",
    "SemiSupervisedSyntheticDataModule",
    "SemiSupervisedVOCDataModule",
    "split_fully_and_weakly_supervised",
]


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
            ``full+weak_masks`` (see :mod:`segmend.datamodules.full_weak`).
        full_pool: Split whose ids are the candidates for F (default: the VOC train list).
        weak_split: The whole training set; W is this minus F (default ``train_aug``).
        with_boxes: Add box masks (on by default: both F and W are box-annotated).
        **kwargs: Every other argument of :class:`VOCDataModule` (``root``, ``sbd_root``, ``aug_source``,
            ...; not ``train_split``, which is ``weak_split`` here) and :class:`SegmentationDataModule`.

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
        with_boxes: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(train_split=weak_split, with_boxes=with_boxes, **kwargs)
        if full_pool == TRAIN_AUG:
            check_aug_source(self.aug_source, self.sbd_root)
        self.full_pool = full_pool
        self.weak_split = weak_split
        self.init_semisup(num_full, split_seed, full_per_batch, train_set)

    @property
    def reads_train_aug(self) -> bool:
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
        return self.make_dataset(name, ids, train, with_masks=with_masks, with_sbd=self.reads_train_aug)


class SemiSupervisedSyntheticDataModule(SemiSupervisedMixin, SyntheticDataModule):
    """The synthetic scenes split into F (fine masks + boxes) and W (boxes only) for box-supervised training.

    F is drawn from the ``train`` split, W is the rest of it; validation is the fine ``val``
    split. With ``labels: coarse`` the F masks are the simulated coarse ones.

    Args:
        num_full: Size of F (at most ``num_train``).
        split_seed: Seed of the F / half-of-F draw.
        full_per_batch: F samples in each mixed training batch; ``None`` gives F its share.
        train_set: Initial training set (see :mod:`segmend.datamodules.full_weak`).
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
        return VOCSegmentationDataset(
            self.root, name, self.class_names, mask_dir=self.mask_dir("train"), with_masks=with_masks, ids=ids,
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
        train_set: Initial training set (see :mod:`segmend.datamodules.full_weak`).
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
        kwargs = self.sample_kwargs(train)
        splits, classes, annotation = self.training_splits(), self.classes, self.annotation
        return CityscapesDataset(self.root, splits, classes, annotation, with_masks=with_masks, ids=ids, **kwargs)

    def training_ids(self) -> list[str]:  # noqa: D102
        return self._reader(False, with_masks=False).ids

    def subset(self, name: str, ids: list[str], train: bool, with_masks: bool) -> Dataset:  # noqa: D102
        return self._reader(train, with_masks, ids)
