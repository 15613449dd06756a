"""The MAD loop as a callback between fits: rounds, files, waiting for people, unreadable pool images."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback
from PIL import Image

from segmend.callbacks import MADTroubleshooting
from segmend.callbacks.mad_pool import CompetitorCache
from segmend.callbacks.mad_round import MADRoundSteps, validation_source
from segmend.cli import main
from segmend.datamodules import ImageFolderPoolDataModule, SyntheticDataModule
from segmend.mad.human_files import write_label_mask, write_rater_scores
from segmend.mad.layout import MADLayout
from segmend.mad.oracle import SimulatedOracle
from segmend.mad.report import VAL_HEADER
from segmend.mad.state import MADState
from segmend.modules import SegmentationModule
from segmend.runs import fit
from tests.fixtures.cli import REPO, fast_cli_args
from tests.fixtures.data import TINY_SYNTHETIC
from tests.fixtures.mad import markdown_rows
from tests.fixtures.trainer import TINY_TRAINER

CONFIG = REPO / "configs" / "mad_synthetic.yaml"

TRAINER = TINY_TRAINER
LOOP = {"n3": 5, "n4": 2, "test_size": 2, "per_class": 2, "bounds_statistic": "none", "finetune_steps": 2}


class BatchIds(Callback):
    """Records the ids of every training batch, by stage folder."""

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = {}

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.seen.setdefault(Path(trainer.default_root_dir).name, []).extend(batch["id"])


def data(cache: Path) -> SyntheticDataModule:
    return SyntheticDataModule(cache_dir=str(cache), **{**TINY_SYNTHETIC, "num_wild": 24})


def target(datamodule: SyntheticDataModule) -> SegmentationModule:
    return SegmentationModule(num_classes=datamodule.num_classes, class_names=datamodule.class_names,
                              arch="Unet", encoder_name="resnet18")  # fmt: skip


def val_miou(checkpoint: Path, datamodule: SyntheticDataModule) -> float:
    """MIoU of a checkpoint's SegmentationModule on the val split, computed here (not with the loop's code).

    The val images are one batch (they are of one size), as in the loop (``eval_batch_size`` >= their number).
    """
    module = SegmentationModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    samples = [datamodule.dataset("val", False)[k] for k in range(TINY_SYNTHETIC["num_val"])]
    with torch.no_grad():
        predictions = module(torch.stack([s["image"] for s in samples])).argmax(1)
    num_classes = datamodule.num_classes
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for sample, prediction in zip(samples, predictions, strict=True):
        h, w = sample["content_size"].tolist()
        label, pred = sample["mask"][:h, :w].numpy(), prediction[:h, :w].numpy()
        np.add.at(confusion, (label[label != 255], pred[label != 255]), 1)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    return float(np.mean(np.diag(confusion)[union > 0] / union[union > 0]))


def test_two_round_simulated_loop(tmp_path: Path, data_cache: Path, monkeypatch: pytest.MonkeyPatch):
    loads: list[str] = []
    original = CompetitorCache.model

    def counted(self: CompetitorCache, device: Any) -> Any:
        if self._model is None:
            loads.append(self.name)
        return original(self, device)

    monkeypatch.setattr(CompetitorCache, "model", counted)
    datamodule = data(data_cache)
    mad = MADTroubleshooting(competitors=["FPN:resnet18"], pool_split="wild", oracle="simulated", noise_std=0.0,
                             rounds=2, **LOOP)  # fmt: skip
    batches = BatchIds()
    run = fit(target(datamodule), datamodule, tmp_path, callbacks=[mad, batches], **TRAINER)
    assert run.completed, run
    assert [s.name for s in run.stages] == ["mad_competitor_0_FPN-resnet18", "mad_target", "mad_round_1",
                                            "mad_round_2"]  # fmt: skip
    state = MADState(tmp_path)
    assert [state.round(r).phase for r in range(3)] == ["finetuned", "finetuned", "evaluated"]
    layout = MADLayout(tmp_path)
    for r in range(3):
        record = state.round(r)
        assert record.raters == ("simulated1", "simulated2", "simulated3")
        assert len(record.counterexamples) <= 2 and (r > 0 or (record.counterexamples and record.test))
        assert not set(record.counterexamples) & set(record.test)
        for image in record.counterexamples + record.test:
            assert layout.label_file(r, image).is_file()
        assert layout.stats_file(r).is_file() and layout.candidates_file(r).is_file()
        metrics = state.load_metrics(r)
        if record.test:  # images labelled in earlier rounds never join T again: a tiny pool may run out
            assert 0.0 <= metrics["target"]["mIoU"] <= 1.0
            assert 0.0 <= metrics["competitors"]["FPN-resnet18"]["mIoU"] <= 1.0
        assert set(metrics["competitors"]) == {"FPN-resnet18"}
        assert metrics["S"] == len(record.counterexamples) and metrics["T"] == len(record.test)
    # the competitor ran over the pool once (round 0); later rounds read its cached maps
    assert loads == ["FPN-resnet18"]
    # the paper's T^(0): round 0 evaluates the initial target and every competitor on the val split, once
    val = state.load_metrics(0)["val"]
    assert val["images"] == TINY_SYNTHETIC["num_val"] and set(val["competitors"]) == {"FPN-resnet18"}
    target_val = val_miou(tmp_path / "mad_target" / "final.ckpt", datamodule)
    assert val["target"]["mIoU"] == pytest.approx(target_val, abs=1e-9)
    competitor_val = val_miou(tmp_path / "mad_competitor_0_FPN-resnet18" / "final.ckpt", datamodule)
    assert val["competitors"]["FPN-resnet18"]["mIoU"] == pytest.approx(competitor_val, abs=1e-9)
    assert all("val" not in state.load_metrics(r) for r in (1, 2))
    rows = markdown_rows((layout.root / "report.md").read_text())
    assert rows["model"] == [VAL_HEADER, "T(0)", "T(1)", "T(2)"]
    assert rows["target"][0] == f"{target_val:.3f}" and rows["FPN-resnet18"][0] == f"{competitor_val:.3f}"
    # S is accumulated and never picked again; it joins the training data of the next rounds, in every batch
    s0, s1 = state.round(0).counterexamples, state.round(1).counterexamples
    assert s1 and not set(s0) & set(s1)
    assert set(datamodule.extra_labelled) == set(s0) | set(s1)
    round1 = batches.seen["mad_round_1"]
    assert set(round1) & set(s0) and set(round1) - set(s0)
    assert not set(batches.seen["mad_target"]) & set(s0)
    assert set(batches.seen["mad_round_2"]) & (set(s0) | set(s1))
    # a re-run finds every stage done and changes nothing
    before = layout.state_file.read_text()
    again = fit(target(datamodule), datamodule, tmp_path, callbacks=[mad], **TRAINER)
    assert {s.status for s in again.stages} == {"skipped"}
    assert layout.state_file.read_text() == before


def test_waiting_for_people_stops_then_continues(tmp_path: Path, data_cache: Path):
    datamodule = data(data_cache)
    mad = MADTroubleshooting(competitors=["FPN:resnet18"], pool_split="wild", oracle="files", rounds=1, **LOOP)
    layout = MADLayout(tmp_path)

    first = fit(target(datamodule), datamodule, tmp_path, callbacks=[mad], **TRAINER)
    assert first.stopped is not None and "weak scores" in first.stopped
    assert str(layout.readme_file(0)) in first.stopped
    assert layout.readme_file(0).is_file()
    assert first.stages[-1].name == "mad_round_1" and first.stages[-1].status == "stopped"
    state = MADState(tmp_path)
    assert state.round(0).phase == "candidates"
    candidates = state.load_candidates(0).ids
    assert candidates and all(layout.prediction_file(0, i).is_file() for i in candidates)
    sizes = state.load_candidates(0).sizes  # the images people see, upright, in the run folder (the rating page's)
    assert all(Image.open(layout.image_file(0, i)).size == sizes[i][::-1] for i in candidates)

    # a rater scores every candidate: the re-run selects S and T, then waits for their labels
    write_rater_scores(layout.scores_file(0, "alice"), 0, "alice", dict.fromkeys(candidates, 2))
    second = fit(target(datamodule), datamodule, tmp_path, callbacks=[mad], **TRAINER)
    assert second.stopped is not None and "pixel labels" in second.stopped
    assert [s.status for s in second.stages[:2]] == ["skipped", "skipped"]
    record = MADState(tmp_path).round(0)
    assert record.phase == "selected" and record.raters == ("alice",)

    masks = Path(datamodule.root) / "SegmentationClass"
    from segmend.datamodules.voc_format import read_index_mask

    for image in record.counterexamples + record.test:
        write_label_mask(layout.label_file(0, image), read_index_mask(masks / f"{image}.png"))
    third = fit(target(datamodule), datamodule, tmp_path, callbacks=[mad], **TRAINER)
    state = MADState(tmp_path)
    assert state.round(0).phase == "finetuned"  # round 1 trained on S of round 0
    assert [s.name for s in third.stages][-2:] == ["mad_round_1", "mad_complete_1"]
    assert state.round(1).phase == "candidates" and "round 1 waits for weak scores" in third.stopped
    assert set(datamodule.extra_labelled) == set(record.counterexamples)


def test_unreadable_pool_images_are_skipped_and_reported(tmp_path: Path, data_cache: Path):
    datamodule = data(data_cache)
    datamodule.prepare_data()
    pool = tmp_path / "pool"
    pool.mkdir()
    for image in (Path(datamodule.root) / "ImageSets/Segmentation/wild.txt").read_text().split():
        shutil.copy(Path(datamodule.root) / "JPEGImages" / f"{image}.jpg", pool / f"{image}.jpg")
    (pool / "broken.jpg").write_bytes(b"not a jpeg")
    mad = MADTroubleshooting(competitors=["FPN:resnet18"], pool_root=str(pool), oracle="simulated", rounds=0, **LOOP)
    run = fit(target(datamodule), datamodule, tmp_path / "run", callbacks=[mad], **TRAINER)
    assert run.completed
    state = MADState(tmp_path / "run")
    stats = state.load_stats(0)
    assert stats.unreadable_ids == ["broken.jpg"]
    assert state.load_candidates(0).selection.skipped == ["broken.jpg"]
    assert "broken.jpg" not in state.load_candidates(0).ids
    assert state.round(0).phase == "evaluated"
    assert all(np.isfinite(stats.discrepancy[:, stats.readable]).ravel())
    report = json.loads((MADLayout(tmp_path / "run").round_dir(0) / "pool_report.json").read_text())
    assert [entry["path"] for entry in report["skipped"]] == ["broken.jpg"] and report["num_images"] == 24


def test_a_wrong_pool_root_stops_the_run_before_any_training(tmp_path: Path, data_cache: Path):
    datamodule = data(data_cache)
    module = target(datamodule)
    before = {key: value.clone() for key, value in module.state_dict().items()}
    mad = MADTroubleshooting(competitors=["FPN:resnet18"], pool_root=str(tmp_path / "nowhere"), rounds=0, **LOOP)
    with pytest.raises(
        FileNotFoundError, match=r"looked at .*nowhere, expected a folder tree of images.*Set `pool_root`"
    ):
        fit(module, datamodule, tmp_path / "run", callbacks=[mad], **TRAINER)
    assert all(torch.equal(before[key], value) for key, value in module.state_dict().items())  # nothing trained
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_no_validation_split_is_recorded_as_none(tmp_path: Path, tiny_synthetic: SyntheticDataModule):
    images_only = ImageFolderPoolDataModule(root=str(tmp_path), class_names=["background", "thing"])
    for datamodule in (images_only, object()):
        assert validation_source(datamodule)[0] is None
        with pytest.warns(UserWarning, match="has no validation split"):
            assert MADRoundSteps.evaluate_val(datamodule, None, [], torch.device("cpu"), 2) is None
    source, missing = validation_source(tiny_synthetic)
    assert missing is None and len(source.ids) == TINY_SYNTHETIC["num_val"]


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="exactly one of pool_split"):
        MADTroubleshooting(competitors=["FPN:resnet18"])
    with pytest.raises(ValueError, match="needs competitors"):
        MADTroubleshooting(pool_split="wild")
    with pytest.raises(ValueError, match="oracle must be"):
        MADTroubleshooting(competitors=["FPN:resnet18"], pool_split="wild", oracle="people")


def _cli_args(run_dir: Path, data_cache: Path, *extra: str) -> list[str]:
    args = [a for a in fast_cli_args(CONFIG, run_dir, data_cache) if "fast_dev_run" not in a]
    loop = [f"--trainer.callbacks.init_args.{key}={value}" for key, value in {**LOOP, "rounds": 0}.items()]
    return [*args, "--data.init_args.num_wild=12", "--trainer.max_steps=2", "--trainer.limit_val_batches=1",
            "--data.init_args.eval_batch_size=3", *loop, *extra]  # fmt: skip


def test_config_runs_the_loop_through_the_cli(tmp_path: Path, data_cache: Path):
    main(["fit", *fast_cli_args(CONFIG, tmp_path, data_cache)])
    state = MADState(tmp_path)
    assert [state.round(r).phase for r in range(3)] == ["finetuned", "finetuned", "evaluated"]
    assert all(MADLayout(tmp_path).metrics_file(r).is_file() for r in range(3))
    assert len(list((MADLayout(tmp_path).root / "competitors").iterdir())) == 2


def test_two_processes_select_what_one_selects(tmp_path: Path, data_cache: Path):
    """DDP on CPU (gloo): the pool sharded over 2 ranks gives the statistics, M, S and T of 1 process."""
    one, two = tmp_path / "one", tmp_path / "two"
    main(["fit", *_cli_args(one, data_cache)])
    reference = MADState(one)
    assert reference.round(0).phase == "evaluated"
    # the same trained weights: the finished stages are found done, round 0 is mined by 2 processes
    for stage in one.glob("mad_*"):
        (two / stage.name).mkdir(parents=True)
        shutil.copy(stage / "final.ckpt", two / stage.name / "final.ckpt")
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2"]
    command = [str(Path(sys.executable).parent / "segmend"), "fit", *_cli_args(two, data_cache, *ddp)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    assert "stage 4 'mad_complete_0'" in result.stdout + result.stderr  # mined by the 2 processes
    state = MADState(two)
    assert state.round(0).phase == "evaluated"
    a, b = reference.load_stats(0), state.load_stats(0)
    assert a.ids.tolist() == b.ids.tolist()
    np.testing.assert_allclose(a.discrepancy, b.discrepancy, atol=1e-6)
    np.testing.assert_allclose(a.target_fractions, b.target_fractions, atol=1e-6)
    assert reference.load_candidates(0).ids and state.load_candidates(0).ids == reference.load_candidates(0).ids
    assert state.load_selection(0) == reference.load_selection(0)
    assert state.load_scores(0) == reference.load_scores(0)


class CrashingOracle:
    """A simulated oracle that counts its requests and dies (like a kill) at the first label request."""

    def __init__(self, inner: SimulatedOracle, crash: str | None) -> None:
        self.inner, self.crash = inner, crash
        self.calls: list[tuple[str, int]] = []

    def request_scores(self, round_index: int, predictions: Any) -> Any:
        self.calls.append(("scores", round_index))
        if self.crash == "scores":
            raise KilledError("killed while people were scoring")
        return self.inner.request_scores(round_index, predictions)

    def request_labels(self, round_index: int, ids: Any, sizes: Any = None) -> Any:
        self.calls.append(("labels", round_index))
        if self.crash == "labels":
            raise KilledError("killed while people were labelling")
        return self.inner.request_labels(round_index, ids, sizes)


class KilledError(RuntimeError):
    """Stands for a kill."""


@pytest.mark.parametrize("kill_at", ["scores", "labels"])
def test_a_kill_between_steps_resumes_without_redoing_them(kill_at: str, tmp_path: Path, data_cache: Path,
                                                           monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    datamodule = data(data_cache)
    oracle = CrashingOracle(SimulatedOracle.from_synthetic_wild(datamodule, noise_std=0.0), crash=kill_at)
    mad = MADTroubleshooting(competitors=["FPN:resnet18"], pool_split="wild", oracle=oracle, rounds=0, **LOOP)
    with pytest.raises(KilledError):
        fit(target(datamodule), datamodule, tmp_path, callbacks=[mad], **TRAINER)
    state = MADState(tmp_path)
    assert state.round(0).phase == {"scores": "candidates", "labels": "selected"}[kill_at]
    stats_file, candidates_file = MADLayout(tmp_path).stats_file(0), MADLayout(tmp_path).candidates_file(0)
    stamps = stats_file.stat().st_mtime_ns, candidates_file.stat().st_mtime_ns
    scores = state.load_scores(0) if kill_at == "labels" else None

    mined: list[int] = []
    import segmend.callbacks.mad as mad_module

    original = mad_module.pool_statistics
    monkeypatch.setattr(mad_module, "pool_statistics", lambda *a, **k: mined.append(1) or original(*a, **k))
    oracle.crash, oracle.calls = None, []
    fit(target(datamodule), datamodule, tmp_path, callbacks=[mad], **TRAINER)
    state = MADState(tmp_path)
    assert state.round(0).phase == "evaluated"
    assert mined == []  # the finished inference is read back, M is not rebuilt
    assert (stats_file.stat().st_mtime_ns, candidates_file.stat().st_mtime_ns) == stamps
    if kill_at == "labels":
        assert oracle.calls == [("labels", 0)]  # the scores were kept, only the labels were asked again
        assert state.load_scores(0) == scores
    else:
        assert oracle.calls == [("scores", 0), ("labels", 0)]


def test_cli_stops_cleanly_while_people_are_not_done(tmp_path: Path, data_cache: Path, capsys: pytest.CaptureFixture):
    main(["fit", *_cli_args(tmp_path, data_cache, "--trainer.callbacks.init_args.oracle=files")])
    out = capsys.readouterr().out
    readme = MADLayout(tmp_path).readme_file(0)
    assert "segmend: the run stopped: round 0 waits for weak scores" in out and str(readme) in out
    assert readme.is_file() and MADState(tmp_path).round(0).phase == "candidates"
    assert not (tmp_path / "mad_complete_0" / "final.ckpt").exists()  # asked again by the next run


def test_datamodule_mixes_labelled_images_into_every_batch(tmp_path: Path, data_cache: Path):
    datamodule = data(data_cache)
    datamodule.setup("fit")
    masks = Path(datamodule.root) / "SegmentationClass"
    images = Path(datamodule.root) / "JPEGImages"
    extra = {i: (images / f"{i}.jpg", masks / f"{i}.png") for i in ("wild_00001", "wild_00002")}
    datamodule.add_labelled(extra, per_batch=1)
    loaders = datamodule.train_dataloader()
    batch = datamodule.on_before_batch_transfer({k: next(iter(v)) for k, v in loaders.items()}, 0)
    assert len(batch["id"]) == datamodule.batch_size and batch["id"][-1] in extra
    assert batch["has_mask"].all() and (batch["mask"][-1] != 255).any()
    restored = data(data_cache)
    restored.load_state_dict(datamodule.state_dict())
    assert restored.extra_labelled == {k: (str(a), str(b)) for k, (a, b) in extra.items()}
    with pytest.raises(ValueError, match="per_batch"):
        restored.add_labelled(extra, per_batch=datamodule.batch_size)


def test_own_trainers_each_fit_is_a_round(tmp_path: Path, data_cache: Path):
    """Without the runner: every trainer.fit with the callback is one round (competitors given as checkpoints)."""
    import torch
    from lightning.pytorch import Trainer

    datamodule = data(data_cache)
    competitor = SegmentationModule(num_classes=datamodule.num_classes, arch="FPN", encoder_name="resnet18")
    checkpoint = tmp_path / "fpn.ckpt"
    torch.save({"state_dict": competitor.state_dict(), "hyper_parameters": dict(competitor.hparams)}, checkpoint)
    mad = MADTroubleshooting(competitors=[str(checkpoint)], pool_split="wild", oracle="simulated", **LOOP)
    model = target(datamodule)
    options = {key: value for key, value in TRAINER.items() if key != "logger"}
    for _ in range(2):
        trainer = Trainer(default_root_dir=str(tmp_path), callbacks=[mad], logger=False, **options)
        trainer.fit(model, datamodule=datamodule)
    state = MADState(tmp_path)
    assert [state.round(r).phase for r in range(2)] == ["finetuned", "evaluated"]
    assert set(datamodule.extra_labelled) == set(state.round(0).counterexamples)
    assert set(state.load_metrics(1)["competitors"]) == {"fpn"}
    assert trainer.optimizers[0].defaults["lr"] == mad.finetune_lr  # the second fit fine-tuned with SGD
    assert type(trainer.optimizers[0]).__name__ == "SGD"


def test_other_strategy_without_competitors_asks_no_scores(tmp_path: Path, data_cache: Path):
    datamodule = data(data_cache)
    mad = MADTroubleshooting(pool_split="wild", oracle="simulated", strategy="entropy", rounds=1, **LOOP)
    run = fit(target(datamodule), datamodule, tmp_path, callbacks=[mad], **TRAINER)
    assert run.completed
    state = MADState(tmp_path)
    assert [state.round(r).phase for r in range(2)] == ["finetuned", "evaluated"]
    stats = state.load_stats(0)
    entropy = dict(zip(stats.ids.tolist(), stats.scalar("entropy").tolist(), strict=True))
    s0 = state.round(0).counterexamples
    assert len(s0) == 2 and min(entropy[i] for i in s0) >= sorted(entropy.values())[-2]  # the highest entropy
    assert state.round(0).raters == () and not MADLayout(tmp_path).scores_dir(0).exists()
    assert state.load_metrics(0)["competitors"] == {}
