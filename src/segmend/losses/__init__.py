from segmend.losses.confidence import confidence_map, uncertainty_confidence
from segmend.losses.error_pixel import (
    balanced_error_loss,
    detail_loss,
    error_pixel_weights,
    error_proportion,
    error_target,
)
from segmend.losses.pixel import cross_entropy_map, gce_map, kl_uncertainty_map, loss_rank_cross_entropy
from segmend.losses.reweighting import holder_optimal_weights, normalise_weights, weighted_sum

__all__ = [
    "balanced_error_loss",
    "confidence_map",
    "cross_entropy_map",
    "detail_loss",
    "error_pixel_weights",
    "error_proportion",
    "error_target",
    "gce_map",
    "holder_optimal_weights",
    "kl_uncertainty_map",
    "loss_rank_cross_entropy",
    "normalise_weights",
    "uncertainty_confidence",
    "weighted_sum",
]
