"""Error-prediction metrics of erroneous pixel prediction (Gong et al., 2021), accumulated over a whole set.

From counts summed over every batch (and across DDP ranks: every state is a count with
``dist_reduce_fx="sum"``), at a threshold ``t`` on the predicted error probability:

* error-pixel IoU: ``|E_ep & M_err| / |E_ep or M_err|`` over labelled pixels, the IoU of the
  error class between the predicted mask ``E_ep = P_ep > t`` and the true error map ``M_err``
  (Eq. 1). The paper calls it "error-pixels mIoU"; its values (15-30% in Tab. 1) can only be the
  error class's IoU: a mean with the correct class, whose IoU is above 90%, would exceed 45%;
* hard recall: the share of hard errors (semantic max probability above ``rho``) in ``E_ep``;
* precision and recall of ``E_ep`` for the error class.

:class:`ErrorThresholdSweep` keeps the counts at a fixed list of thresholds, so the paper's Tab. 1
is exact over the whole set; :func:`sweep_markdown`, :func:`sweep_figure` and :func:`write_sweep`
render it. An empty denominator gives NaN, as in :mod:`segmend.metrics.segmentation`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics import Metric

from segmend.losses.error_pixel import (
    HARD_CONFIDENCE,
    check_same_size,
    error_target,
    hard_error_mask,
    semantic_confidence,
)
from segmend.nets.error_pixel import ERROR_THRESHOLD, as_error_map, check_threshold

#: The thresholds of the paper's Tab. 1.
SWEEP_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def count_above(values: Tensor, thresholds: Tensor) -> Tensor:
    """For each threshold, how many of ``values`` exceed it (strictly).

    Args:
        values: (N,) values.
        thresholds: (T,) thresholds in ascending order, of the values' dtype.

    Returns:
        (T,) int64 counts.

    """
    # bucketize gives each value the number of thresholds strictly below it.
    below = torch.bucketize(values, thresholds)  # (N,) in 0..T
    histogram = torch.bincount(below, minlength=thresholds.numel() + 1)  # (T + 1,)
    return histogram.flip(0).cumsum(0).flip(0)[1:]  # (T,) values above threshold j: bins j+1..T


def nan_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` in float64, NaN where the denominator is 0."""
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1), torch.full_like(numerator, torch.nan))


