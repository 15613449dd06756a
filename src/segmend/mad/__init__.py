"""The MAD troubleshooting algorithm as plain functions over per-image statistics.

No model and no Lightning: the loop's callback computes the per-image statistics during
inference (:mod:`segmend.mad.discrepancy`), gathers them into a :class:`PoolStats`, and calls
these functions to build M, S and T, account for the annotation cost and compare strategies.
See ``docs/mad.md``.
"""

from segmend.mad.acquisition import (
    STRATEGIES,
    AcquisitionContext,
    Strategy,
    acquire,
    register_strategy,
)
from segmend.mad.cost import DENSE_SECONDS, WEAK_SECONDS, AnnotationCost, annotation_cost
from segmend.mad.discrepancy import (
    batch_discrepancy,
    class_fractions,
    discrepancy,
    mean_pixel_entropy,
    pair_confusion,
)
from segmend.mad.partition import (
    BOUND_STATISTICS,
    ContentBounds,
    content_bounds,
    content_bounds_from_masks,
    main_foreground_class,
    subgroup_membership,
)
from segmend.mad.scores import (
    OUT_OF_DOMAIN,
    counterexample_set,
    mean_opinion_scores,
    out_of_domain,
    validate_scores,
)
from segmend.mad.selection import Selection, select_candidates
from segmend.mad.stability import model_scores_at, ranking_stability
from segmend.mad.stats import ImageStats, PoolStats
from segmend.mad.testset import unbiased_test_set

__all__ = [
    "BOUND_STATISTICS",
    "DENSE_SECONDS",
    "OUT_OF_DOMAIN",
    "STRATEGIES",
    "WEAK_SECONDS",
    "AcquisitionContext",
    "AnnotationCost",
    "ContentBounds",
    "ImageStats",
    "PoolStats",
    "Selection",
    "Strategy",
    "acquire",
    "annotation_cost",
    "batch_discrepancy",
    "class_fractions",
    "content_bounds",
    "content_bounds_from_masks",
    "counterexample_set",
    "discrepancy",
    "main_foreground_class",
    "mean_opinion_scores",
    "mean_pixel_entropy",
    "model_scores_at",
    "out_of_domain",
    "pair_confusion",
    "ranking_stability",
    "register_strategy",
    "select_candidates",
    "subgroup_membership",
    "unbiased_test_set",
    "validate_scores",
]
