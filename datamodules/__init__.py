"""DataModules and readers: ``from segmend.datamodules import SyntheticDataModule``."""

from segmend.datamodules.ade20k import ADE20KDataModule, ADE20KDataset
from segmend.datamodules.base import SegmentationDataModule
from segmend.datamodules.cityscapes import CityscapesDataModule, CityscapesDataset
from segmend.datamodules.errors import DataFormatError, DatasetNotFoundError
from segmend.datamodules.pool import ImageFolderPool, ImageFolderPoolDataModule
from segmend.datamodules.reader import SegmentationReader
from segmend.datamodules.sbd import SBDDataset, VOCAugDataset
from segmend.datamodules.semisup import (
    SemiSupervisedCityscapesDataModule,
    SemiSupervisedSyntheticDataModule,
    SemiSupervisedVOCDataModule,
    split_fully_and_weakly_supervised,
)
from segmend.datamodules.synthetic import SyntheticDataModule
from segmend.datamodules.voc import VOCDataModule
from segmend.datamodules.voc_reader import VOCSegmentationDataset

__all__ = [
    "ADE20KDataModule",
    "ADE20KDataset",
    "CityscapesDataModule",
    "CityscapesDataset",
    "DataFormatError",
    "DatasetNotFoundError",
    "ImageFolderPool",
    "ImageFolderPoolDataModule",
    "SBDDataset",
    "SegmentationDataModule",
    "SegmentationReader",
    "SemiSupervisedCityscapesDataModule",
    "SemiSupervisedSyntheticDataModule",
    "SemiSupervisedVOCDataModule",
    "SyntheticDataModule",
    "VOCAugDataset",
    "VOCDataModule",
    "VOCSegmentationDataset",
    "split_fully_and_weakly_supervised",
]
