"""Properties of the whole MAD loop (issue 13's tests): the simulated loop improves the target, and a
kill right after any phase of a round is recorded resumes with nothing lost and nothing redone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything

from segmend.callbacks import MADTroubleshooting
from segmend.callbacks.mad_pool import PoolSource, dataset_miou, predict_maps
from segmend.datamodules import SyntheticDataModule
from segmend.mad.layout import MADLayout
from segmend.mad.oracle import SimulatedOracle
from segmend.mad.state import PHASES, MADState
from segmend.modules import SegmentationModule
from segmend.runs import fit
from tests.fixtures.data import TINY_SYNTHETIC
from tests.fixtures.trainer import TINY_TRAINER

TRAINER = TINY_TRAINER
SEED = 0  # seeds 0, 1, 2 checked by hand: mIoU on the in-domain wild images 0.03->0.15, 0.09->0.18, 0.03->0.15


def data(cache: Path) -> SyntheticDataModule:
    return SyntheticDataModule(cache_dir=str(cache), **{**TINY_SYNTHETIC, "num_wild": 24})


def target(datamodule: SyntheticDataModule) -> SegmentationModule:
    return SegmentationModule(num_classes=datamodule.num_classes, class_names=datamodule.class_names,
                              arch="Unet", encoder_name="resnet18")  # fmt: skip


# ---------------------------------------------------------------------------------------------- 1


def _miou_of(checkpoint: Path, datamodule: SyntheticDataModule, ids: list[str], truth: dict[str, np.ndarray]) -> float:
    module = target(datamodule)
    module.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"])
    module.eval()
    source = PoolSource(datamodule.dataset("wild", False))
    maps = predict_maps(module, source, ids, torch.device("cpu"))
    return dataset_miou([maps[i] for i in ids], [truth[i] for i in ids], datamodule.num_classes)


IMPROVE = {"n3": 5, "n4": 4, "test_size": 4, "per_class": 2, "bounds_statistic": "none", "finetune_steps": 12,
           "finetune_lr": 0.01}  # fmt: skip


def test_simulated_loop_improves_the_target_on_a_fixed_test_set(tmp_path: Path, data_cache: Path):
    datamodule = data(data_cache)
    seed_everything(SEED, workers=True)
    mad = MADTroubleshooting(competitors=["FPN:resnet18"], pool_split="wild", oracle="simulated", noise_std=0.0,
                             rounds=2, **IMPROVE)  # fmt: skip
    run = fit(target(datamodule), datamodule, tmp_path, callbacks=[mad], **TRAINER)
    assert run.completed, run
    state = MADState(tmp_path)
    assert state.round(2).phase == "evaluated"
    # the fixed set: every in-domain image of the wild split, with its ground truth (the same images before and after)
    oracle = SimulatedOracle.from_synthetic_wild(datamodule)
    source = PoolSource(datamodule.dataset("wild", False))
    ids = [i for i in source.ids if not oracle.is_out_of_domain(i)]
    assert len(ids) >= 10
    truth = {i: np.asarray(oracle.ground_truth(i)) for i in ids}
    before = _miou_of(tmp_path / "mad_target" / "final.ckpt", datamodule, ids, truth)
    after = _miou_of(tmp_path / "mad_round_2" / "final.ckpt", datamodule, ids, truth)
    print(f"mIoU on {len(ids)} in-domain wild images: before {before:.4f}, after {after:.4f}")
    assert after > before + 0.02, (before, after)
    # and on round 0's T (the paper's T(0)), read with the labels the oracle gave
    test0 = list(state.round(0).test)
    labels0 = state.load_labels(0, test0)
    t_before = _miou_of(tmp_path / "mad_target" / "final.ckpt", datamodule, test0, labels0)
    t_after = _miou_of(tmp_path / "mad_round_2" / "final.ckpt", datamodule, test0, labels0)
    print(f"mIoU on T(0) ({len(test0)} images): before {t_before:.4f}, after {t_after:.4f}")
    assert t_before == pytest.approx(state.load_metrics(0)["target"]["mIoU"], abs=1e-9)
    assert t_after > t_before, (t_before, t_after)


# ---------------------------------------------------------------------------------------------- 2

KILL = {
    "n3": 5,
    "n4": 2,
    "test_size": 2,
    "per_class": 2,
    "bounds_statistic": "none",
    "finetune_steps": 3,
}  # 3: ends mid-epoch
KILL_ROUND = 1  # a fine-tuned round: its fit trained on S of round 0 before the kill
KILL_PHASES = [p for p in PHASES if p != "finetuned"]  # mined ... evaluated: the steps of a round


class KilledError(BaseException):
    """Stands for a kill (a BaseException, like KeyboardInterrupt: no ``except Exception`` catches it)."""


class CountingOracle:
    """The simulated oracle, counting its requests."""

    def __init__(self, inner: SimulatedOracle) -> None:
        self.inner = inner
        self.calls: list[tuple[str, int]] = []

    def request_scores(self, round_index: int, predictions: Any) -> Any:
        self.calls.append(("scores", round_index))
        return self.inner.request_scores(round_index, predictions)

    def request_labels(self, round_index: int, ids: Any, sizes: Any = None) -> Any:
        self.calls.append(("labels", round_index))
        return self.inner.request_labels(round_index, ids, sizes)


def _run(run_dir: Path, data_cache: Path) -> tuple[Any, CountingOracle]:
    datamodule = data(data_cache)
    oracle = CountingOracle(SimulatedOracle.from_synthetic_wild(datamodule, noise_std=0.0))
    mad = MADTroubleshooting(competitors=["FPN:resnet18"], pool_split="wild", oracle=oracle, rounds=KILL_ROUND, **KILL)
    seed_everything(SEED, workers=True)
    return fit(target(datamodule), datamodule, run_dir, callbacks=[mad], **TRAINER), oracle


def _files(run_dir: Path) -> dict[str, Any]:
    """Every round's M, pool statistics, scores, S and T, labels and metrics, as plain comparable values."""
    state = MADState(run_dir)
    out: dict[str, Any] = {}
    for r in sorted(state.rounds):
        record = state.round(r)
        stats = state.load_stats(r)
        out[r] = {
            "phase": record.phase,
            "stats": (
                stats.ids.tolist(),
                stats.readable.tolist(),
                np.round(stats.discrepancy, 6).tolist(),
                np.round(stats.target_fractions, 6).tolist(),
            ),
            "M": state.load_candidates(r).ids,
            "sizes": state.load_candidates(r).sizes,
            "scores": state.load_scores(r),
            "selection": state.load_selection(r),
            "S": record.counterexamples,
            "T": record.test,
            "labels": {i: m.tolist() for i, m in state.load_labels(r).items()},
            "metrics": state.load_metrics(r),
        }
    return out


