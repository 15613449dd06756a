"""Ranking stability over the size of the test set (paper Sect. 4.3, Fig. 7).

The models are ranked by their performance on the first k test images, for several k, and each
ranking is compared with the ranking at the largest k by Spearman's rank correlation (SRCC).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy.stats import ConstantInputWarning, spearmanr

Aggregate = Callable[[np.ndarray], float]


def model_scores_at(per_image: Mapping[str, np.ndarray], k: int, aggregate: Aggregate = np.mean) -> dict[str, float]:
    """Each model's performance on the first ``k`` test images.

    Args:
        per_image: model name -> (n, ...) per-image results in the test set's order (per-image mIoU,
            or per-image confusion matrices with an ``aggregate`` that sums them into a dataset mIoU).
        k: number of images.
        aggregate: maps a model's first ``k`` rows to one number (higher = better); default: mean.

    Returns:
        model name -> performance.

    """
    return {name: float(aggregate(np.asarray(values)[:k])) for name, values in per_image.items()}


def ranking_stability(
    per_image: Mapping[str, Sequence[float] | np.ndarray],
    ks: Sequence[int] | None = None,
    reference_k: int | None = None,
    aggregate: Aggregate = np.mean,
) -> dict[int, float]:
    """SRCC between the model ranking on the first k images and the ranking on the first ``reference_k``.

    Args:
        per_image: model name -> (n, ...) per-image results in the test set's order, n equal for all.
        ks: sizes to compare; ``None`` = 1 .. reference_k - 1 (paper: 20 .. 39 against 40).
        reference_k: the reference size; ``None`` = n, all images.
        aggregate: see :func:`model_scores_at`.

    Returns:
        k -> SRCC in [-1, 1] (NaN where every model scores the same at k, as spearmanr gives).

    Raises:
        ValueError: With fewer than two models, unequal numbers of images or a k outside 1..n.

    """
    arrays = {name: np.asarray(values) for name, values in per_image.items()}
    if len(arrays) < 2:
        raise ValueError(f"A ranking needs at least two models; found {len(arrays)}.")
    sizes = {name: values.shape[0] for name, values in arrays.items()}
    n = next(iter(sizes.values()))
    if len(set(sizes.values())) != 1:
        raise ValueError(f"Every model must be scored on the same test images; found numbers of images {sizes}.")
    reference_k = n if reference_k is None else reference_k
    ks = list(range(1, reference_k)) if ks is None else list(ks)
    bad = [k for k in [*ks, reference_k] if not 1 <= k <= n]
    if bad:
        raise ValueError(f"Sizes {bad} are outside 1..{n}, the number of test images.")
    names = sorted(arrays)
    reference = model_scores_at(arrays, reference_k, aggregate)
    reference_vector = [reference[name] for name in names]
    result = {}
    for k in ks:
        at_k = model_scores_at(arrays, k, aggregate)
        with warnings.catch_warnings():  # tied models at k: NaN, as documented
            warnings.simplefilter("ignore", ConstantInputWarning)
            result[k] = float(spearmanr([at_k[name] for name in names], reference_vector).statistic)
    return result
