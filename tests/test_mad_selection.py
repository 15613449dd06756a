"""segmend.mad: the pool statistics record, content bounds, partition and the candidate set M."""

from __future__ import annotations

import time

import numpy as np
import pytest

from segmend.mad import (
    ContentBounds,
    ImageStats,
    PoolStats,
    content_bounds,
    content_bounds_from_masks,
    main_foreground_class,
    select_candidates,
    subgroup_membership,
)
from segmend.mad.selection import lowest

# Hand-made pool: classes (background, 1, 2); image f could not be read.
IDS = ["a", "b", "c", "d", "e", "f"]
TARGET = np.array(
    [
        [0.5, 0.5, 0.0],  # a: class 1
        [0.5, 0.2, 0.3],  # b: classes 1 and 2
        [0.9, 0.0, 0.1],  # c: class 2
        [1.0, 0.0, 0.0],  # d: background only -> no subgroup
        [0.4, 0.6, 0.0],  # e: class 1 above its upper bound 0.55
        [np.nan, np.nan, np.nan],  # f: unreadable
    ]
)
DISCREPANCY = np.array(
    [
        [0.9, 0.3, 0.5, 0.1, 0.05, np.nan],  # g0
        [0.2, 0.8, 0.4, 0.6, 0.7, np.nan],  # g1
    ]
)
BOUNDS = ContentBounds(lower=np.array([0.0, 0.1, 0.05]), upper=np.array([1.0, 0.55, 0.5]))


def hand_pool() -> PoolStats:
    competitor = np.stack([TARGET, TARGET])
    competitor[0, 3] = [0.7, 0.0, 0.3]  # g0 predicts class 2 in d
    readable = np.array([True] * 5 + [False])
    return PoolStats(IDS, TARGET, DISCREPANCY, competitor, readable, competitors=("g0", "g1"))


def test_selection_hand_computed_target_partition() -> None:
    selection = select_candidates(hand_pool(), BOUNDS, n3=1, roles=("target",))
    assert selection.groups == {
        ("g0", "target", 1): ["b"],  # class 1 holds a (0.9), b (0.3); e is out of bounds
        ("g0", "target", 2): ["b"],  # class 2 holds b (0.3), c (0.5)
        ("g1", "target", 1): ["a"],
        ("g1", "target", 2): ["c"],
    }
    assert selection.ids == ["b", "a", "c"]  # d (most controversial for g0) predicts no foreground
    assert selection.skipped == ["f"]


def test_selection_reverses_roles() -> None:
    selection = select_candidates(hand_pool(), BOUNDS, n3=1)
    assert selection.groups[("g0", "competitor", 2)] == ["d"]  # g0's own class-2 subgroup holds d (0.1)
    assert selection.ids == ["b", "d", "a", "c"]


def test_selection_deduplicates() -> None:
    selection = select_candidates(hand_pool(), BOUNDS, n3=2, roles=("target",))
    picks = [image for ids in selection.groups.values() for image in ids]
    assert len(picks) == 8
    assert selection.ids == ["b", "a", "c"]
    assert len(selection.ids) <= 2 * 2 * 2 * 2  # n2 <= 2 m c n3


def test_unreadable_images_are_skipped_and_reported_never_ranked() -> None:
    pool = hand_pool()
    pool.target_fractions[5] = [0.5, 0.5, 0.0]  # statistics present, but the image failed to load
    pool.discrepancy[:, 5] = -1.0  # the official code's score for a failed image
    selection = select_candidates(pool, BOUNDS, n3=3)
    assert "f" not in selection.ids
    assert selection.skipped == ["f"]


def test_nan_discrepancy_is_not_ranked() -> None:
    pool = hand_pool()
    pool.discrepancy[0, 1] = np.nan  # b has no valid pixel against g0
    selection = select_candidates(pool, BOUNDS, n3=1, roles=("target",))
    assert selection.groups[("g0", "target", 1)] == ["a"]
    assert selection.groups[("g0", "target", 2)] == ["c"]


def test_lowest_breaks_ties_by_pool_order() -> None:
    values = np.array([0.5, 0.1, 0.5, 0.1, 0.5, 0.0])
    assert lowest(values, np.arange(6), 3).tolist() == [5, 1, 3]
    assert lowest(values, np.array([0, 2, 4]), 2).tolist() == [0, 2]
    assert lowest(values, np.arange(6), 0).tolist() == []


def test_content_bounds_quartiles_of_images_containing_the_class() -> None:
    train = np.zeros((8, 3))
    train[:5, 1] = [0.5, 0.1, 0.3, 0.2, 0.4]  # three images without class 1 do not count
    train[:, 0] = 1 - train[:, 1]
    bounds = content_bounds(train)
    assert bounds.lower[1] == pytest.approx(0.2) and bounds.upper[1] == pytest.approx(0.4)
    assert (bounds.lower[2], bounds.upper[2]) == (0.0, 1.0)  # never seen: unconstrained
    mean_std = content_bounds(train, "mean_std")
    assert mean_std.lower[1] == pytest.approx(0.3 - np.sqrt(0.02))
    assert mean_std.upper[1] == pytest.approx(0.3 + np.sqrt(0.02))
    custom = content_bounds(train, lambda f: (float(f.min()), float(f.max())))
    assert (custom.lower[1], custom.upper[1]) == pytest.approx((0.1, 0.5))


