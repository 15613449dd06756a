from segmend.modules.arm import ARMModule
from segmend.modules.segmentation import SegmentationModule

__all__ = ["ARMModule", "SegmentationModule"]
