"""Logging under DDP on CPU (two processes): no needless sync_dist advice; rank-0-only writers do not hang."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures.cli import REPO, fast_cli_args


def run_cli(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``segmend`` in its own process group, killing every process of the run (both ranks) on a timeout."""
    script = Path(sys.executable).parent / "segmend"
    with subprocess.Popen(
        [str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"the DDP run hung for {timeout} s; stderr:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_ddp_fit_has_no_sync_dist_warnings_and_rank_zero_writers_do_not_hang(tmp_path: Path, data_cache: Path):
    """ARM's config, plotting its ARM curve every step and logging image grids, on two processes.

    Both callbacks write files from rank 0 alone; ``Trainer.log_dir`` is a collective under DDP, so
    resolving it there hung (image grid) or crashed the other rank ("Empty bucket specified", ARM curve).
    """
    config = yaml.safe_load((REPO / "configs" / "arm_synthetic_coarse.yaml").read_text())
    callbacks = config["trainer"]["callbacks"]
    for callback in callbacks:
        if callback["class_path"] == "ARMCurveLogger":
            callback["init_args"]["every_n_steps"] = 1
    callbacks.append({"class_path": "SegmentationImageLogger", "init_args": {"num_samples": 2, "every_n_epochs": 8}})
    config_path = tmp_path / "arm_ddp.yaml"
    config_path.write_text(yaml.safe_dump(config))

    args = fast_cli_args(config_path, tmp_path, data_cache)
    args = [a for a in args if "fast_dev_run" not in a and ".logger" not in a]
    args += [
        # a logger without image support: the image logger writes PNG grids
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.strategy=ddp",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.max_epochs=2",  # 8 training images in batches of 4 on 2 ranks: one step per epoch
        "--trainer.limit_val_batches=2",
    ]
    result = run_cli(["fit", *args], timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Final validation: val/mIoU" in result.stdout, result.stdout[-2000:]
    # the epoch metrics are computed by torchmetrics, which already synchronised them across ranks
    advice = [line for line in result.stderr.splitlines() if "sync_dist" in line]
    assert not advice, "\n".join(advice)
    assert sorted(path.name for path in tmp_path.rglob("arm/*.png")) == ["step000001.png", "step000002.png"]
    # every 8 epochs: only the last epoch of this 2-epoch fit, once
    assert [path.name for path in tmp_path.rglob("images/*.png")] == ["val_predictions_epoch001.png"]
