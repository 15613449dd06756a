"""A fit under DDP on CPU with two processes; its validation scores equal a one-process run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch import Trainer
from segmend.datamodules import SyntheticDataModule

from segmend.modules import SegmentationModule
from tests.conftest import REPO, TINY_SYNTHETIC, fast_cli_args


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