def _bytes(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def _weights(run_dir: Path) -> dict[str, list[float]]:
    """The fine-tuned round's final weights (a kill in its fit's end re-trains it: to the same weights)."""
    state = torch.load(run_dir / f"mad_round_{KILL_ROUND}" / "final.ckpt", map_location="cpu", weights_only=False)
    return {k: v.flatten().tolist() for k, v in state["state_dict"].items() if v.is_floating_point()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_cache: Path) -> dict[str, Any]:
    """One uninterrupted run of the loop (round 0 and one fine-tuned round)."""
    run_dir = tmp_path_factory.mktemp("mad-reference")
    run, oracle = _run(run_dir, data_cache)
    assert run.completed, run
    files = _files(run_dir)
    files["weights"] = _weights(run_dir)
    assert [files[r]["phase"] for r in range(KILL_ROUND + 1)] == ["finetuned"] * KILL_ROUND + ["evaluated"]
    assert files[KILL_ROUND]["scores"] and files[KILL_ROUND]["labels"]  # the killed round has something to lose
    assert oracle.calls == [(kind, r) for r in range(KILL_ROUND + 1) for kind in ("scores", "labels")]
    return files


@pytest.mark.parametrize("phase", KILL_PHASES)
def test_a_kill_right_after_each_phase_resumes_with_nothing_lost(
    phase: str, reference: dict[str, Any], tmp_path: Path, data_cache: Path, monkeypatch: pytest.MonkeyPatch
):
    import segmend.callbacks.mad as mad_module

    # the kill: right after state.json records `phase` of the round (its files are written before)
    original_advance = MADState.advance
    killed: list[str] = []

    def advance_then_die(self: MADState, round_index: int, reached: str, *args: Any, **kwargs: Any) -> Any:
        result = original_advance(self, round_index, reached, *args, **kwargs)
        if round_index == KILL_ROUND and reached == phase and not killed:
            killed.append(reached)
            raise KilledError(f"killed after round {round_index} reached {reached!r}")
        return result

    monkeypatch.setattr(MADState, "advance", advance_then_die)
    with pytest.raises(KilledError):
        _run(tmp_path, data_cache)
    assert killed == [phase]
    state = MADState(tmp_path)
    assert state.round(KILL_ROUND).phase == phase
    layout = MADLayout(tmp_path)
    before = _bytes(layout.round_dir(KILL_ROUND))
    kept = {
        name: value
        for name, value in before.items()
        if name.startswith(("scores/", "labels/")) or name in ("stats.npz", "candidates.json", "selection.json")
    }
    assert "stats.npz" in kept
    assert any(name.startswith("scores/") for name in kept) == state.reached(KILL_ROUND, "scored")
    assert any(name.startswith("labels/") for name in kept) == state.reached(KILL_ROUND, "labelled")

    # the re-run of the same fit, counting inference over the pool, training steps and the oracle's requests
    mined: list[int] = []
    original_mining = mad_module.pool_statistics
    monkeypatch.setattr(mad_module, "pool_statistics", lambda *a, **k: mined.append(1) or original_mining(*a, **k))
    trained: list[int] = []
    original_step = SegmentationModule.training_step
    monkeypatch.setattr(
        SegmentationModule, "training_step", lambda self, *a, **k: trained.append(1) or original_step(self, *a, **k)
    )
    run, oracle = _run(tmp_path, data_cache)
    assert run.completed, run
    assert mined == []  # the finished inference of every round is read back, never redone
    assert trained == []  # the killed round's fit resumes at its last step: the weights that mined, not retrained
    asked = [kind for kind, r in oracle.calls]
    assert all(r == KILL_ROUND for _, r in oracle.calls)
    assert asked == [k for k, p in (("scores", "scored"), ("labels", "labelled")) if not state.reached(KILL_ROUND, p)]
    # what was written before the kill is untouched (same bytes, not rewritten)
    after = _bytes(layout.round_dir(KILL_ROUND))
    assert {name: after.get(name) for name in kept} == kept
    # and the finished run's files equal the uninterrupted run's
    assert {**_files(tmp_path), "weights": _weights(tmp_path)} == reference
