"""DataModules and readers: ``from segmend.datamodules import SyntheticDataModule``."""

from segmend.datamodules.base import SegmentationDataModule
from segmend.datamodules.cityscapes import CityscapesDataModule, CityscapesDataset
from segmend.datamodules.synthetic import SyntheticDataModule
from segmend.datamodules.voc import VOCDataModule, VOCSegmentationDataset

__all__ = [
    "CityscapesDataModule",
    "CityscapesDataset",
    "SegmentationDataModule",
    "SyntheticDataModule",
    "VOCDataModule",
    "VOCSegmentationDataset",
]
