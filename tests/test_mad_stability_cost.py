"""segmend.mad: ranking stability (SRCC, paper Fig. 7) and annotation cost (paper Sect. 4.2.3)."""

from __future__ import annotations

import numpy as np
import pytest

from segmend.mad import annotation_cost, model_scores_at, ranking_stability


def test_srcc_against_the_largest_k() -> None:
    per_image = {
        "A": [0.0, 1.0, 1.0, 1.0],  # k=1: 0.00, k=4: 0.75
        "B": [1.0, 0.0, 0.0, 0.0],  # k=1: 1.00, k=4: 0.25
        "C": [0.5, 0.5, 0.5, 0.5],  # k=1: 0.50, k=4: 0.50
    }
    stability = ranking_stability(per_image)
    assert list(stability) == [1, 2, 3]
    assert stability[1] == pytest.approx(-1.0)  # the ranking at one image is the reverse
    assert stability[3] == pytest.approx(1.0)
    assert ranking_stability(per_image, ks=[1], reference_k=3) == {1: pytest.approx(-1.0)}
    assert np.isnan(stability[2])  # every model scores 0.5 on two images: no ranking


def test_srcc_with_a_dataset_level_aggregate() -> None:
    # per-image (intersection, union) pairs; the aggregate pools them like a dataset IoU
    per_image = {"A": np.array([[1, 2], [3, 3]]), "B": np.array([[2, 2], [0, 3]]), "C": np.array([[0, 2], [1, 3]])}

    def pooled(rows: np.ndarray) -> float:
        return float(rows[:, 0].sum() / rows[:, 1].sum())

    assert model_scores_at(per_image, 2, pooled) == {"A": 0.8, "B": 0.4, "C": 0.2}
    assert ranking_stability(per_image, aggregate=pooled) == {1: pytest.approx(0.5)}


def test_stability_errors() -> None:
    with pytest.raises(ValueError, match="at least two models"):
        ranking_stability({"A": [1.0]})
    with pytest.raises(ValueError, match="same test images"):
        ranking_stability({"A": [1.0, 2.0], "B": [1.0]})
    with pytest.raises(ValueError, match=r"Sizes \[5\] are outside 1..2"):
        ranking_stability({"A": [1.0, 2.0], "B": [1.0, 0.0]}, ks=[5])


def test_annotation_cost_reproduces_the_paper() -> None:
    # Paper Sect. 4.2.3, first round: |M| = 1843 weakly scored, |S| = 100 densely labelled.
    cost = annotation_cost(num_candidates=1843, num_dense=100)
    assert round(cost.hours, 2) == 7.33  # 7 s x 1843 + 135 s x 100
    assert round(cost.dense_all_hours, 2) == 69.11  # 135 s x 1843
    assert cost.saving == pytest.approx(248805 / 26401)  # "around ten times"


def test_annotation_cost_raters_custom_times_and_rounds() -> None:
    three = annotation_cost(10, 2, raters=3, weak_seconds=5, dense_seconds=100)
    assert (three.weak_seconds, three.dense_seconds, three.dense_all_seconds) == (150, 200, 1000)
    total = three + annotation_cost(10, 2, raters=3, weak_seconds=5, dense_seconds=100)
    assert total.hours == pytest.approx(700 / 3600)
    with pytest.raises(ValueError, match="raters=0"):
        annotation_cost(10, 2, raters=0)
    with pytest.raises(ValueError, match="num_dense=-1"):
        annotation_cost(10, -1)
