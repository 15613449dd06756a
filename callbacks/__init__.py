"""Callbacks to compose into any Trainer: ``from segmend.callbacks import SegmentationImageLogger``."""

from segmend.callbacks.arm_curve import ARMCurveLogger
from segmend.callbacks.image_logger import SegmentationImageLogger
from segmend.callbacks.mad import MADTroubleshooting
from segmend.callbacks.prediction_writer import SegmentationPredictionWriter

__all__ = ["ARMCurveLogger", "MADTroubleshooting", "SegmentationImageLogger", "SegmentationPredictionWriter"]
