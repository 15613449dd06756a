from segmend.losses.confidence import confidence_map
from segmend.losses.reweighting import holder_optimal_weights, normalise_weights, weighted_sum

__all__ = ["confidence_map", "holder_optimal_weights", "normalise_weights", "weighted_sum"]
