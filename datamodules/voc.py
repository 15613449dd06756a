"""The PASCAL VOC 2012 DataModule, optionally with SBD (``train_aug``).

The layout and its reader are in :mod:`segmend.datamodules.voc_reader`. ``train_aug`` (10582
images: SBD train+val and VOC train, minus VOC val) adds the masks of the Semantic Boundaries
Dataset; its reader is :class:`segmend.datamodules.sbd.VOCAugDataset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from segmend.datamodules.base import SegmentationDataModule
from segmend.datamodules.errors import MissingData, missing_roots_error
from segmend.datamodules.sbd import AugSource, VOCAugDataset, check_aug_source, train_aug_ids
from segmend.datamodules.voc_reader import SECTION, VOC_CLASSES, VOCSegmentationDataset, read_split_ids

TRAIN_AUG = "train_aug"


class VOCDataModule(SegmentationDataModule):
    """PASCAL VOC 2012 segmentation (21 classes) from ``VOCdevkit/VOC2012``, optionally with SBD (``train_aug``).

    Splits are the lists of ``ImageSets/Segmentation`` (``train``, ``val``, ``trainval``) or
    ``train_aug``: SBD train ∪ SBD val ∪ VOC train, minus VOC val (10582 images), images from VOC
    and masks and boxes from VOC where it has them, else from SBD (see
    :class:`segmend.datamodules.sbd.VOCAugDataset`).

    Args:
        root: The ``VOC2012`` folder (holding ``JPEGImages``, ``SegmentationClass``, ``ImageSets``).
        train_split: Id list used for training (``ImageSets/Segmentation/<name>.txt``) or ``train_aug``.
        val_split: Id list used for validation.
        test_split: Id list used for testing.
        mask_dir: Folder of VOC label PNGs.
        keep_difficult: Keep boxes flagged difficult (with ``with_boxes``).
        aug_source: Where ``train_aug`` masks of ids VOC did not segment come from: ``"sbd"`` (the
            SBD release at ``sbd_root``) or ``"png"`` (a pre-converted ``SegmentationClassAug``
            folder of PNGs inside ``root``).
        sbd_root: SBD's ``benchmark_RELEASE/dataset`` folder (holding ``img``, ``cls``, ``inst``,
            ``train.txt``, ``val.txt``). Required for ``train_aug`` with ``aug_source: sbd``; with
            ``aug_source: png`` it is optional and only supplies boxes of ids without an XML.
        aug_dir: Folder of ``root`` holding the pre-converted PNGs (``aug_source: png``).
        **kwargs: Loader and augmentation settings of :class:`SegmentationDataModule`.

    Raises:
        ValueError: For an unknown ``aug_source`` or ``train_aug`` from SBD without ``sbd_root``.

    """

    class_names = VOC_CLASSES

    def __init__(
        self,
        root: str = "data/VOCdevkit/VOC2012",
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
        mask_dir: str = "SegmentationClass",
        keep_difficult: bool = True,
        aug_source: AugSource = "sbd",
        sbd_root: str | None = None,
        aug_dir: str = "SegmentationClassAug",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_aug_source(aug_source, sbd_root, reads_train_aug=TRAIN_AUG in (train_split, val_split, test_split))
        self.root = Path(root)
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.mask_dir = mask_dir
        self.keep_difficult = keep_difficult
        self.aug_source = aug_source
        self.sbd_root = Path(sbd_root) if sbd_root is not None else None
        self.aug_dir = aug_dir

    def setup(self, stage: str) -> None:
        """Check that the data the stage needs is there (:meth:`check_data`), then build the datasets."""
        self.check_data(stage)
        super().setup(stage)

    def stage_splits(self, stage: str | None = None) -> set[str]:
        """Names of the splits (``ImageSets/Segmentation`` lists or ``train_aug``) a Trainer stage reads.

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"``, ``"predict"``, or ``None`` for every stage.

        """
        keys = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": (self.predict_split,)}
        wanted = keys[stage] if stage in keys else ("train", "val", "test", self.predict_split)
        return {self.splits.get(key, key) for key in wanted}

    def missing_data(self, stage: str | None = None) -> list[MissingData]:
        """Every folder and list the stage needs that is not on disk, with the argument leading to it.

        Checks ``root`` (``JPEGImages``, the mask folder, the split lists), and for ``train_aug``
        ``sbd_root`` (``cls``, ``train.txt``, ``val.txt``) or ``aug_dir``. Reads no sample.

        Args:
            stage: As in :meth:`stage_splits`.

        """
        splits = self.stage_splits(stage)
        root, sbd = self.root, self.sbd_root
        lists = {s for s in splits if s != TRAIN_AUG} | ({"train", "val"} if TRAIN_AUG in splits else set())
        mask_argument = ("root", root) if self.mask_dir == "SegmentationClass" else ("mask_dir", self.mask_dir)
        voc_folder = "VOCdevkit/VOC2012 of VOCtrainval_11-May-2012.tar"
        needed = [("root", root, root, f"the VOC2012 folder ({voc_folder}) holding JPEGImages, {self.mask_dir} and "
                   "ImageSets/Segmentation")]  # fmt: skip
        if root.is_dir():  # what is inside a folder is looked for only when the folder is there
            needed += [("root", root, root / "JPEGImages", "a folder of <id>.jpg images"),
                       (*mask_argument, root / self.mask_dir, "a folder of <id>.png label masks")]  # fmt: skip
            needed += [("root", root, root / "ImageSets/Segmentation" / f"{name}.txt",
                        f"the list of ids of split '{name}'") for name in sorted(lists)]  # fmt: skip
            if TRAIN_AUG in splits and self.aug_source == "png":
                expected = "the pre-converted SBD masks as <id>.png (SegmentationClassAug) inside root"
                needed.append(("aug_dir", self.aug_dir, root / self.aug_dir, expected))
        if TRAIN_AUG in splits and self.aug_source == "sbd" and sbd is not None:
            needed.append(("sbd_root", sbd, sbd, "SBD's benchmark_RELEASE/dataset folder (from benchmark.tgz) "
                           "holding cls, inst, train.txt and val.txt"))  # fmt: skip
            if sbd.is_dir():
                needed += [("sbd_root", sbd, sbd / "cls", "SBD's class masks as <id>.mat (GTcls)"),
                           ("sbd_root", sbd, sbd / "train.txt", "SBD's list of 'train' ids"),
                           ("sbd_root", sbd, sbd / "val.txt", "SBD's list of 'val' ids")]  # fmt: skip
        return [MissingData(*item) for item in needed if not item[2].exists()]

    def check_data(self, stage: str | None = None) -> None:
        """Raise one error naming every argument whose data is missing (see :meth:`missing_data`).

        Raises:
            FileNotFoundError: Listing, per argument (``root``, ``sbd_root``, ...), its value and each
                missing path with what was expected there.

        """
        missing = self.missing_data(stage)
        if missing:
            raise missing_roots_error(type(self).__name__, missing, SECTION)

    def train_aug_ids(self) -> list[str]:
        """The ``train_aug`` ids: augmented ids ∪ VOC train, minus VOC val (see :func:`sbd.train_aug_ids`)."""
        return train_aug_ids(self.root, self.aug_source, self.sbd_root, self.aug_dir)

    def split_ids(self, split: str) -> list[str]:
        """The ids of a split name: an ``ImageSets/Segmentation`` list or ``train_aug``."""
        return self.train_aug_ids() if split == TRAIN_AUG else read_split_ids(self.root, split)

    def make_dataset(
        self,
        name: str,
        ids: Sequence[str] | None,
        train: bool,
        with_masks: bool = True,
        with_sbd: bool = False,
    ) -> VOCSegmentationDataset:
        """A reader over ``ids`` (or the list ``name`` when ``ids`` is ``None``).

        Args:
            name: Split name (also the list read when ``ids`` is ``None``).
            ids: Ids to serve.
            train: Apply training augmentation (the ``train`` of :meth:`build_dataset`).
            with_masks: Read masks (``False`` for weak, image+boxes samples).
            with_sbd: Read through :class:`~segmend.datamodules.sbd.VOCAugDataset` (SBD / PNG
                masks for ids VOC did not segment, SBD instance boxes for ids without an XML).

        """
        kwargs = self.sample_kwargs(train)
        if with_sbd:
            return VOCAugDataset(
                self.root,
                name,
                self.class_names,
                ids=self.split_ids(name) if ids is None else ids,
                aug_source=self.aug_source,
                sbd_root=self.sbd_root,
                aug_dir=self.aug_dir,
                mask_dir=self.mask_dir,
                with_masks=with_masks,
                keep_difficult=self.keep_difficult,
                **kwargs,
            )
        return VOCSegmentationDataset(
            self.root,
            name,
            self.class_names,
            mask_dir=self.mask_dir,
            with_masks=with_masks,
            keep_difficult=self.keep_difficult,
            ids=ids,
            **kwargs,
        )

    def build_dataset(self, split: str, train: bool) -> Dataset:  # noqa: D102
        name = self.splits.get(split, split)
        return self.make_dataset(name, None, train, with_sbd=name == TRAIN_AUG)
