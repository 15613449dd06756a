from segmend.metrics.error_pixel import (
    ErrorPixelIoU,
    ErrorThresholdSweep,
    HardErrorRecall,
    sweep_figure,
    sweep_markdown,
    write_sweep,
)
from segmend.metrics.segmentation import (
    ClassIoU,
    MeanClassAccuracy,
    MeanIoU,
    OverallAccuracy,
    segmentation_metrics,
)

__all__ = [
    "ClassIoU",
    "ErrorPixelIoU",
    "ErrorThresholdSweep",
    "HardErrorRecall",
    "MeanClassAccuracy",
    "MeanIoU",
    "OverallAccuracy",
    "segmentation_metrics",
    "sweep_figure",
    "sweep_markdown",
    "write_sweep",
]