def test_content_bounds_from_masks_excludes_ignored_pixels() -> None:
    masks = []
    for k in range(1, 6):
        mask = np.zeros((10, 12), dtype=np.uint8)
        mask[:, 10:] = 255  # ignored band: fractions are of the 100 labelled pixels
        mask[:k, :10] = 1
        masks.append(mask)
    bounds = content_bounds_from_masks(masks, num_classes=3)
    assert (bounds.lower[1], bounds.upper[1]) == pytest.approx((0.2, 0.4))


def test_membership_and_main_class() -> None:
    member = subgroup_membership(TARGET[:5], BOUNDS)
    assert member.tolist() == [
        [False, True, False],
        [False, True, True],
        [False, False, True],
        [False, False, False],
        [False, False, False],
    ]
    assert main_foreground_class(TARGET[:5]).tolist() == [1, 2, 2, -1, 1]


def test_pool_stats_from_records() -> None:
    records = [
        ImageStats("x", discrepancy=[0.5], target_fractions=[0.5, 0.5], competitor_fractions=[[1, 0]]),
        ImageStats("y", readable=False),
        ImageStats("z", discrepancy=[0.2], target_fractions=[1, 0], competitor_fractions=[[0, 1]], scalars={"e": 1}),
    ]
    pool = PoolStats.from_records(records, num_classes=2, competitors=["g"])
    assert pool.discrepancy.shape == (1, 3) and pool.competitor_fractions.shape == (1, 3, 2)
    assert pool.unreadable_ids == ["y"]
    assert np.isnan(pool.scalar("e")[0]) and pool.scalar("e")[2] == 1
    assert pool.index_of(["z", "x"]).tolist() == [2, 0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PoolStats(["a", "a"], np.ones((2, 1))), r"unique; repeated: \['a'\]"),
        (lambda: PoolStats(["a"], np.ones((2, 1))), r"target_fractions must be \(N=1, C\)"),
        (lambda: PoolStats(["a"], [[1.5]]), "image 'a' holds 1.5"),
        (lambda: PoolStats(["a"], [[1.0]], discrepancy=[[0.1], [0.2]], competitors=("g",)), "2 distinct names"),
        (lambda: PoolStats(["a"], [[1.0]]).scalar("entropy"), "no per-image 'entropy'"),
        (lambda: PoolStats(["a"], [[1.0]]).index_of(["b"]), r"not in the pool statistics: \['b'\]"),
        (lambda: PoolStats.from_records([ImageStats("a", target_fractions=[1.0])], 2), r"image 'a' must have shape"),
        (lambda: select_candidates(hand_pool(), BOUNDS, n3=0), "n3 must be a positive"),
        (lambda: select_candidates(PoolStats(["a"], [[1.0]]), ContentBounds.unbounded(1)), "at least one competitor"),
        (
            lambda: select_candidates(PoolStats(["a"], [[1.0, 0.0]], [[0.5]]), ContentBounds.unbounded(2)),
            "no competitor_fractions",
        ),
        (lambda: select_candidates(hand_pool(), ContentBounds.unbounded(4), 1), "3 classes but the bounds 4"),
        (lambda: content_bounds(np.ones((2, 2)), "median"), "Unknown bound statistic 'median'"),
        (lambda: ContentBounds(np.array([0.5]), np.array([0.2])), "lower bound 0.5 is above"),
    ],
)
def test_clear_errors(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def synthetic_pool(n: int, m: int, c: int, seed: int = 0) -> PoolStats:
    """A pool of n images: two random foreground classes per image and model, 0.1% unreadable."""
    rng = np.random.default_rng(seed)

    def fractions() -> np.ndarray:
        out = np.zeros((n, c), dtype=np.float32)
        out[np.arange(n)[:, None], rng.integers(1, c, size=(n, 2))] += rng.uniform(0, 0.45, (n, 2))
        out[:, 0] = 1 - out[:, 1:].sum(axis=1)
        return out

    return PoolStats(
        ids=np.char.add("img", np.arange(n).astype(str)),
        target_fractions=fractions(),
        discrepancy=rng.uniform(0, 1, (m, n)).astype(np.float32),
        competitor_fractions=np.stack([fractions() for _ in range(m)]),
        readable=rng.uniform(size=n) > 0.001,
    )


def test_selection_over_200k_images_is_fast() -> None:
    # Measured once on this 2-core machine (m=5, C=21, n3=25): 1M images select in 0.63 s.
    pool = synthetic_pool(200_000, m=3, c=21)
    bounds = content_bounds(pool.target_fractions[:5000])
    start = time.perf_counter()
    selection = select_candidates(pool, bounds, n3=25)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0
    assert 25 <= len(selection.ids) <= 2 * 3 * 20 * 25
    assert len(selection.skipped) == int((~pool.readable).sum())
    assert not set(selection.ids) & set(selection.skipped)
