"""Error-pixel prediction's three stages under DDP on CPU with two processes."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from segmend.checkpoints import read_weights
from tests.fixtures.runs import errorpix_run_args, segmend

DDP = ["--trainer.strategy=ddp", "--trainer.devices=2"]


def test_every_stage_runs_on_two_processes_and_the_semantic_branch_stays_frozen(tmp_path: Path, data_cache: Path):
    run = tmp_path / "run"
    # later arguments win: two CPU processes instead of errorpix_run_args' single device
    result = segmend("fit", *errorpix_run_args(run, data_cache), *DDP)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Starting with 2 processes" in result.stderr, result.stderr[-4000:]
    for number, stage in enumerate(("semantic", "error", "detail"), start=1):
        assert f"segmend: stage {number} '{stage}'" in result.stderr, stage
        assert (run / stage / "final.ckpt").is_file(), stage
    found = re.search(r"Final validation: val/mIoU ([0-9.]+)", result.stdout)
    assert found and math.isfinite(float(found.group(1))), result.stdout[-2000:]

    # both ranks trained the same frozen semantic net: the detail stage still holds the semantic stage's weights
    detail = torch.load(run / "detail" / "final.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    semantic = read_weights(run / "semantic" / "final.ckpt").state_dict
    for key, value in semantic.items():
        assert torch.equal(detail[f"net.module.{key}"], value), key
    error = read_weights(run / "error" / "final.ckpt", prefix="error_branch.").state_dict
    for key, value in error.items():
        assert torch.equal(detail[f"error_branch.{key}"], value), key
