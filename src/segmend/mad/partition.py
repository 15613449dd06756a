"""The content-aware partition of the pool by predicted classes (paper Sect. 3.1.1).

An image belongs to class k's subgroup of a model when the model predicts k in it and the
predicted area fraction of k lies in [p_k, q_k]; background never forms a subgroup. The bounds come
from the training labels: by default the first and third quartiles of each class's area fraction
over the training images that contain the class (paper Sect. 4.1.3). The official code used mean
+/- std of absolute pixel counts; fractions are resolution-independent (DESIGN.md), and the
statistic is configurable: ``"quartiles"``, ``"mean_std"`` or a callable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from segmend.mad.discrepancy import IGNORE_INDEX, class_fractions

BoundStatistic = Callable[[np.ndarray], tuple[float, float]]
"""Maps one class's (n_k,) area fractions over the training images containing it to (p_k, q_k)."""


def _quartiles(fractions: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(fractions, (0.25, 0.75))
    return float(low), float(high)


def _mean_std(fractions: np.ndarray) -> tuple[float, float]:
    mean, std = float(fractions.mean()), float(fractions.std())
    return max(mean - std, 0.0), min(mean + std, 1.0)


BOUND_STATISTICS: dict[str, BoundStatistic] = {"quartiles": _quartiles, "mean_std": _mean_std}


@dataclass(frozen=True)
class ContentBounds:
    """Per-class bounds [p_k, q_k] on the predicted area fraction.

    Attributes:
        lower: (C,) p_k.
        upper: (C,) q_k.
        background: the class that never forms a subgroup (``None``: every class does).

    """

    lower: np.ndarray
    upper: np.ndarray
    background: int | None = 0

    def __post_init__(self) -> None:
        lower, upper = np.asarray(self.lower, dtype=float), np.asarray(self.upper, dtype=float)
        if lower.ndim != 1 or lower.shape != upper.shape:
            raise ValueError(f"lower and upper must be (C,) arrays; found shapes {lower.shape} and {upper.shape}.")
        if (lower > upper).any():
            k = int(np.argmax(lower > upper))
            raise ValueError(f"Class {k}: lower bound {lower[k]} is above upper bound {upper[k]}.")
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return int(self.lower.shape[0])

    @classmethod
    def unbounded(cls, num_classes: int, background: int | None = 0) -> ContentBounds:
        """Bounds [0, 1] for every class: the partition by predicted classes alone."""
        return cls(np.zeros(num_classes), np.ones(num_classes), background)


def content_bounds(
    train_fractions: np.ndarray | Tensor,
    statistic: Literal["quartiles", "mean_std"] | BoundStatistic = "quartiles",
    background: int | None = 0,
) -> ContentBounds:
    """Compute [p_k, q_k] from the training labels' per-image class area fractions.

    For each class the statistic sees the fractions of the training images that contain it (a
    class absent from an image says nothing about its size). A class that no training image
    contains gets [0, 1]: nothing is known about its size, so the constraint does not filter it.

    Args:
        train_fractions: (N_train, C) per-image class area fractions of the training masks
            (see :func:`~segmend.mad.discrepancy.class_fractions`).
        statistic: ``"quartiles"`` (paper: first and third quartiles), ``"mean_std"`` (mean +/- one
            std, clipped to [0, 1], the official code's choice on fractions) or a callable from one
            class's (n_k,) fractions to ``(p_k, q_k)``.
        background: class index without a subgroup (kept in the bounds, never used).

    Returns:
        The bounds.

    Raises:
        ValueError: If the statistic is unknown or the fractions are not (N, C).

    """
    if isinstance(train_fractions, Tensor):
        train_fractions = train_fractions.detach().cpu()
    fractions = np.asarray(train_fractions, dtype=float)
    if fractions.ndim != 2:
        raise ValueError(f"train_fractions must be (N, C); found shape {fractions.shape}.")
    if isinstance(statistic, str):
        if statistic not in BOUND_STATISTICS:
            raise ValueError(f"Unknown bound statistic {statistic!r}; expected one of {sorted(BOUND_STATISTICS)}.")
        statistic = BOUND_STATISTICS[statistic]
    num_classes = fractions.shape[1]
    lower, upper = np.zeros(num_classes), np.ones(num_classes)
    for k in range(num_classes):
        column = fractions[:, k]
        present = column[column > 0]
        if present.size:
            lower[k], upper[k] = statistic(present)
    return ContentBounds(lower, upper, background)


def content_bounds_from_masks(
    masks: Iterable[np.ndarray | Tensor],
    num_classes: int,
    statistic: Literal["quartiles", "mean_std"] | BoundStatistic = "quartiles",
    background: int | None = 0,
    ignore_index: int | None = IGNORE_INDEX,
) -> ContentBounds:
    """Compute [p_k, q_k] from training masks (see :func:`content_bounds`).

    Args:
        masks: (H, W) or (B, H, W) label maps, any sizes; ``ignore_index`` pixels are left out.
        num_classes: number of classes C, background included.
        statistic: see :func:`content_bounds`.
        background: class index without a subgroup.
        ignore_index: label left out of the area fractions.

    Returns:
        The bounds.

    Raises:
        ValueError: If no mask is given or a label is out of range.

    """
    rows = [class_fractions(mask, num_classes, ignore_index) for mask in masks]
    if not rows:
        raise ValueError("content_bounds_from_masks needs at least one training mask; found none.")
    return content_bounds(torch.cat(rows).numpy(), statistic, background)


def subgroup_membership(fractions: np.ndarray, bounds: ContentBounds) -> np.ndarray:
    """Which class subgroups each image belongs to.

    Args:
        fractions: (N, C) predicted class area fractions of one model.
        bounds: the content bounds.

    Returns:
        (N, C) bool: class k predicted (fraction > 0) and p_k <= fraction <= q_k; the background
        column is all False.

    Raises:
        ValueError: If the numbers of classes differ.

    """
    if fractions.shape[-1] != bounds.num_classes:
        raise ValueError(
            f"The predictions have {fractions.shape[-1]} classes but the bounds {bounds.num_classes}; "
            "compute both with the same num_classes."
        )
    member = (fractions > 0) & (fractions >= bounds.lower) & (fractions <= bounds.upper)
    if bounds.background is not None:
        member[..., bounds.background] = False
    return member


def main_foreground_class(fractions: np.ndarray, background: int | None = 0) -> np.ndarray:
    """The class with the largest predicted area, background excluded (ties: lowest index).

    Args:
        fractions: (N, C) predicted class area fractions.
        background: class index not counted.

    Returns:
        (N,) int class index; -1 for an image with no foreground predicted.

    """
    foreground = np.array(fractions, dtype=float, copy=True)
    if background is not None:
        foreground[:, background] = 0
    main = foreground.argmax(axis=1)
    return np.where(foreground.max(axis=1, initial=0) > 0, main, -1)
