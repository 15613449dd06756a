"""segmend.mad: weak scores, the counterexample set S and the unbiased test set T."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from segmend.mad import (
    OUT_OF_DOMAIN,
    counterexample_set,
    mean_opinion_scores,
    out_of_domain,
    unbiased_test_set,
    validate_scores,
)

SCORES = {
    "a": {"r1": 1, "r2": 2, "r3": 3},  # MOS 2
    "b": {"r1": 5, "r2": 4, "r3": 5},  # MOS 4.67
    "c": {"r1": 1, "r2": 1, "r3": OUT_OF_DOMAIN},  # lowest scores, but one rater says out of domain
    "d": {"r1": 2, "r2": 2, "r3": 2},  # MOS 2, ties with a
    "e": {"r1": 1, "r2": 2, "r3": 1},  # MOS 1.33
}


def test_mean_opinion_scores_and_out_of_domain() -> None:
    mos = mean_opinion_scores(SCORES)
    assert mos["a"] == 2.0 and mos["e"] == pytest.approx(4 / 3) and mos["c"] == float("inf")
    assert out_of_domain(SCORES) == {"c"}


def test_counterexample_set_takes_the_n4_lowest_in_domain() -> None:
    assert counterexample_set(SCORES, n4=3) == ["e", "a", "d"]  # c excluded; a/d tie keeps M's order
    assert counterexample_set(SCORES, n4=3, images=["e", "d", "c", "b", "a"]) == ["e", "d", "a"]
    assert counterexample_set(SCORES, n4=2, exclude={"e"}) == ["a", "d"]
    assert counterexample_set(SCORES, n4=100) == ["e", "a", "d", "b"]


@pytest.mark.parametrize(
    ("scores", "kwargs", "message"),
    [
        ({"a": {"r1": 6}}, {}, "Rater 'r1' gave image 'a' the score 6; expected an integer from 1 to 5"),
        ({"a": {"r1": 0}}, {}, "the score 0"),
        ({"a": {"r1": 2.5}}, {}, "the score 2.5"),
        ({"a": {"r1": True}}, {}, "the score True"),
        ({"a": {"r1": "3"}}, {}, "the score '3'"),
        ({"a": {"r1": float("nan")}}, {}, "the score nan"),
        ({"a": {}}, {}, "Image 'a' has no scores"),
        ({"a": {"r1": 1, "r2": 2}, "b": {"r1": 3}}, {}, r"Image 'b' .*missing \['r2'\]"),
        ({"a": {"r1": 1, "r4": 2}}, {"raters": ["r1", "r2"]}, r"missing \['r2'\], unexpected \['r4'\]"),
        ({"a": {"r1": 1}}, {"images": ["a", "z"]}, r"1 image without weak scores, e.g. \['z'\]"),
    ],
)
def test_invalid_scores_name_image_rater_and_expectation(scores, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_scores(scores, **kwargs)


def test_counterexample_set_rejects_negative_n4_and_bad_scores() -> None:
    with pytest.raises(ValueError, match="n4 must be"):
        counterexample_set(SCORES, n4=-1)
    with pytest.raises(ValueError, match="the score 7"):
        counterexample_set({"a": {"r1": 7}}, n4=1)
    validate_scores({"a": {"r1": np.int64(3)}})  # numpy integers are integers


def candidates_and_classes() -> tuple[list[str], dict[str, int]]:
    ids = [f"m{i:02d}" for i in range(60)]
    return ids, {image: i % 6 - 1 for i, image in enumerate(ids)}  # 6 main classes (-1 = none), 10 each


def test_unbiased_test_set_constraints() -> None:
    ids, main = candidates_and_classes()
    ood, trained = set(ids[:5]), set(ids[5:15])
    test = unbiased_test_set(ids, main, out_of_domain=ood, used_for_training=trained, size=30, per_class=4, seed=1)
    assert len(test) == 24  # 6 classes x at most 4: the cap binds before the size
    assert len(set(test)) == 24
    assert not set(test) & (ood | trained)
    assert max(Counter(main[image] for image in test).values()) <= 4
    test = unbiased_test_set(ids, main, size=10, per_class=4, seed=1)
    assert len(test) == 10 and max(Counter(main[image] for image in test).values()) <= 4


def test_unbiased_test_set_is_deterministic_given_a_seed() -> None:
    ids, main = candidates_and_classes()
    first = unbiased_test_set(ids, main, size=12, seed=3)
    assert first == unbiased_test_set(ids, main, size=12, seed=3)
    assert first != unbiased_test_set(ids, main, size=12, seed=4)


def test_unbiased_test_set_errors() -> None:
    ids, main = candidates_and_classes()
    with pytest.raises(ValueError, match=r"no entry for 1 candidates, e.g. \['x'\]"):
        unbiased_test_set([*ids, "x"], main)
    with pytest.raises(ValueError, match="size=-1"):
        unbiased_test_set(ids, main, size=-1)
