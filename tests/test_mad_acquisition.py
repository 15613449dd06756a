"""segmend.mad.acquire: every strategy behind one interface, at the same budget."""

from __future__ import annotations

import numpy as np
import pytest

from segmend.mad import STRATEGIES, ContentBounds, PoolStats, acquire, register_strategy

N, C, BUDGET = 40, 4, 6


def pool(competitors: int = 2) -> PoolStats:
    rng = np.random.default_rng(0)
    fractions = np.zeros((N, C))
    fractions[np.arange(N), 1 + np.arange(N) % (C - 1)] = 0.3
    fractions[:, 0] = 0.7
    readable = np.ones(N, dtype=bool)
    readable[0] = False  # unreadable, with the most extreme statistics of all
    entropy, error_mass = rng.uniform(0, 1, N), rng.uniform(0, 1, N)
    entropy[0] = error_mass[0] = 99.0
    discrepancy = rng.uniform(0.1, 1, (competitors, N))
    discrepancy[:, 0] = -1.0
    return PoolStats(
        ids=[f"p{i:02d}" for i in range(N)],
        target_fractions=fractions,
        discrepancy=discrepancy,
        competitor_fractions=np.stack([fractions] * competitors) if competitors else None,
        readable=readable,
        scalars={"entropy": entropy, "error_mass": error_mass},
    )


def top(values: np.ndarray, stats: PoolStats, exclude: set[str], n: int) -> list[str]:
    order = [i for i in np.argsort(-values, kind="stable") if stats.readable[i] and stats.ids[i] not in exclude]
    return stats.ids[order[:n]].tolist()


@pytest.mark.parametrize("strategy", ["mad", "entropy", "random", "error_mass", "my_callable"])
def test_every_strategy_spends_the_same_budget_on_readable_unexcluded_images(strategy: str) -> None:
    stats = pool()
    exclude = {"p05", "p06"}
    chosen = acquire(
        (lambda s, budget, context: s.ids[np.flatnonzero(context.eligible)[:budget]].tolist())
        if strategy == "my_callable"
        else strategy,
        stats,
        BUDGET,
        exclude=exclude,
        bounds=ContentBounds.unbounded(C),
        n3=3,
    )
    assert len(chosen) == BUDGET == len(set(chosen))
    assert "p00" not in chosen and not exclude & set(chosen)


def test_entropy_and_error_mass_take_the_highest() -> None:
    stats = pool()
    assert acquire("entropy", stats, BUDGET) == top(stats.scalar("entropy"), stats, set(), BUDGET)
    assert acquire("error_mass", stats, BUDGET, exclude={"p01"}) == top(
        stats.scalar("error_mass"), stats, {"p01"}, BUDGET
    )


def test_error_mass_needs_no_competitor() -> None:
    stats = pool(competitors=0)
    assert len(acquire("error_mass", stats, BUDGET)) == BUDGET
    with pytest.raises(ValueError, match="at least one competitor"):
        acquire("mad", stats, BUDGET)


def test_random_is_seeded() -> None:
    stats = pool()
    assert acquire("random", stats, BUDGET, seed=1) == acquire("random", stats, BUDGET, seed=1)
    assert acquire("random", stats, BUDGET, seed=1) != acquire("random", stats, BUDGET, seed=2)
    assert len(acquire("random", stats, 100)) == N - 1  # every readable image, no more


def test_mad_takes_the_most_controversial_of_m_or_the_lowest_weak_scores() -> None:
    stats = pool()
    chosen = acquire("mad", stats, BUDGET, n3=2)
    lowest = np.nanmin(stats.discrepancy, axis=0)[stats.index_of(chosen)]
    assert (np.diff(lowest) >= 0).all()  # most controversial first
    candidates = acquire("mad", stats, 1000, n3=2)
    assert set(chosen) <= set(candidates)
    scores = {image: {"r1": 5 - i % 5, "r2": 5} for i, image in enumerate(candidates)}
    scores[candidates[4]]["r2"] = float("inf")  # out of domain although rated 1 by r1
    # 2 competitors x 3 classes x n3 = 2, less images both competitors pick; the reversed roles repeat them
    assert 10 <= len(candidates) <= 12
    with_scores = acquire("mad", stats, 2, n3=2, scores=scores)
    assert with_scores == [candidates[9], candidates[3]]  # MOS 3.0, then the 3.5 first in M's order


def test_registered_strategy_and_errors() -> None:
    stats = pool()
    register_strategy("first_readable", lambda s, budget, context: s.ids[context.eligible][:budget].tolist())
    try:
        assert acquire("first_readable", stats, 2) == ["p01", "p02"]
        with pytest.raises(ValueError, match="exists; pass overwrite=True"):
            register_strategy("first_readable", STRATEGIES["random"])
    finally:
        STRATEGIES.pop("first_readable")
    cases = [
        (lambda: acquire("margin", stats, 2), r"Unknown acquisition strategy 'margin'; expected one of"),
        (lambda: acquire("random", stats, -1), "budget must be"),
        (lambda: acquire(lambda s, b, c: ["p01", "p02", "p03"], stats, 2), "returned 3 ids .* budget of 2"),
        (lambda: acquire(lambda s, b, c: ["p01", "p01"], stats, 2), r"\(1 distinct\)"),
        (lambda: acquire(lambda s, b, c: ["p00"], stats, 2), r"excluded or unreadable images \['p00'\]"),
        (lambda: acquire(lambda s, b, c: ["zz"], stats, 2), r"not in the pool statistics: \['zz'\]"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    no_entropy = PoolStats(stats.ids, stats.target_fractions, readable=stats.readable)
    with pytest.raises(ValueError, match="no per-image 'entropy'"):
        acquire("entropy", no_entropy, 2)
