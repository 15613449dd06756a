"""Acquisition strategies behind one interface: which pool images get labelled, at a fixed budget.

``acquire(strategy, stats, budget, ...)`` returns at most ``budget`` image ids. Every strategy sees
the same :class:`~segmend.mad.stats.PoolStats` and never returns an unreadable or excluded image, so
strategies compared at the same budget differ only in how they rank (paper Table 2):

* ``mad`` (default): Algorithm 1. M from :func:`~segmend.mad.selection.select_candidates`, then the
  ``budget`` lowest mean opinion scores (S) when weak scores are given; without scores, M's most
  controversial images (lowest discrepancy over the competitors) - MAD without the weak-label filter.
* ``entropy``: the highest mean pixel entropy (scalar ``entropy``; Joshi et al. 2009, paper Sect. 4.4).
* ``error_mass``: the highest error mass predicted by an error-prediction branch (scalar
  ``error_mass``); needs no competitor.
* ``random``: uniform, seeded.
* any callable ``(stats, budget, context) -> ids``, or a name registered with :func:`register_strategy`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from segmend.mad.partition import ContentBounds
from segmend.mad.scores import Scores, counterexample_set
from segmend.mad.selection import lowest, select_candidates
from segmend.mad.stats import PoolStats


@dataclass(frozen=True)
class AcquisitionContext:
    """What a strategy may use besides the pool statistics.

    Attributes:
        eligible: (N,) bool, readable and not excluded; a strategy returns only these rows' ids.
        seed: seed for strategies that draw at random.
        bounds: content bounds for ``mad`` (``None``: unbounded, partition by predicted classes only).
        n3: images per subgroup for ``mad``.
        scores: weak scores of M for ``mad`` (``image id -> {rater -> score}``), or ``None``.

    """

    eligible: np.ndarray
    seed: int = 0
    bounds: ContentBounds | None = None
    n3: int = 25
    scores: Scores | None = None


Strategy = Callable[[PoolStats, int, AcquisitionContext], Sequence[str]]


def highest(stats: PoolStats, name: str, budget: int, context: AcquisitionContext) -> list[str]:
    """The ``budget`` eligible images with the highest scalar ``name`` (NaN never chosen; ties by pool order)."""
    values = stats.scalar(name)
    rows = np.flatnonzero(context.eligible & np.isfinite(values))
    return stats.ids[lowest(-values, rows, budget)].tolist()


def mad_strategy(stats: PoolStats, budget: int, context: AcquisitionContext) -> list[str]:
    """MAD: S from the weak scores of M, or M's most controversial images without scores."""
    bounds = context.bounds or ContentBounds.unbounded(stats.num_classes)
    candidates = select_candidates(stats, bounds, context.n3).ids
    rows = stats.index_of(candidates)
    rows = rows[context.eligible[rows]]
    if context.scores is not None:
        return counterexample_set(context.scores, budget, images=stats.ids[rows].tolist())
    most_controversial = np.nanmin(stats.discrepancy[:, rows], axis=0) if rows.size else np.zeros(0)  # (|M|,)
    order = np.argsort(most_controversial, kind="stable")[:budget]
    return stats.ids[rows[order]].tolist()


def entropy_strategy(stats: PoolStats, budget: int, context: AcquisitionContext) -> list[str]:
    """The highest mean pixel entropy."""
    return highest(stats, "entropy", budget, context)


def error_mass_strategy(stats: PoolStats, budget: int, context: AcquisitionContext) -> list[str]:
    """The highest predicted error mass."""
    return highest(stats, "error_mass", budget, context)


def random_strategy(stats: PoolStats, budget: int, context: AcquisitionContext) -> list[str]:
    """A uniform draw without replacement, seeded."""
    rows = np.flatnonzero(context.eligible)
    chosen = np.random.default_rng(context.seed).choice(rows, size=min(budget, rows.size), replace=False)
    return stats.ids[chosen].tolist()


STRATEGIES: dict[str, Strategy] = {
    "mad": mad_strategy,
    "entropy": entropy_strategy,
    "random": random_strategy,
    "error_mass": error_mass_strategy,
}


def register_strategy(name: str, strategy: Strategy, overwrite: bool = False) -> None:
    """Make ``strategy`` available to :func:`acquire` (and configs) under ``name``.

    Raises:
        ValueError: If ``name`` is taken and ``overwrite`` is False.

    """
    if name in STRATEGIES and not overwrite:
        raise ValueError(f"An acquisition strategy named {name!r} exists; pass overwrite=True to replace it.")
    STRATEGIES[name] = strategy


def acquire(
    strategy: str | Strategy,
    stats: PoolStats,
    budget: int,
    *,
    exclude: Collection[str] = (),
    seed: int = 0,
    bounds: ContentBounds | None = None,
    n3: int = 25,
    scores: Scores | None = None,
) -> list[str]:
    """Choose at most ``budget`` pool images to label.

    Args:
        strategy: a name in :data:`STRATEGIES` (``mad``, ``entropy``, ``random``, ``error_mass``) or a
            callable ``(stats, budget, context) -> ids``.
        stats: the pool statistics.
        budget: number of images to label.
        exclude: ids never chosen (e.g. already labelled ones).
        seed: seed for random strategies.
        bounds: content bounds for ``mad``.
        n3: images per subgroup for ``mad``.
        scores: weak scores of M for ``mad``.

    Returns:
        The chosen ids, in the strategy's order (fewer than ``budget`` only if fewer are eligible).

    Raises:
        ValueError: If the strategy is unknown, ``budget`` is negative, a statistic the strategy needs
            is missing, or the strategy returns ids that are unknown, repeated, excluded, unreadable or
            over budget.

    """
    if budget < 0:
        raise ValueError(f"budget must be a non-negative number of images; found {budget}.")
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ValueError(f"Unknown acquisition strategy {strategy!r}; expected one of {sorted(STRATEGIES)}.")
        name, function = strategy, STRATEGIES[strategy]
    else:
        name, function = getattr(strategy, "__name__", repr(strategy)), strategy
    eligible = stats.readable & ~stats.mask_of(exclude)
    context = AcquisitionContext(eligible=eligible, seed=seed, bounds=bounds, n3=n3, scores=scores)
    chosen = list(function(stats, budget, context))
    if len(chosen) > budget or len(set(chosen)) != len(chosen):
        raise ValueError(
            f"Strategy {name!r} returned {len(chosen)} ids ({len(set(chosen))} distinct) for a budget of {budget}; "
            "expected at most the budget, without repeats."
        )
    rows = stats.index_of(chosen)
    if not eligible[rows].all():
        bad = [image for image, ok in zip(chosen, eligible[rows], strict=True) if not ok]
        raise ValueError(f"Strategy {name!r} returned excluded or unreadable images {bad[:10]}.")
    return chosen
