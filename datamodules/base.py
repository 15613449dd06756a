"""Shared DataModule plumbing: augmentation settings, datasets per stage, loaders."""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import partial
from typing import Any

import numpy as np
from lightning.pytorch import LightningDataModule
from segmend.datamodules.transforms import eval_transform, to_sample, train_transform
from segmend.datamodules.voc_format import voc_palette
from torch.utils.data import DataLoader, Dataset

from segmend.hparams import LoggedHyperparameters


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

    """

    class_names: tuple[str, ...] = ()
    palette: np.ndarray = voc_palette()

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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # every subclass's arguments too: logged beside the model's
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
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
        self.train_sample = partial(to_sample, train_transform(crop_size, scale_range, hflip, color_jitter, rotation))
        self.eval_sample = partial(to_sample, eval_transform())
        self.datasets: dict[str, Dataset] = {}

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
        """The dataset of ``split``, built once."""
        key = f"{split}:{'train' if train else 'eval'}"
        if key not in self.datasets:
            self.datasets[key] = self.build_dataset(split, train)
        return self.datasets[key]

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

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) > batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader(self.dataset("train", True), self.batch_size, shuffle=True)

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
