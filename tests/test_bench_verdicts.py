"""bench/verdicts.py: intervals over paired rounds and the verdicts computed from them (pure numbers)."""

from __future__ import annotations

import importlib.util
import math
import statistics
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "verdicts.py"
_SPEC = importlib.util.spec_from_file_location("bench_verdicts", _PATH)
verdicts = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = verdicts  # dataclasses look the module up while the class is built
_SPEC.loader.exec_module(verdicts)


def test_ratio_interval_is_a_t_interval_on_log_ratios():
    ratios = [1.045, 1.018, 0.976, 0.990, 0.937, 0.879]  # the old arm_overhead.md rounds
    interval = verdicts.ratio_interval(ratios)
    logs = [math.log(r) for r in ratios]
    half = 2.570581836 * statistics.stdev(logs) / math.sqrt(6)  # t(0.975, df=5)
    assert interval.n == 6 and interval.kind == "ratio" and interval.null == 1.0
    assert interval.estimate == pytest.approx(math.exp(statistics.fmean(logs)))
    assert interval.low == pytest.approx(math.exp(statistics.fmean(logs) - half))
    assert interval.high == pytest.approx(math.exp(statistics.fmean(logs) + half))
    # the old report called its median 0.983 "met" for <= 1.03; the interval does not resolve it
    assert interval.low < 1.0 < 1.03 < interval.high
    assert verdicts.target_verdict(interval, "ratio <= 1.03") == "not resolved"
    assert verdicts.direction(interval, higher="slower", lower="faster") == "no measurable difference"


def test_ratio_interval_is_symmetric_under_inversion():
    ratios = [1.10, 1.20, 1.15, 1.05, 1.18]
    forward = verdicts.ratio_interval(ratios)
    backward = verdicts.ratio_interval([1 / r for r in ratios])
    assert backward.estimate == pytest.approx(1 / forward.estimate)
    assert backward.low == pytest.approx(1 / forward.high)
    assert backward.high == pytest.approx(1 / forward.low)


