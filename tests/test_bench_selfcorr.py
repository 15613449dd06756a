"""bench/selfcorr.py and bench/selfcorr_report.py: the self-correction benchmark's plan and its generated verdicts."""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
F = 8  # F of the tiny regime (half of F: 4 images)


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The self-correction benchmark's modules, with every folder in ``tmp_path`` and a fixed regime."""
    monkeypatch.syspath_prepend(str(BENCH))
    regime = importlib.import_module("regime")
    selfcorr = importlib.import_module("selfcorr")
    report = importlib.import_module("selfcorr_report")
    fixed = regime.Regime(num_train=400, num_full=40, steps=100, val_every=50)  # the report's numbers depend on it
    for module in (selfcorr, report):
        monkeypatch.setattr(module, "RUNS", tmp_path / "selfcorr_runs")
        monkeypatch.setattr(module, "REPORT", tmp_path / "selfcorr.md")
        monkeypatch.setattr(module, "REGIME", fixed)
    monkeypatch.setattr(selfcorr, "WORK", tmp_path / "work")
    monkeypatch.setattr(report, "README", tmp_path / "README.md")
    monkeypatch.setattr(regime, "WORK", tmp_path / "regime")
    return selfcorr, report


@pytest.fixture
def tiny(bench, monkeypatch: pytest.MonkeyPatch):
    """The benchmark in a tiny regime (32-pixel images, 24 training images, 2 steps per stage, one thread)."""
    selfcorr, report = bench
    small = dataclasses.replace(
        selfcorr.REGIME, image_size=32, num_train=24, num_val=4, num_full=F, batch_size=4, steps=2, val_every=2
    )
    for module in (selfcorr, report):
        monkeypatch.setattr(module, "REGIME", small)
    monkeypatch.setattr(selfcorr, "THREADS", [1])
    threads = torch.get_num_threads()
    yield selfcorr, report
    torch.set_num_threads(threads)


def write_seed(selfcorr, seed: int, runs: dict[str, dict]) -> None:
    """A seed file of the current regime with ``runs``."""
    path = selfcorr.RUNS / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"seed": seed, "regime": selfcorr.settings(), "variants": runs, "machine": "test machine", "code": "abc"}
    path.write_text(json.dumps(data))


def result(miou: float, seconds: float = 10.0) -> dict:
    stage = {"curve": [[50, miou - 0.01], [100, miou]], "seconds": seconds, "steps": 100}
    return {
        "mIoU": miou,
        "aAcc": 0.9,
        "mAcc": 0.8,
        "curve": stage["curve"],
        "seconds": seconds,
        "stages": {"main": stage},
    }


def line(text: str, start: str) -> str:
    return next(row for row in text.splitlines() if row.startswith(start))


def test_report_verdicts_are_computed_from_the_paired_seed_files(bench):
    selfcorr, report = bench
    # per seed at F = 40: none, linear, conv, em_fixed, fullsup, f_only, ancillary_full
    table = [
        (0.60, 0.61, 0.63, 0.58, 0.66, 0.50, 0.80),
        (0.55, 0.57, 0.58, 0.54, 0.64, 0.47, 0.78),
        (0.62, 0.61, 0.64, 0.60, 0.65, 0.52, 0.81),
        (0.58, 0.59, 0.615, 0.57, 0.67, 0.49, 0.79),
    ]
    names = ("none", "linear", "conv", "em_fixed", "fullsup", "f_only", "ancillary_full")
    for seed, row in enumerate(table):
        runs = {selfcorr.run_key(name, 40): result(value) for name, value in zip(names, row, strict=True)}
        runs[selfcorr.run_key("none", 20)] = result(0.5)
        write_seed(selfcorr, seed, runs)
    report.write_report()
    text = report.REPORT.read_text()
    conv = line(text, "- Conv. self-correction − No self-correction, F = 40")
    assert "2.88 pts (95% CI 1.87 pts to 3.88 pts, 4 seeds)" in conv and "paper +1.99 (Table 2, F = 1464)" in conv
    assert conv.endswith("**reproduces**")
    linear = line(text, "- Lin. self-correction − No self-correction, F = 40")
    assert "0.75 pts (95% CI -1.25 pts to 2.75 pts, 4 seeds); paper +1.01 (Table 2, F = 1464)" in linear
    assert linear.endswith("**not resolved at 4 seeds; about 15 seeds would resolve +1.01 (80% power)**")
    fullsup = line(text, "- Conv. self-correction − Fully supervised (F + W masks), F = 40")
    assert "paper +1.12" in fullsup and "outperform the fully supervised model" in fullsup
    assert "**does not reproduce (Conv. self-correction is lower)" in fullsup
    boxes = line(text, "- No self-correction − F only (CE on F), F = 40")
    assert "no paper number" in boxes and boxes.endswith("**No self-correction is higher**")
    # Table 1: our F = 40 of 400 (10%) is nearest the paper's 800 of 10582 (7.6%), where linear − none is +0.30
    assert "our F = 40 (10.0% of 400) ↔ paper F = 800" in text and "our F = 20 (5.0% of 400) ↔ paper F = 400" in text
    table1 = [row for row in text.splitlines() if row.startswith("- Lin. self-correction − No self-correction, F = ")]
    assert "paper +0.40 (Table 1, F = 400)" in table1[1] and "paper +0.30 (Table 1, F = 800)" in table1[2]
    anc = line(text, "- Ancillary model (all of F; val boxes) − No self-correction, F = 40")
    assert "paper +4.97 (Table 1, F = 800)" in anc and anc.endswith("**reproduces**")
    assert line(text, "- Lin. self-correction − No self-correction, F = 20: 0 paired seeds; paper +0.40")
    assert "trained on **all of F** for no and linear self-correction" in text and "**half of F** for conv" in text
    assert "| No self-correction | 50.0 ± 0.0 (n=4) | 58.8 ± 3.0 (n=4) |" in text  # Table 1: F = 20, then 40
    assert "| F + W samples per batch | 1 + 15 | 2 + 14 |" in text


