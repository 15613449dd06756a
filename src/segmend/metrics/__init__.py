from segmend.metrics.segmentation import (
    ClassIoU,
    MeanClassAccuracy,
    MeanIoU,
    OverallAccuracy,
    segmentation_metrics,
)

__all__ = ["ClassIoU", "MeanClassAccuracy", "MeanIoU", "OverallAccuracy", "segmentation_metrics"]
