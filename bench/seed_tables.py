"""What the benchmarks' reports share: atomic JSON results files, mIoU cells over seeds, paired intervals and verdicts."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from verdicts import comparison, difference_interval


def load_json(path: Path) -> dict[str, Any]:
    """A results file, or an empty dict when there is none yet."""
    return json.loads(path.read_text()) if path.is_file() else {}


def save_json(data: dict[str, Any], path: Path) -> None:
    """Write a results file atomically, so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial_file = path.with_suffix(".json.partial")
    partial_file.write_text(json.dumps(data, indent=1, sort_keys=True))
    partial_file.replace(path)


def points(value: float) -> str:
    """An mIoU as points with one decimal, e.g. ``'66.1'``."""
    return f"{100 * value:.1f}"


def mean_std(values: list[float]) -> str:
    """``'66.1 ± 0.8'`` (points, sample std over seeds) or the single value; NaNs (empty denominators) left out."""
    values = [value for value in values if not math.isnan(value)]
    if len(values) < 2:
        return points(values[0]) if values else "-"
    return f"{points(statistics.mean(values))} ± {points(statistics.stdev(values))}"


def difference_cell(differences: list[float], subject: str, baseline: str) -> tuple[str, str]:
    """The paired difference with its 95% t interval, and the computed sentence (or why there is none)."""
    if len(differences) < 2:
        return "-", f"needs 2 or more paired seeds (has {len(differences)})"
    interval = difference_interval(differences)
    sentence = comparison(interval, subject, baseline, digits=2, unit=" pts")
    return per_seed(interval.format(2, " pts")), per_seed(sentence)


def per_seed(text: str) -> str:
    """An interval's text with its sample named: here the rounds are seeds."""
    return text.replace(" rounds)", " seeds)")


def claim_verdict(differences: list[float], subject: str = "ours", paper_effect: float | None = None) -> str:
    """Whether a paper's "``subject`` is higher" claim reproduces: by the paired interval's side of 0.

    With the paper's own difference (``paper_effect``, in the units of ``differences``), an interval
    that lies wholly below it also says that the paper's size of the effect does not reproduce.
    """
    if len(differences) < 2:
        return "not resolved (fewer than 2 seeds)"
    interval = difference_interval(differences)
    verdict = {1: "reproduces", -1: f"does not reproduce ({subject} is lower)", 0: "not resolved"}[interval.side(0.0)]
    if paper_effect is not None and interval.side(paper_effect) == -1:
        verdict += f"; the paper's {paper_effect:+.2f} lies above the interval, so its size does not reproduce"
    return verdict
