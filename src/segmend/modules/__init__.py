from segmend.modules.segmentation import SegmentationModule

__all__ = ["SegmentationModule"]
