"""The benchmarks' harness: per-seed results files, resumable sweeps."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("harness")


def test_a_sweep_resumes_where_it_stopped(harness, tmp_path: Path):
    path, regime, ran = tmp_path / "seed3.json", {"steps": 10, "sizes": (1, 2)}, []

    def run(name: str, fail: bool = False):
        def body() -> dict:
            ran.append(name)
            if fail:
                raise KeyboardInterrupt  # a kill in the middle of the sweep
            return {"mIoU": len(name) / 10}

        return body

    with pytest.raises(KeyboardInterrupt):
        harness.sweep(harness.SeedResults(path, regime, "bench/x.py", 3), [("a", run("a")), ("bb", run("bb", True))])
    saved = json.loads(path.read_text())
    assert saved["variants"] == {"a": {"mIoU": 0.1}} and saved["seed"] == 3 and saved["regime"]["sizes"] == [1, 2]
    assert {"machine", "code", "command"} <= set(saved)
    harness.sweep(harness.SeedResults(path, regime, "bench/x.py", 3), [("a", run("a")), ("bb", run("bb"))])
    assert ran == ["a", "bb", "bb"]  # the finished variant is not run again
    assert json.loads(path.read_text())["variants"] == {"a": {"mIoU": 0.1}, "bb": {"mIoU": 0.2}}
    assert not list(tmp_path.glob("*.partial"))


def test_results_of_another_regime_are_refused(harness, tmp_path: Path):
    path = tmp_path / "seed0.json"
    harness.SeedResults(path, {"steps": 10}, "bench/x.py", 0).record("a", {"mIoU": 0.5})
    with pytest.raises(ValueError, match=r"seed0.json holds results of another regime \(\{'steps': 10\}\)"):
        harness.SeedResults(path, {"steps": 20}, "bench/x.py", 0)


def test_seeds_to_resolve_needs_three_seeds_and_asks_for_more_than_it_has(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    harness = importlib.import_module("harness")
    too_few = harness.seeds_to_resolve([1.2, 1.6], 1.61)
    assert too_few == "3 or more seeds are needed to estimate how many would resolve it"
    tight = [1.2, 1.6, 1.4]  # the formula alone would say 2 seeds: no fewer than one more than it has
    assert harness.seeds_to_resolve(tight, 1.61) == "about 4 seeds would resolve +1.61 (80% power)"
    assert harness.seeds_to_resolve([2.0, -1.0, 3.0, 0.5], 1.0).startswith("about ")


def test_no_seed_count_once_the_interval_excludes_the_papers_effect(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    harness = importlib.import_module("harness")
    near_zero = [0.3, -0.2, 0.1, 0.4, -0.1, 0.2, 0.0, -0.3]  # the interval holds 0 and lies far below +6.88
    assert harness.verdict_with_seeds(near_zero, "MAD", 6.88) == (
        "not resolved at 8 seeds; the paper's +6.88 lies above the interval, so its size does not reproduce"
    )
    wide = [2.0, -1.0, 3.0, 0.5]  # the interval holds both 0 and +1: more seeds could resolve the paper's effect
    assert harness.verdict_with_seeds(wide, "MAD", 1.0).endswith("seeds would resolve +1.00 (80% power)")


def test_plateau_section_judges_each_variants_last_third(harness):
    def run(at_two_thirds: float, final: float) -> dict:
        return {"steps": 300, "curve": [[100, 0.1], [200, at_two_thirds], [300, final]]}

    flat = [run(0.50, 0.505), run(0.60, 0.598), run(0.55, 0.556)]  # +0.5, -0.2, +0.6 points
    rising = [run(0.40, 0.45), run(0.42, 0.47), run(0.41, 0.465)]  # +5, +5, +5.5 points
    lines = harness.plateau_section({"flat": flat, "rising": rising, "not run": []})

    assert lines[0] == "## Did each variant plateau?" and lines[2] == harness.PLATEAU_TEXT
    judged = [line for line in lines if line.startswith("- ")]
    assert len(judged) == 2  # a name without runs gets no line
    assert judged[0].startswith("- flat: gain over the last third (pts): 0.30 pts") and judged[0].endswith(": met")
    assert judged[1].startswith("- rising: gain over the last third (pts): 5.17 pts")
    assert judged[1].endswith("target <= 2: not met")
    assert harness.plateau_section({"not run": []}) == []