def test_a_seed_file_of_another_regime_is_refused_by_the_sweep_and_left_out_of_the_report(bench):
    selfcorr, report = bench
    path = selfcorr.RUNS / "seed0.json"
    path.parent.mkdir(parents=True)
    other = {"seed": 0, "regime": {"regime": {"steps": 1}}, "variants": {"none@F40": result(0.5)}}
    path.write_text(json.dumps(other))
    with pytest.raises(ValueError, match="holds results of another regime"):
        selfcorr.seed_file(0)
    report.write_report()
    text = report.REPORT.read_text()
    assert "No finished runs yet" in text and "Left out: seed0.json (results of another regime" in text


def test_the_report_renders_cleanly_without_runs(bench):
    _, report = bench
    report.write_report()
    text = report.REPORT.read_text()
    assert "No finished runs yet" in text and "selfcorr_control_runs.json" in text and "Left out" not in text


def test_paper_sizes_of_f_are_mapped_by_fraction_of_the_training_set(bench):
    _, report = bench
    assert [report.paper_full(f, 400) for f in (5, 20, 40, 80)] == [200, 400, 800, 1464]
    assert report.paper_full(1464, 10582) == 1464


def test_bad_sizes_of_f_are_refused(bench):
    selfcorr, _ = bench
    with pytest.raises(ValueError, match=r"--fulls \[1, 400\]: F must be at least 2"):
        selfcorr.check_fulls([1, 20, 400])


def test_the_plan_gives_none_and_linear_the_all_of_f_ancillary_and_conv_the_half_of_f_one(tiny, monkeypatch):
    selfcorr, _ = tiny
    from segmend.modules import AncillaryModule
    from segmend.modules.stages import plan_stages, stage_train_set

    cell = selfcorr.Cell(0, F)
    checkpoint = cell.root / "ancillary_full" / "ancillary" / "final.ckpt"

    class Done:  # an untrained ancillary stands in for the trained one (no training in this test)
        final_checkpoint = checkpoint

    def fake_stage(cell_, data):
        assert selfcorr.ANCILLARY_TRAIN_SET["ancillary_full"] == "full"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": cell.regime.model(data.num_classes, AncillaryModule).state_dict()}, checkpoint)
        return Done()

    monkeypatch.setattr(selfcorr, "ancillary_full_stage", fake_stage)
    modules = {c: selfcorr.self_correction(cell, c)[0] for c in ("none", "linear", "conv", "em_fixed")}
    for correction in ("none", "linear"):
        assert modules[correction].hparams.ancillary_checkpoint == str(checkpoint)
        assert plan_stages(modules[correction]) == ("main",)  # the runner's half-of-F ancillary stage is skipped
    assert modules["conv"].hparams.ancillary_checkpoint is None
    assert plan_stages(modules["conv"]) == ("ancillary", "pretrain", "main")
    assert stage_train_set(modules["conv"], "ancillary") == "half_full"
    assert plan_stages(modules["em_fixed"]) == ("main",)
    # every variant of a seed starts from the same primary weights as the plain fullsup module
    data = cell.data()
    from lightning.pytorch import seed_everything

    seed_everything(0, workers=True)
    plain = cell.regime.model(data.num_classes).net.state_dict()
    for module in modules.values():
        assert all(torch.equal(plain[k], v) for k, v in module.net.state_dict().items())


