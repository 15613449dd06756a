"""bench/errorpix_report.py: paired differences, verdicts and the plateau check computed from per-seed JSON."""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "errorpix.py"
_SPEC = importlib.util.spec_from_file_location("bench_errorpix", _PATH)
errorpix = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = errorpix  # dataclasses look the module up while the class is built
_SPEC.loader.exec_module(errorpix)
report_module = sys.modules["errorpix_report"]  # what bench/errorpix.py imports its report from

SWEEP = {
    "threshold": [0.5, 0.6, 0.7, 0.8],
    "iou": [0.2, 0.25, 0.27, 0.26],
    "hard_recall": [0.4, 0.3, 0.2, float("nan")],
    "precision": [0.2, 0.3, 0.4, 0.5],
    "recall": [0.8, 0.7, 0.6, 0.5],
    "error_fraction": [0.08],
    "hard_fraction": [0.1],
}


def write_seeds(folder: Path, regime: object, gaps: dict[str, list[float]], curve_end: list[float]) -> None:
    """Per-seed JSON: ours at 0.70 + seed / 100; each baseline ``gap`` points below ours."""
    for seed, end in enumerate(curve_end):
        ours = 0.70 + seed / 100
        variants = {name: {"mIoU": ours - gap[seed] / 100, "seconds": 1.0} for name, gap in gaps.items()}
        variants["semantic"]["curve"] = [[100, 0.5], [200, end - 0.002 * (seed + 1)], [300, end]]
        for t in errorpix.THRESHOLDS:
            variants[f"ours_t{t}"] = {"mIoU": ours, "semantic_mIoU": variants["semantic"]["mIoU"], "seconds": 1.0}
        variants[errorpix.OURS]["sweep"] = SWEEP
        data = {"regime": json.loads(json.dumps(errorpix.asdict(regime))), "variants": variants}
        data.update(
            machine="test machine", code="commit abc", command=f"python bench/errorpix.py --jobs 1 --seeds {seed}"
        )
        (folder / f"seed{seed}.json").write_text(json.dumps(data))


