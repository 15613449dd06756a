"""Annotation-cost accounting (paper Sect. 4.2.3).

A weak score costs ``weak_seconds`` per image and rater, a dense pixel label ``dense_seconds`` per
image (paper: 7 s and 135 s, measured with their GUIs). The paper's first round: weak scores for
|M| = 1843 images and dense labels for |S| = 100 take 7 x 1843 + 135 x 100 s = 7.33 h, against
135 x 1843 s = 69.11 h to label all of M densely. (The paper prints the first sum as
"7 s x 1843 + 100 s"; its 7.33 h is 100 dense labels at 135 s.) It counts one rater's time;
pass ``raters`` to count every rater.
"""

from __future__ import annotations

from dataclasses import dataclass

WEAK_SECONDS = 7.0
DENSE_SECONDS = 135.0


@dataclass(frozen=True)
class AnnotationCost:
    """Human time of one round (or a sum of rounds, with ``+``).

    Attributes:
        weak_seconds: seconds spent on weak scores.
        dense_seconds: seconds spent on dense labels.
        dense_all_seconds: seconds that labelling every candidate densely would have taken.

    """

    weak_seconds: float
    dense_seconds: float
    dense_all_seconds: float

    @property
    def hours(self) -> float:
        """Hours spent: weak scores plus dense labels."""
        return (self.weak_seconds + self.dense_seconds) / 3600

    @property
    def dense_all_hours(self) -> float:
        """Hours that dense labels for all of M would have taken."""
        return self.dense_all_seconds / 3600

    @property
    def saving(self) -> float:
        """How many times cheaper the loop is than labelling all of M densely."""
        spent = self.weak_seconds + self.dense_seconds
        return self.dense_all_seconds / spent if spent else float("nan")

    def __add__(self, other: AnnotationCost) -> AnnotationCost:
        return AnnotationCost(
            self.weak_seconds + other.weak_seconds,
            self.dense_seconds + other.dense_seconds,
            self.dense_all_seconds + other.dense_all_seconds,
        )


def annotation_cost(
    num_candidates: int,
    num_dense: int,
    raters: int = 1,
    weak_seconds: float = WEAK_SECONDS,
    dense_seconds: float = DENSE_SECONDS,
) -> AnnotationCost:
    """The annotation cost of one round.

    Args:
        num_candidates: |M|, the images that get weak scores.
        num_dense: images labelled densely (|S|, plus |T| where T is labelled too).
        raters: raters per image counted in the weak-score time (the paper counts 1).
        weak_seconds: seconds per weak score (paper: 7).
        dense_seconds: seconds per dense label (paper: 135).

    Returns:
        The round's cost.

    Raises:
        ValueError: If a count or a time is negative, or ``raters`` < 1.

    """
    if min(num_candidates, num_dense, weak_seconds, dense_seconds) < 0 or raters < 1:
        raise ValueError(
            "Counts and seconds must be non-negative and raters at least 1; found "
            f"num_candidates={num_candidates}, num_dense={num_dense}, raters={raters}, "
            f"weak_seconds={weak_seconds}, dense_seconds={dense_seconds}."
        )
    return AnnotationCost(
        weak_seconds=num_candidates * raters * weak_seconds,
        dense_seconds=num_dense * dense_seconds,
        dense_all_seconds=num_candidates * dense_seconds,
    )
