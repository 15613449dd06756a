"""bench/arm_report.py: the ARM claims' verdicts, tuning choice and tables, computed from per-seed JSON."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The ARM benchmark's modules, with their results folders in ``tmp_path``."""
    monkeypatch.syspath_prepend(str(BENCH))
    ablation = importlib.import_module("arm_ablation")
    report = importlib.import_module("arm_report")
    for module in (ablation, report):
        monkeypatch.setattr(module, "RUNS", tmp_path / "arm_runs", raising=False)
        monkeypatch.setattr(module, "REPORT", tmp_path / "arm.md", raising=False)
    monkeypatch.setattr(ablation, "TUNING", tmp_path / "arm_tuning")
    return ablation, report


def write_seed(path: Path, seed: int, runs: dict[str, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"seed": seed, "regime": {}, "variants": runs, "machine": "test machine", "code": "commit abc"}
    path.write_text(json.dumps(data))


def run(miou: float, non_finite: int = 0) -> dict:
    return {"mIoU": miou, "aAcc": 0.9, "mAcc": 0.8, "non_finite_steps": non_finite, "curve": [[10, miou]]}


def test_tuning_keeps_each_sides_best_lr_only_when_every_run_is_in(bench):
    ablation, _ = bench
    lrs = ablation.LEARNING_RATES
    best = {"base_ce": lrs[0], "arm": lrs[2]}
    for seed in ablation.TUNING_SEEDS:
        results = ablation.tuning_files()[seed]
        for family, winner in best.items():
            for lr in lrs:
                results.record(f"{family}@lr{lr:g}", {"lr": lr, "mIoU": 0.6 if lr == winner else 0.5})
                if family == "arm" and lr == lrs[1]:
                    assert ablation.tuned_lrs() is None  # a missing tuning run: no choice yet
    assert ablation.tuned_lrs() == {"ce": lrs[0], "arm": lrs[2]}


def test_reporting_runs_refuse_to_start_before_the_tuning(bench):
    ablation, _ = bench
    with pytest.raises(SystemExit, match="tuning is not finished"):
        ablation.run_seeds([0], ["base_ce"], ["coarse"])


def test_report_verdicts_are_computed_from_the_paired_runs(bench):
    ablation, report = bench
    for seed, (ce, arm) in enumerate([(0.60, 0.63), (0.55, 0.58), (0.62, 0.64), (0.58, 0.615)]):
        runs = {
            "base_ce@coarse": run(ce),
            "arm@coarse": run(arm),
            "base_ce@fine": run(ce + 0.1),
            "arm@fine": run(ce + 0.1 + (0.01 if seed % 2 else -0.01)),
            "arm_l1@coarse": run(0.1, non_finite=5),
        }
        write_seed(ablation.RUNS / f"seed{seed}.json", seed, runs)
    report.write_report()
    text = report.REPORT.read_text()
    claim = "- ARM (var, L2, detached) − Base model (CE), {} labels"
    coarse = next(line for line in text.splitlines() if line.startswith(claim.format("coarse")))
    assert "2.88 pts (95% CI 1.87 pts to 3.88 pts, 4 seeds)" in coarse and coarse.endswith("**reproduces**")
    fine = next(line for line in text.splitlines() if line.startswith(claim.format("fine")))
    assert "**not resolved at 4 seeds; about " in fine and "would resolve +0.97 (80% power)**" in fine
    assert "Here 4 of 4 runs had a non-finite training loss" in text and "(L1 norm)" in text
    assert "not yet (tuning unfinished)" in text


def test_no_gain_claims_are_contradicted_only_by_a_resolved_gain(bench):
    _, report = bench
    assert report.no_gain_verdict([0.5, -0.4, 0.1], "OHEM") == "consistent with no gain (no difference resolved)"
    assert report.no_gain_verdict([1.0, 1.2, 0.9, 1.1], "OHEM") == "does not reproduce (OHEM gains)"


@pytest.fixture(autouse=True)
def _forget_bench_modules():
    """Each test imports the bench modules afresh (they hold module-level paths)."""
    yield
    for name in ("arm_ablation", "arm_report", "regime", "harness", "verdicts", "provenance"):
        sys.modules.pop(name, None)