def test_report_computes_paired_intervals_verdicts_and_the_plateau(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    regime = errorpix.Regime(semantic_steps=300, curve_every=100)
    gaps = {
        "semantic": [1.0, 1.2, 0.9],  # ours clearly above
        "gau_decoder": [1.0, -1.0, 0.2],  # mixed: not resolved
        "layer_cascade": [0.5, 0.4, 0.6],
        "hard_mining": [0.3, 0.2, 0.4],
        "bagging": [-0.5, -0.6, -0.4],  # ours clearly below
    }
    write_seeds(tmp_path, regime, gaps, curve_end=[0.7, 0.71, 0.72])
    report = tmp_path / "errorpix.md"
    monkeypatch.setattr(report_module, "REPORT", report)
    report_module.write_report(argparse.Namespace(results=tmp_path), regime)
    text = report.read_text()

    semantic = [70 + seed - gap for seed, gap in enumerate(gaps["semantic"])]  # points
    row = f"{statistics.fmean(semantic):.1f} ± {statistics.stdev(semantic):.1f}"
    gap = statistics.fmean(gaps["semantic"])
    assert f"| DeepLabV3+ (the semantic branch) | {row} | {gap:.2f} pts (95% CI" in text
    assert "- ours is higher than DeepLabV3+ (the semantic branch): " in text
    assert "- no measurable difference between ours and DeepLabV3+-GAU-Decoder: " in text
    assert "- ours is lower than DeepLabV3+-Bagging" in text
    assert "3 seeds)" in text and "rounds)" not in text
    # the paper's claims, each judged by its paired interval
    claims = [line for line in text.splitlines() if line.startswith("- Ours (t = 0.7) − ")]
    verdicts = [line.rsplit("**", 2)[1].split(";")[0] for line in claims]
    # lines in Tab. 3's order: semantic, GAU decoder, LC, hard mining, bagging
    lower = "does not reproduce (ours is lower)"
    assert verdicts == ["reproduces", "not resolved at 3 seeds", "reproduces", "reproduces", lower]
    assert "about" in claims[1] and "seeds would resolve +1.01 (80% power)" in claims[1]
    # the semantic curve gains 0.2-0.6 points over its last third in every seed: a plateau
    assert "**a plateau**" in text
    # Tab. 1 rows, a NaN left out of the mean; one provenance line for the three child processes
    assert "| 0.7 | 27.0 ± 0.0 | 20.0 ± 0.0 | 40.0 ± 0.0 | 60.0 ± 0.0 |" in text
    assert "| 0.8 | 26.0 ± 0.0 | - |" in text
    assert text.count("Runs made on:") == 1 and "command: `python bench/errorpix.py`" in text


def test_child_options_are_stripped_from_the_command():
    command = "python bench/errorpix.py --semantic-steps 20 --jobs 1 --no-report --threads 1 --seeds 0 2 4"
    assert report_module.parent(command) == "python bench/errorpix.py --semantic-steps 20"
    assert report_module.strip_option(["--a", "1", "--seeds", "3", "5", "--b"], ("--seeds",)) == ["--a", "1", "--b"]


def test_report_shows_the_regime_the_runs_recorded():
    stored = json.loads(json.dumps(errorpix.asdict(errorpix.Regime(num_train=200, scale_range=(1.0, 1.0)))))
    regime = report_module.runs_regime([{"regime": stored}, {"regime": stored}], errorpix.Regime())
    assert regime == errorpix.Regime(num_train=200, scale_range=(1.0, 1.0))
    older = {k: v for k, v in stored.items() if k != "scale_range"}  # recorded before the setting existed
    assert report_module.runs_regime([{"regime": older}], errorpix.Regime()).scale_range == (0.75, 1.25)
    with pytest.raises(ValueError, match="mix runs of 2 regimes"):
        report_module.runs_regime([{"regime": stored}, {"regime": older}], errorpix.Regime())


def test_twice_the_steps_check_pairs_the_semantic_branch_by_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    regime = errorpix.Regime(semantic_steps=300, curve_every=100)
    results = tmp_path / "errorpix_runs"
    results.mkdir()
    gaps = {name: [1.0, 1.0, 1.0] for name in ("semantic", "gau_decoder", "layer_cascade", "hard_mining", "bagging")}
    write_seeds(results, regime, gaps, curve_end=[0.7, 0.71, 0.72])
    doubled = report_module.doubled_folder(results)
    assert doubled == tmp_path / "errorpix_runs_doubled"
    doubled.mkdir()
    longer = errorpix.Regime(semantic_steps=600, curve_every=100)
    gains = {"0": 0.5, "1": 0.8}  # seed 2 has no doubled run
    for seed, gain in gains.items():
        semantic = json.loads((results / f"seed{seed}.json").read_text())["variants"]["semantic"]["mIoU"]
        record = {"regime": errorpix.asdict(longer), "variants": {"semantic": {"mIoU": semantic + gain / 100}}}
        (doubled / f"seed{seed}.json").write_text(json.dumps(record))
    runs = report_module.load_runs(results)

    line = report_module.doubling_rows(results, runs, regime)[-1]

    label = "- Semantic branch, test mIoU: twice the steps (600) minus 300 (pts, seeds 0, 1 of 3)"
    assert line.startswith(f"{label}: 0.65 pts (95% CI")
    assert "target <= 2: not resolved" in line  # two seeds 0.3 apart: the interval still reaches above 2
    assert line.endswith("twice the steps resolved as a gain (whole interval above 0): no")
    (doubled / "seed2.json").write_text(json.dumps({"regime": errorpix.asdict(regime), "variants": {}}))
    with pytest.raises(ValueError, match="seed2.json: expected the regime at twice the semantic steps"):
        report_module.doubling_rows(results, runs, regime)
