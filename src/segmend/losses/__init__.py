from segmend.losses.confidence import confidence_map, uncertainty_confidence
from segmend.losses.pixel import cross_entropy_map, gce_map, kl_uncertainty_map
from segmend.losses.reweighting import holder_optimal_weights, normalise_weights, weighted_sum

__all__ = [
    "confidence_map",
    "cross_entropy_map",
    "gce_map",
    "holder_optimal_weights",
    "kl_uncertainty_map",
    "normalise_weights",
    "uncertainty_confidence",
    "weighted_sum",
]