class ErrorPixelCounts(Metric):
    """Counts behind the error-prediction metrics, at each of a fixed list of thresholds.

    ``update(error_prob, semantic_probs, target)`` takes the predicted error probabilities, the
    semantic branch's class probabilities (their argmax gives the error target, their max the
    hardness) and the labels. Subclasses choose what :meth:`compute` returns from :meth:`rates`.

    Args:
        thresholds: Thresholds ``t`` on the error probability, each in [0, 1).
        rho: The semantic confidence above which an error is hard (0.95 in the paper).
        ignore_index: Label of unlabeled pixels (left out of every count).
        **kwargs: Passed to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: If there is no threshold, one repeats, or one (or ``rho``) lies outside [0, 1).

    """

    is_differentiable = False
    full_state_update = False

    def __init__(
        self,
        thresholds: Sequence[float] = SWEEP_THRESHOLDS,
        rho: float = HARD_CONFIDENCE,
        ignore_index: int = 255,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        thresholds = tuple(float(t) for t in thresholds)
        if not thresholds or len(set(thresholds)) != len(thresholds):
            raise ValueError(f"Give one or more distinct thresholds; got {thresholds}.")
        for threshold in thresholds:
            check_threshold(threshold)
        check_threshold(rho, "hard confidence rho")
        self.thresholds = tuple(sorted(thresholds))
        self.rho = rho
        self.ignore_index = ignore_index
        size = len(self.thresholds)
        for name in ("predicted", "intersection", "hard_detected"):
            self.add_state(name, default=torch.zeros(size, dtype=torch.long), dist_reduce_fx="sum")
        for name in ("labelled", "errors", "hard"):
            self.add_state(name, default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, error_prob: Tensor, semantic_probs: Tensor, target: Tensor) -> None:
        """Accumulate a batch.

        Args:
            error_prob: (B, 1, H, W) or (B, H, W) predicted error probabilities.
            semantic_probs: (B, C, H, W) semantic class probabilities.
            target: (B, H, W) labels, ``ignore_index`` where unlabeled.

        Raises:
            ValueError: If the shapes disagree.

        """
        probs = as_error_map(error_prob)  # (B, H, W)
        check_same_size("the error map", probs, target)
        error = error_target(semantic_probs, target, self.ignore_index)  # (B, H, W)
        hard = hard_error_mask(error, semantic_confidence(semantic_probs), self.rho)  # (B, H, W)
        labelled, wrong = error != self.ignore_index, error == 1
        thresholds = torch.tensor(self.thresholds, dtype=probs.dtype, device=probs.device)
        self.predicted += count_above(probs[labelled], thresholds)
        self.intersection += count_above(probs[wrong], thresholds)
        self.hard_detected += count_above(probs[hard], thresholds)
        self.labelled += labelled.sum()
        self.errors += wrong.sum()
        self.hard += hard.sum()

    def rates(self) -> dict[str, Tensor]:
        """The metrics at every threshold, from the accumulated counts.

        Returns:
            ``threshold``, ``iou``, ``hard_recall``, ``precision``, ``recall``: (T,) float64, one per
            threshold, ascending; ``error_fraction`` (errors among labelled pixels) and
            ``hard_fraction`` (hard errors among errors): float64 scalars.

        """
        union = self.predicted + self.errors - self.intersection
        return {
            "threshold": torch.tensor(self.thresholds, dtype=torch.float64, device=self.predicted.device),
            "iou": nan_divide(self.intersection, union),
            "hard_recall": nan_divide(self.hard_detected, self.hard),
            "precision": nan_divide(self.intersection, self.predicted),
            "recall": nan_divide(self.intersection, self.errors),
            "error_fraction": nan_divide(self.errors, self.labelled),
            "hard_fraction": nan_divide(self.hard, self.errors),
        }

    def compute(self) -> Tensor | dict[str, Tensor]:
        """Every metric at every threshold (:meth:`rates`); subclasses pick one."""
        return self.rates()


class ErrorThresholdSweep(ErrorPixelCounts):
    """The paper's Tab. 1: error-pixel IoU and hard recall (with precision and recall) at each threshold.

    ``compute()`` returns :meth:`ErrorPixelCounts.rates`; render it with :func:`sweep_markdown`,
    :func:`sweep_figure` or :func:`write_sweep`.
    """

    def compute(self) -> dict[str, Tensor]:  # noqa: D102
        return self.rates()


class ErrorPixelAtThreshold(ErrorPixelCounts):
    """One of the error-prediction metrics at one threshold ``t``, named by the class attribute ``key``.

    Args:
        threshold: The binarisation threshold ``t`` (0.7 in the paper).
        rho: The semantic confidence above which an error is hard (0.95 in the paper).
        ignore_index: Label of unlabeled pixels.
        **kwargs: Passed to :class:`torchmetrics.Metric`.

    """

    higher_is_better = True
    key = "iou"

    def __init__(
        self, threshold: float = ERROR_THRESHOLD, rho: float = HARD_CONFIDENCE, ignore_index: int = 255, **kwargs: Any
    ) -> None:
        super().__init__((threshold,), rho, ignore_index, **kwargs)

    def compute(self) -> Tensor:
        """The metric ``key`` at the threshold, an fp32 scalar (NaN with an empty denominator)."""
        return self.rates()[self.key][0].float()


class ErrorPixelIoU(ErrorPixelAtThreshold):
    """IoU of the predicted error mask ``P_ep > t`` with the true error map, over the whole set."""

    key = "iou"


class HardErrorRecall(ErrorPixelAtThreshold):
    """Share of the hard errors (semantic max probability above ``rho``) that ``P_ep > t`` catches."""

    key = "hard_recall"


def percent(value: Tensor | float) -> str:
    """A rate as a percentage with two decimals, ``n/a`` for NaN."""
    value = float(value)
    return "n/a" if value != value else f"{100 * value:.2f}"


def sweep_markdown(sweep: Mapping[str, Tensor]) -> str:
    """The threshold sweep as a markdown table (the paper's Tab. 1, with precision and recall).

    Args:
        sweep: What :class:`ErrorThresholdSweep` computes.

    Returns:
        The table, then a line with the error and hard-error fractions, newline-terminated.

    """
    lines = [
        "| threshold t | error-pixel IoU (%) | hard recall (%) | precision (%) | recall (%) |",
        "|---:|---:|---:|---:|---:|",
    ]
    columns = ("iou", "hard_recall", "precision", "recall")
    for row, threshold in enumerate(sweep["threshold"].tolist()):
        lines.append(f"| {threshold:g} | " + " | ".join(percent(sweep[key][row]) for key in columns) + " |")
    lines.append("")
    lines.append(
        f"Erroneous pixels: {percent(sweep['error_fraction'])}% of the labelled pixels; hard errors (semantic max "
        f"probability above rho): {percent(sweep['hard_fraction'])}% of the erroneous pixels."
    )
    return "\n".join(lines) + "\n"


def sweep_figure(sweep: Mapping[str, Tensor], operating_threshold: float | None = ERROR_THRESHOLD) -> Figure:
    """Plot the threshold sweep: error-pixel IoU, hard recall, precision and recall against ``t``.

    The figure has an Agg canvas of its own (no pyplot, no global backend switch).

    Args:
        sweep: What :class:`ErrorThresholdSweep` computes.
        operating_threshold: A threshold marked with a vertical line (``None``: no line).

    Returns:
        The figure (``figure.savefig(path)`` writes it; W&B takes it as an image).

    """
    figure = Figure(figsize=(5.5, 3.8), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    thresholds = sweep["threshold"].tolist()
    styles = {
        "iou": ("error-pixel IoU", "-o"),
        "hard_recall": ("hard recall", "-s"),
        "precision": ("precision", "--"),
        "recall": ("recall", ":"),
    }
    for key, (label, style) in styles.items():
        axes.plot(thresholds, (100 * sweep[key].double()).tolist(), style, label=label)
    if operating_threshold is not None:
        axes.axvline(
            operating_threshold, color="grey", linewidth=0.8, linestyle="-.", label=f"t = {operating_threshold:g}"
        )
    axes.set_xlabel("threshold t on the error probability")
    axes.set_ylabel("%")
    axes.set_ylim(0, 100)
    axes.set_title("Error prediction against the threshold")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


def write_sweep(
    sweep: Mapping[str, Tensor],
    directory: str | os.PathLike[str],
    stem: str = "error_sweep",
    operating_threshold: float | None = ERROR_THRESHOLD,
) -> tuple[Path, Path]:
    """Write the sweep as ``<stem>.md`` and ``<stem>.png`` in ``directory`` (created if missing).

    Each file is written to a temporary name and renamed, so a reader never sees half a file.

    Args:
        sweep: What :class:`ErrorThresholdSweep` computes.
        directory: The output folder.
        stem: The file names without suffix.
        operating_threshold: A threshold marked in the figure (``None``: no mark).

    Returns:
        The paths of the markdown table and the PNG figure.

    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    table, image = folder / f"{stem}.md", folder / f"{stem}.png"
    partial = table.with_name(f".{table.name}.partial")
    partial.write_text(sweep_markdown(sweep))
    os.replace(partial, table)
    partial = image.with_name(f".{image.name}.partial")
    sweep_figure(sweep, operating_threshold).savefig(partial, format="png")
    os.replace(partial, image)
    return table, image
