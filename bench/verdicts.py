"""Verdicts computed from paired, per-round benchmark measurements.

A benchmark that compares two variants runs them side by side in rounds (one round = one paired
measurement of both). Machine drift moves both variants of a round together, so the unit of
evidence is the per-round *paired* ratio (or difference), and the rounds are the sample.

The interval is a Student-t interval over rounds:

* ratios (speeds, step times): on the log ratios, mapped back with ``exp``. Timing noise is
  multiplicative, and on the log scale A/B and B/A give mirrored intervals; the estimate is the
  geometric mean of the per-round ratios.
* differences (ms, mIoU points): on the differences themselves.

Why t and not a bootstrap over rounds: benchmarks here have 6 to 20 rounds. A percentile bootstrap
over so few rounds is too narrow (it uses the plug-in standard deviation and a normal-like
quantile: at 6 rounds about 30% narrower than the t interval, and 6 rounds have only 462 distinct
resamples), so it would call noise a result. The t interval is exact for normal log ratios and
widens honestly when a disturbed round inflates the spread, which can only turn a verdict into
"not resolved", never into a false "met".

Usage (``bench/`` is on ``sys.path`` when a bench script runs; tests load this file by path)::

    from verdicts import ratio_interval, target_verdict, comparison

    interval = ratio_interval([1.02, 0.98, 1.01, 1.04, 0.99, 1.03])
    target_verdict(interval, "ratio <= 1.03")   # 'met' | 'not met' | 'not resolved'
    comparison(interval, "ARM", "plain CE", higher="slower", lower="faster")
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from scipy import stats

__all__ = [
    "Interval",
    "comparison",
    "difference_interval",
    "direction",
    "parse_target",
    "ratio_interval",
    "seeds_needed",
    "target_verdict",
    "verdict_text",
]

MET, NOT_MET, NOT_RESOLVED = "met", "not met", "not resolved"


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval over ``n`` paired rounds.

    Attributes:
        estimate: Geometric mean of the ratios, or mean of the differences.
        low: Lower end of the interval.
        high: Upper end of the interval.
        n: Number of rounds.
        confidence: Confidence level, e.g. 0.95.
        kind: ``"ratio"`` (no difference = 1) or ``"difference"`` (no difference = 0).

    """

    estimate: float
    low: float
    high: float
    n: int
    confidence: float
    kind: Literal["ratio", "difference"]

    @property
    def null(self) -> float:
        """The value meaning "no difference": 1 for ratios, 0 for differences."""
        return 1.0 if self.kind == "ratio" else 0.0

    def side(self, threshold: float) -> int:
        """+1 if the whole interval is above ``threshold``, -1 if wholly below, 0 if it contains it."""
        if self.low > threshold:
            return 1
        if self.high < threshold:
            return -1
        return 0

    def format(self, digits: int = 3, unit: str = "") -> str:
        """E.g. ``'0.973 (95% CI 0.911 to 1.038, 6 rounds)'``."""
        level = f"{100 * self.confidence:g}%"
        return (
            f"{self.estimate:.{digits}f}{unit} ({level} CI {self.low:.{digits}f}{unit} to "
            f"{self.high:.{digits}f}{unit}, {self.n} rounds)"
        )

    def __str__(self) -> str:
        return self.format()


def _check(values: Sequence[float], confidence: float) -> list[float]:
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"An interval needs at least 2 rounds, got {len(values)}; run more rounds.")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"Per-round values must be finite, got {values}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    return values


def _t_interval(values: list[float], confidence: float) -> tuple[float, float, float]:
    mean = statistics.fmean(values)
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def ratio_interval(ratios: Sequence[float], confidence: float = 0.95) -> Interval:
    """t interval on the log of per-round paired ratios, mapped back to the ratio scale.

    Args:
        ratios: One ratio per round (e.g. ARM step time / CE step time of the same round), > 0.
        confidence: Two-sided confidence level.

    Returns:
        The geometric-mean ratio and its interval.

    Raises:
        ValueError: Fewer than 2 rounds, a non-positive or non-finite ratio, or a bad confidence.

    """
    ratios = _check(ratios, confidence)
    if min(ratios) <= 0:
        raise ValueError(f"Ratios must be > 0, got {ratios}.")
    mean, low, high = _t_interval([math.log(r) for r in ratios], confidence)
    return Interval(math.exp(mean), math.exp(low), math.exp(high), len(ratios), confidence, "ratio")


def difference_interval(differences: Sequence[float], confidence: float = 0.95) -> Interval:
    """t interval on per-round paired differences (e.g. method minus baseline, same seed).

    Args:
        differences: One difference per round.
        confidence: Two-sided confidence level.

    Returns:
        The mean difference and its interval.

    Raises:
        ValueError: Fewer than 2 rounds, a non-finite value, or a bad confidence.

    """
    differences = _check(differences, confidence)
    mean, low, high = _t_interval(differences, confidence)
    return Interval(mean, low, high, len(differences), confidence, "difference")


