"""Weak labels: ACR quality scores from several raters, and the counterexample set S (Sect. 3.1.2).

Each rater gives every image of M an integer from 1 ("bad") to 5 ("excellent") for the target's
prediction, or marks it out of domain with :data:`OUT_OF_DOMAIN` (+inf, as in the paper): one
rater's mark is enough to exclude the image. Images are ranked by mean opinion score (MOS); the n4
lowest form S.

The scores of a round are a mapping ``image id -> {rater -> score}``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping

import numpy as np

from segmend.text import counted

OUT_OF_DOMAIN = math.inf
"""The score a rater gives an out-of-domain image (the paper's positive infinity)."""

MIN_SCORE, MAX_SCORE = 1, 5

Scores = Mapping[str, Mapping[str, float]]


def _is_valid_score(score: object) -> bool:
    if isinstance(score, bool):
        return False
    if isinstance(score, (int, np.integer)):
        return MIN_SCORE <= score <= MAX_SCORE
    return isinstance(score, (float, np.floating)) and score == OUT_OF_DOMAIN


def validate_scores(
    scores: Scores,
    images: Iterable[str] | None = None,
    raters: Collection[str] | None = None,
) -> None:
    """Check a round's weak scores.

    Args:
        scores: ``image id -> {rater -> score}``; a score is an int in 1..5 or :data:`OUT_OF_DOMAIN`.
        images: ids that must all be scored (e.g. M); ``None`` checks only the given ones.
        raters: raters who must have scored every image; ``None`` requires every image to be scored
            by the same raters as the others.

    Raises:
        ValueError: Naming the image and rater, the expected and the found value.

    """
    missing = [image for image in (images or ()) if image not in scores]
    if missing:
        raise ValueError(
            f"{counted(len(missing), 'image')} without weak scores, e.g. {missing[:5]}; every image of M needs one."
        )
    expected = set(raters) if raters is not None else None
    for image, by_rater in scores.items():
        if not by_rater:
            raise ValueError(f"Image {image!r} has no scores; expected one from each rater.")
        for rater, score in by_rater.items():
            if not _is_valid_score(score):
                raise ValueError(
                    f"Rater {rater!r} gave image {image!r} the score {score!r}; expected an integer from "
                    f"{MIN_SCORE} to {MAX_SCORE} or OUT_OF_DOMAIN (inf)."
                )
        expected = set(by_rater) if expected is None else expected
        if set(by_rater) != expected:
            lacking, extra = sorted(expected - set(by_rater)), sorted(set(by_rater) - expected)
            raise ValueError(
                f"Image {image!r} is scored by raters {sorted(by_rater)}; expected {sorted(expected)} "
                f"(missing {lacking}, unexpected {extra})."
            )


def out_of_domain(scores: Scores) -> set[str]:
    """Ids that at least one rater marked out of domain."""
    return {image for image, by_rater in scores.items() if any(s == OUT_OF_DOMAIN for s in by_rater.values())}


def mean_opinion_scores(scores: Scores) -> dict[str, float]:
    """Mean opinion score per image (+inf for an out-of-domain image).

    Raises:
        ValueError: See :func:`validate_scores`.

    """
    validate_scores(scores)
    return {image: float(np.mean(list(by_rater.values()))) for image, by_rater in scores.items()}


def counterexample_set(
    scores: Scores,
    n4: int = 100,
    exclude: Collection[str] = (),
    images: Iterable[str] | None = None,
) -> list[str]:
    """The counterexample set S: the ``n4`` in-domain images with the lowest mean opinion score.

    Args:
        scores: ``image id -> {rater -> score}`` for M.
        n4: size of S (paper: 100); fewer if fewer images qualify.
        exclude: ids never chosen, e.g. images already labelled in earlier rounds.
        images: M in its order, which breaks MOS ties; ``None`` uses the order of ``scores``. All must
            be scored.

    Returns:
        S, lowest MOS first.

    Raises:
        ValueError: If ``n4`` < 0 or a score is invalid (see :func:`validate_scores`).

    """
    if n4 < 0:
        raise ValueError(f"n4 must be a non-negative number of images; found {n4}.")
    order = list(scores) if images is None else list(images)
    validate_scores(scores, images=order)
    mos = mean_opinion_scores(scores)
    excluded = set(exclude)
    ranked = [image for image in order if math.isfinite(mos[image]) and image not in excluded]
    ranked.sort(key=mos.__getitem__)  # stable: ties keep M's order
    return ranked[:n4]
