"""Error-pixel prediction through the real CLI: each shipped config runs every stage; a killed run resumes."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from segmend.checkpoints import read_weights
from segmend.cli import SegmendCLI
from tests.fixtures.cli import REPO, fast_cli_args
from tests.fixtures.runs import EVERY, errorpix_run_args, kill_args, segmend

CONFIGS = sorted((REPO / "configs").glob("errorpix_*.yaml"))


def test_every_errorpix_config_is_shipped():
    assert [path.name for path in CONFIGS] == [
        "errorpix_ade20k.yaml",
        "errorpix_cityscapes.yaml",
        "errorpix_synthetic.yaml",
    ]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_config_runs_every_stage_and_logs_the_metrics(
    config: Path, tmp_path: Path, data_cache: Path, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.INFO):
        cli = SegmendCLI(args=["fit", *fast_cli_args(config, tmp_path, data_cache)])
    # semantic_checkpoint is null in every shipped config: the semantic stage ran first, then error and detail
    for number, stage in enumerate(("semantic", "error", "detail"), start=1):
        assert f"segmend: stage {number} '{stage}'" in caplog.text, stage
    for stage in ("error", "detail"):
        assert (tmp_path / stage / "error_sweep" / "val.md").read_text().count("\n| 0.") == 9, stage
        assert (tmp_path / stage / "error_sweep" / "val.png").stat().st_size > 0, stage
    metrics = cli.trainer.callback_metrics  # the detail stage's Trainer
    for key in ("train/loss", "train/detail_loss", "val/loss", "val/mIoU", "val/semantic_mIoU"):
        assert math.isfinite(float(metrics[key])), key
    for key in ("val/error_IoU", "val/error_hard_recall", "val/error_fraction"):
        assert key in metrics, key  # NaN where the tiny data has no (hard) error
    assert cli.model.detail_active and cli.model.phase == "detail"


def test_killed_in_the_detail_stage_and_resumed(tmp_path: Path, data_cache: Path):
    """Killed as each branch stage starts (later stages then load the earlier ones' final.ckpt), then mid-stage."""
    run = tmp_path / "run"
    # killed as the error stage starts: the re-run takes the semantic branch from the semantic stage's final.ckpt
    first = segmend("fit", *errorpix_run_args(run, data_cache, *kill_args("error", 0)))
    assert first.returncode == -9, first.stderr[-3000:]
    assert (run / "semantic" / "final.ckpt").is_file() and not (run / "error" / "checkpoints" / "last.ckpt").exists()

    # killed as the detail stage starts: the re-run takes the error branch from the error stage's final.ckpt
    second = segmend("fit", *errorpix_run_args(run, data_cache, *kill_args("detail", 0)))
    assert second.returncode == -9, second.stderr[-3000:]
    assert "stage 1 'semantic' already done" in second.stderr
    assert (run / "error" / "final.ckpt").is_file() and not (run / "detail" / "checkpoints" / "last.ckpt").exists()

    kill_step = 7  # detail: 2 epochs x 4 steps, killed inside epoch 2
    third = segmend("fit", *errorpix_run_args(run, data_cache, *kill_args("detail", kill_step)))
    assert third.returncode == -9, third.stderr[-3000:]
    assert "stage 2 'error' already done" in third.stderr and not (run / "detail" / "final.ckpt").exists()
    saved = torch.load(run / "detail" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert kill_step - EVERY < saved["global_step"] <= kill_step

    again = segmend("fit", *errorpix_run_args(run, data_cache))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "stage 1 'semantic' already done" in again.stderr and "stage 2 'error' already done" in again.stderr
    assert f"resuming from {run / 'detail' / 'checkpoints' / 'last.ckpt'}" in again.stderr
    final = torch.load(run / "detail" / "final.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 8  # resumed, not restarted
    detail = final["state_dict"]
    semantic = read_weights(run / "semantic" / "final.ckpt").state_dict  # the semantic stage's net
    for key, value in semantic.items():
        assert torch.equal(detail[f"net.module.{key}"], value), key  # frozen through the kill and the resume
    error = read_weights(run / "error" / "final.ckpt", prefix="error_branch.").state_dict
    for key, value in error.items():
        assert torch.equal(detail[f"error_branch.{key}"], value), key
    assert bool(detail["detail_active"]) and bool(detail["error_ready"]) and bool(detail["semantic_ready"])