def test_difference_interval():
    diffs = [1.0, 2.0, 3.0]
    interval = verdicts.difference_interval(diffs)
    half = 4.302652730 * 1.0 / math.sqrt(3)  # t(0.975, df=2), sd = 1
    assert interval.kind == "difference" and interval.null == 0.0
    assert (interval.estimate, interval.low, interval.high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert verdicts.direction(interval) == "no measurable difference"  # low = -0.48
    assert verdicts.direction(verdicts.difference_interval([2.0, 2.1, 1.9, 2.05])) == "higher"


def test_confidence_level_widens_the_interval():
    ratios = [1.01, 1.03, 0.99, 1.04, 1.02, 1.00]
    narrow = verdicts.ratio_interval(ratios, confidence=0.8)
    wide = verdicts.ratio_interval(ratios, confidence=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_identical_rounds_give_a_point_interval():
    interval = verdicts.ratio_interval([1.2] * 6)
    assert interval.low == pytest.approx(1.2) and interval.high == pytest.approx(1.2)
    assert verdicts.target_verdict(interval, ">= 1.2") == "met"
    assert verdicts.target_verdict(interval, "<= 1.2") == "met"


@pytest.mark.parametrize(
    ("target", "low", "high", "expected"),
    [
        ("ratio <= 1.03", 0.95, 1.02, "met"),
        ("ratio <= 1.03", 0.95, 1.03, "met"),  # boundary is on the right side
        ("ratio <= 1.03", 1.031, 1.10, "not met"),
        ("ratio <= 1.03", 1.00, 1.05, "not resolved"),
        ("ratio <= 1.03", 1.03, 1.05, "not resolved"),
        (">= 1.5", 1.55, 1.70, "met"),
        (">= 1.5", 1.40, 1.49, "not met"),
        (">= 1.5", 1.45, 1.60, "not resolved"),
        ("segmend default ≥ 1.5x", 1.55, 1.70, "met"),
        ("speed-up ≤ 0.97", 0.90, 0.96, "met"),
        ("mIoU difference >= -1", -0.5, 0.4, "met"),
        ("mIoU difference >= -1", -3.0, -1.2, "not met"),
    ],
)
def test_target_verdict_needs_the_whole_interval(target, low, high, expected):
    interval = verdicts.Interval((low + high) / 2, low, high, 6, 0.95, "ratio")
    assert verdicts.target_verdict(interval, target) == expected


@pytest.mark.parametrize(
    ("target", "parsed"),
    [
        ("ratio <= 1.03", ("<=", 1.03)),
        (">=1.5", (">=", 1.5)),
        ("≥ 0.97x", (">=", 0.97)),
        ("≤ .5", ("<=", 0.5)),
        ("mIoU difference >= -1.0", (">=", -1.0)),
    ],
)
def test_parse_target(target, parsed):
    assert verdicts.parse_target(target) == parsed


@pytest.mark.parametrize("target", ["ratio < 1.03", "1.03", "ratio == 1", "<= fast", ""])
def test_bad_target_is_a_clear_error(target):
    with pytest.raises(ValueError, match="not of the form"):
        verdicts.parse_target(target)


def test_direction_and_comparison_follow_whether_the_interval_excludes_the_null():
    slower = verdicts.Interval(1.05, 1.02, 1.08, 8, 0.95, "ratio")
    faster = verdicts.Interval(0.90, 0.85, 0.95, 8, 0.95, "ratio")
    same = verdicts.Interval(1.00, 0.97, 1.04, 8, 0.95, "ratio")
    kw = {"higher": "slower", "lower": "faster"}
    assert verdicts.direction(slower, **kw) == "slower"
    assert verdicts.direction(faster, **kw) == "faster"
    assert verdicts.direction(same, **kw) == "no measurable difference"
    assert verdicts.comparison(slower, "ARM", "plain CE", **kw) == (
        "ARM is slower than plain CE: 1.050 (95% CI 1.020 to 1.080, 8 rounds)"
    )
    assert verdicts.comparison(faster, "segmend", "the common one", label="speed ratio", digits=2) == (
        "segmend is lower than the common one: speed ratio 0.90 (95% CI 0.85 to 0.95, 8 rounds)"
    )
    assert verdicts.comparison(same, "ARM", "plain CE", **kw).startswith(
        "no measurable difference between ARM and plain CE: 1.000 (95% CI 0.970 to 1.040, 8 rounds) includes 1"
    )


def test_verdict_text_prints_the_interval():
    interval = verdicts.Interval(0.983, 0.941, 1.027, 6, 0.95, "ratio")
    assert verdicts.verdict_text(interval, "ratio <= 1.03") == (
        "0.983 (95% CI 0.941 to 1.027, 6 rounds); target <= 1.03: met"
    )


@pytest.mark.parametrize(
    ("values", "match"),
    [([1.0], "at least 2 rounds"), ([], "at least 2 rounds"), ([1.0, float("nan")], "finite"), ([1.0, 0.0], "> 0")],
)
def test_bad_ratios_are_clear_errors(values, match):
    with pytest.raises(ValueError, match=match):
        verdicts.ratio_interval(values)


def test_bad_confidence_is_a_clear_error():
    with pytest.raises(ValueError, match="confidence"):
        verdicts.difference_interval([1.0, 2.0], confidence=95)


def test_claim_verdict_says_when_the_papers_effect_lies_above_the_interval(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(_PATH.parent))
    harness = importlib.import_module("harness")
    small = [0.3, -0.2, 0.1, 0.4, -0.1, 0.2, 0.0, -0.3]  # interval around 0, far below +6.88
    assert harness.claim_verdict(small, "MAD") == "not resolved"
    assert harness.claim_verdict(small, "MAD", 6.88) == (
        "not resolved; the paper's +6.88 lies above the interval, so its size does not reproduce"
    )
    assert harness.claim_verdict(small, "MAD", 0.25) == "not resolved"  # 0.25 is inside the interval
    large = [7.1, 6.5, 7.4, 6.9]
    assert harness.claim_verdict(large, "MAD", 6.88) == "reproduces"


def test_claim_outcome_is_the_verdicts_category(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(_PATH.parent))
    harness = importlib.import_module("harness")
    above, below, around = [1.1, 0.9, 1.2, 1.0], [-1.1, -0.9, -1.2, -1.0], [0.3, -0.2, 0.1, -0.1]
    assert harness.claim_outcome(above) == harness.REPRODUCES
    assert harness.claim_outcome(below) == harness.DOES_NOT_REPRODUCE
    assert harness.claim_outcome(below, claimed_side=-1) == harness.REPRODUCES
    assert harness.claim_outcome(around) == harness.NOT_RESOLVED
    assert harness.claim_outcome([5.0]) == harness.NOT_RESOLVED  # one seed resolves nothing
    # a verdict's text starts with its outcome, whatever clause follows
    assert harness.claim_verdict(below, "ARM", 1.6).startswith(harness.DOES_NOT_REPRODUCE + " (ARM is lower)")
    assert harness.claim_verdict(above, "ARM", 5.0).startswith(harness.REPRODUCES + "; the paper's +5.00 lies above")
