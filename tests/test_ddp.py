"""DDP on CPU with two processes: a fit, and evaluation scores that equal a one-process run's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch import Callback, LightningModule, Trainer

from segmend.cli import main
from segmend.datamodules import SyntheticDataModule
from segmend.modules import SegmentationModule
from tests.fixtures.cli import REPO, fast_cli_args
from tests.fixtures.data import TINY_SYNTHETIC


def test_ddp_fit_on_two_cpu_processes(tmp_path: Path, data_cache: Path):
    config = REPO / "configs" / "baseline_synthetic.yaml"
    args = [a for a in fast_cli_args(config, tmp_path, data_cache) if "fast_dev_run" not in a]
    args += [
        "--trainer.strategy=ddp",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--data.init_args.eval_batch_size=2",
    ]
    script = Path(sys.executable).parent / "segmend"
    result = subprocess.run([str(script), "fit", *args], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    found = re.search(r"Final validation: val/mIoU ([0-9.]+)", result.stdout)
    assert found, result.stdout[-2000:]
    ddp_miou = float(found.group(1))

    # the same weights validated in one process over the whole val split give the same score
    checkpoints = sorted(tmp_path.rglob("last.ckpt"))
    assert checkpoints, list(tmp_path.rglob("*"))
    module = SegmentationModule.load_from_checkpoint(checkpoints[0], map_location="cpu")
    datamodule = SyntheticDataModule(cache_dir=str(data_cache), **{**TINY_SYNTHETIC, "eval_batch_size": 2})
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    single = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    assert single["val/mIoU"] == pytest.approx(ddp_miou, abs=1e-4)


class WriteEvalMetrics(Callback):
    """Write the metrics of a finished validate / test run (rank 0) as JSON."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _write(self, trainer: Trainer) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
            Path(self.path).write_text(json.dumps(metrics))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._write(trainer)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._write(trainer)


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_odd_eval_set_scores_equal_on_one_and_two_processes(stage: str, tmp_path: Path, data_cache: Path):
    """7 images on 2 ranks: shards of 4 and 3, none repeated, so the summed confusion matrix equals one process's."""
    config = REPO / "configs" / "baseline_synthetic.yaml"
    common = [a for a in fast_cli_args(config, tmp_path, data_cache) if "fast_dev_run" not in a]
    common += ["--data.init_args.num_val=7"]
    main(["fit", *common, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"])
    checkpoint = sorted(tmp_path.rglob("last.ckpt"))[0]
    # eval batch 1: rank 0 runs 4 steps and rank 1 runs 3, so nothing may synchronise per step
    evaluate = [*common, f"--ckpt_path={checkpoint}", "--data.init_args.eval_batch_size=1"]
    evaluate += ["--trainer.callbacks+=tests.test_ddp.WriteEvalMetrics"]

    one = tmp_path / "one.json"
    main([stage, *evaluate, f"--trainer.callbacks.path={one}"])

    two = tmp_path / "two.json"
    ddp = ["--trainer.strategy=ddp", "--trainer.accelerator=cpu", "--trainer.devices=2"]
    script = Path(sys.executable).parent / "segmend"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [str(script), stage, *evaluate, f"--trainer.callbacks.path={two}", *ddp]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-4000:]

    prefix = "val" if stage == "validate" else "test"
    single, double = json.loads(one.read_text()), json.loads(two.read_text())
    for name in ("aAcc", "mIoU", "mAcc"):
        key = f"{prefix}/{name}"
        assert double[key] == pytest.approx(single[key], abs=1e-6), (key, single, double)
    assert double[f"{prefix}/loss"] == pytest.approx(single[f"{prefix}/loss"], abs=1e-5)