def test_smoke_the_whole_plan_of_a_seed_runs_resumes_and_reports(tiny):
    """Every variant of one seed and F through the real modules and stage runner, 2 steps per stage (~30 s)."""
    selfcorr, report = tiny
    from lightning.pytorch import seed_everything
    from regime import fit

    selfcorr.run_sweep([0], [F], list(selfcorr.VARIANTS))
    saved = json.loads((selfcorr.RUNS / "seed0.json").read_text())
    runs = saved["variants"]
    assert set(runs) == {f"{v}@F{F}" for v in selfcorr.VARIANTS}
    assert saved["regime"] == json.loads(json.dumps(selfcorr.settings())) and "threads" not in saved["regime"]["regime"]
    for key, run in runs.items():
        assert 0 <= run["mIoU"] <= 1 and run["curve"], key
    stages = {
        key: {name: (s["train_set"], s["train_images"]) for name, s in r["stages"].items()} for key, r in runs.items()
    }
    # the ancillary of none / linear is trained on all of F, conv's on half of F (its stage 1)
    assert stages[f"ancillary_full@F{F}"] == {"ancillary": ("full", F)}
    for correction in ("none", "linear"):
        assert runs[f"{correction}@F{F}"]["ancillary_checkpoint"] == "ancillary_full/ancillary/final.ckpt"
        assert stages[f"{correction}@F{F}"] == {"main": ("full+weak", 24)}
    assert stages[f"conv@F{F}"] == {
        "ancillary": ("half_full", F // 2),
        "pretrain": ("full", F),
        "main": ("full+weak", 24),
    }
    assert runs[f"conv@F{F}"]["ancillary_checkpoint"] is None and runs[f"conv@F{F}"]["steps"] == 6
    assert stages[f"ancillary_half@F{F}"] == {"ancillary": ("half_full", F // 2)}
    assert stages[f"f_only@F{F}"] == {"pretrain": ("full", F)}
    assert stages[f"fullsup@F{F}"] == {"fit": ("full+weak_masks", 24)}
    # f_only (conv's stage 2) is a plain module's CE fit on F: the same weights, so the same scores
    cell = selfcorr.Cell(0, F)
    data = cell.data("f_only")
    seed_everything(0, workers=True)
    plain = fit(cell.regime, cell.regime.model(data.num_classes), data)
    assert plain.metrics["mIoU"] == pytest.approx(runs[f"f_only@F{F}"]["mIoU"], abs=1e-6)
    # a re-run trains nothing: finished variants are skipped, and finished stages of a lost variant too
    finals = {p: p.stat().st_mtime_ns for p in cell.root.rglob("final.ckpt")}
    conv = saved["variants"].pop(f"conv@F{F}")
    (selfcorr.RUNS / "seed0.json").write_text(json.dumps(saved))
    selfcorr.run_sweep([0], [F], list(selfcorr.VARIANTS))
    again = json.loads((selfcorr.RUNS / "seed0.json").read_text())["variants"][f"conv@F{F}"]
    assert again["mIoU"] == pytest.approx(conv["mIoU"], abs=1e-6) and again["stages"] == conv["stages"]
    assert {p: p.stat().st_mtime_ns for p in cell.root.rglob("final.ckpt")} == finals
    report.write_report()
    text = report.REPORT.read_text()
    assert "| F + W samples per batch | 1 + 3 |" in text
    conv = line(text, f"- Conv. self-correction − No self-correction, F = {F}")
    assert ": 1 paired seed (" in conv and conv.endswith("**not resolved (fewer than 2 seeds)**")


def test_a_killed_multi_stage_run_resumes_its_unfinished_stage_with_its_curve(tiny, monkeypatch):
    selfcorr, _ = tiny
    from lightning.pytorch import Callback

    monkeypatch.setattr(selfcorr, "REGIME", dataclasses.replace(selfcorr.REGIME, steps=4, val_every=2))
    monkeypatch.setattr(selfcorr, "RESUME", selfcorr.ResumePolicy(interval=0.0))  # last.ckpt after every step

    class Kill(Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 3:
                raise RuntimeError("killed")

    factory = selfcorr.trainer_factory

    def killing_factory(regime, root):
        def build(stage, **overrides):
            trainer = factory(regime, root)(stage, **overrides)
            if stage == "main" and not killed:
                killed.append(stage)
                trainer.callbacks.insert(0, Kill())
            return trainer

        return build

    killed: list[str] = []
    monkeypatch.setattr(selfcorr, "trainer_factory", killing_factory)
    with pytest.raises(RuntimeError, match="killed"):
        selfcorr.run_sweep([0], [F], ["conv"])
    assert not (selfcorr.RUNS / "seed0.json").exists()  # nothing finished, nothing recorded
    root = selfcorr.Cell(0, F).root / "conv"
    finals = {p: p.stat().st_mtime_ns for p in root.rglob("final.ckpt")}
    assert sorted(p.parent.name for p in finals) == ["ancillary", "pretrain"]
    selfcorr.run_sweep([0], [F], ["conv"])
    conv = json.loads((selfcorr.RUNS / "seed0.json").read_text())["variants"][f"conv@F{F}"]
    assert {p: p.stat().st_mtime_ns for p in finals} == finals  # stages 1 and 2 were not trained again
    main = conv["stages"]["main"]
    assert main["resumed"] and main["steps"] == 4 and [p[0] for p in main["curve"]] == [2, 4]
    assert not conv["stages"]["pretrain"]["resumed"]


@pytest.fixture(autouse=True)
def _forget_bench_modules():
    """Each test imports the bench modules afresh (they hold module-level paths)."""
    yield
    for name in ("selfcorr", "selfcorr_report", "regime", "harness", "verdicts", "provenance"):
        sys.modules.pop(name, None)