def seeds_needed(differences: Sequence[float], effect: float, power: float = 0.8, confidence: float = 0.95) -> int:
    """How many paired rounds a two-sided t test needs to detect ``effect`` with ``power``.

    The spread is the sample std of ``differences``; the count solves
    ``n = ((t(1 - a/2, n-1) + t(power, n-1)) * sd / effect)^2`` by iterating from the normal
    approximation, so it is the usual sample-size rule for a paired comparison.

    Args:
        differences: Per-round paired differences measured so far (2 or more).
        effect: The difference to detect, in the units of ``differences`` (e.g. the paper's effect).
        power: Probability of resolving a true difference of ``effect``.
        confidence: Two-sided confidence level of the interval that has to exclude 0.

    Raises:
        ValueError: Fewer than 2 differences, or ``effect`` is 0.

    """
    differences = _check(differences, confidence)
    if effect == 0:
        raise ValueError("seeds_needed needs a non-zero effect to detect.")
    spread = statistics.stdev(differences) / abs(effect)
    n = 2
    for _ in range(50):
        quantiles = stats.t.ppf(0.5 + confidence / 2, n - 1) + stats.t.ppf(power, n - 1)
        needed = max(2, math.ceil((quantiles * spread) ** 2))
        if needed == n:
            break
        n = needed
    return n


_TARGET = re.compile(
    r"^\s*(?:[A-Za-z_][\w ./-]*?\s*)?(<=|>=|≤|≥)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*x?\s*$"
)


def parse_target(target: str) -> tuple[str, float]:
    """Parse ``"ratio <= 1.03"``, ``">= 1.5"``, ``"≥ 0.97x"`` into ``("<=" | ">=", threshold)``.

    Raises:
        ValueError: The target is not of the form ``[name] <= X`` or ``[name] >= X``.

    """
    match = _TARGET.match(target)
    if match is None:
        raise ValueError(f"Target {target!r} is not of the form 'ratio <= X' or 'ratio >= X' (also ≤, ≥).")
    op = {"≤": "<=", "≥": ">="}.get(match.group(1), match.group(1))
    return op, float(match.group(2))


def target_verdict(interval: Interval, target: str) -> str:
    """``"met"`` if the whole interval satisfies the target, ``"not met"`` if none of it does, else ``"not resolved"``.

    Args:
        interval: From :func:`ratio_interval` or :func:`difference_interval`.
        target: ``"[name] <= X"`` or ``"[name] >= X"`` (``≤``/``≥`` accepted).

    """
    op, threshold = parse_target(target)
    if op == "<=":
        if interval.high <= threshold:
            return MET
        if interval.low > threshold:
            return NOT_MET
    else:
        if interval.low >= threshold:
            return MET
        if interval.high < threshold:
            return NOT_MET
    return NOT_RESOLVED


def verdict_text(interval: Interval, target: str, digits: int = 3, unit: str = "") -> str:
    """One line: ``'0.973 (95% CI 0.911 to 1.038, 6 rounds); target <= 1.03: not resolved'``."""
    op, threshold = parse_target(target)
    return f"{interval.format(digits, unit)}; target {op} {threshold:g}{unit}: {target_verdict(interval, target)}"


def direction(
    interval: Interval,
    higher: str = "higher",
    lower: str = "lower",
    same: str = "no measurable difference",
) -> str:
    """``higher`` if the interval lies wholly above 1 (ratios) or 0 (differences), ``lower`` if wholly below, else ``same``.

    For step-time ratios pass ``higher="slower", lower="faster"``; for speed ratios the reverse.
    """
    return {1: higher, -1: lower, 0: same}[interval.side(interval.null)]


def comparison(
    interval: Interval,
    subject: str,
    baseline: str,
    higher: str = "higher",
    lower: str = "lower",
    digits: int = 3,
    unit: str = "",
    label: str = "",
) -> str:
    """A sentence from :func:`direction`, with the interval (``label`` names the estimate, e.g. ``"ratio"``).

    E.g. ``'ARM is slower than plain CE: ratio 1.021 (95% CI 1.004 to 1.038, 12 rounds)'`` or
    ``'no measurable difference between ARM and plain CE: 0.99 (95% CI 0.96 to 1.02, 6 rounds) includes 1'``.
    """
    word = direction(interval, higher, lower)
    text = (f"{label} " if label else "") + interval.format(digits, unit)
    if interval.side(interval.null) == 0:
        return f"no measurable difference between {subject} and {baseline}: {text} includes {interval.null:g}"
    return f"{subject} is {word} than {baseline}: {text}"
