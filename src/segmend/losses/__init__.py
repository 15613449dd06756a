from segmend.losses.confidence import confidence_map
from segmend.losses.reweighting import normalise_weights, weighted_sum

__all__ = ["confidence_map", "normalise_weights", "weighted_sum"]
