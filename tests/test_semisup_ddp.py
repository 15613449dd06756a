"""Mixed F + W batches under DDP on two CPU processes: every rank gets its own shard of W."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from tests.fixtures.cli import REPO


class RecordBatchIds(Callback):
    """Append each training batch's rank, ids and has_mask flags to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: dict, batch_idx: int) -> None:
        record = {"rank": trainer.global_rank, "id": list(batch["id"]), "has_mask": batch["has_mask"].tolist()}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def test_mixed_batches_are_sharded_across_ranks(tmp_path: Path, data_cache: Path):
    record = tmp_path / "batches.jsonl"
    data = {
        "cache_dir": data_cache,
        "num_train": 12,
        "num_val": 4,
        "num_wild": 0,
        "image_size": 64,
        "crop_size": 64,
        "num_full": 2,
        "full_per_batch": 1,
        "batch_size": 2,
        "num_workers": 0,
    }
    args = [
        "fit",
        "--model=SegmentationModule",
        "--model.init_args.arch=Unet",
        "--model.init_args.encoder_name=resnet18",
        "--data=SemiSupervisedSyntheticDataModule",
        *(f"--data.init_args.{key}={value}" for key, value in data.items()),
        "--trainer.strategy=ddp",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.max_epochs=1",
        "--trainer.limit_val_batches=1",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.callbacks+=tests.test_semisup_ddp.RecordBatchIds",
        f"--trainer.callbacks.path={record}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = Path(sys.executable).parent / "segmend"
    result = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    batches = [json.loads(line) for line in record.read_text().splitlines()]
    weak_by_rank: dict[int, list[str]] = {0: [], 1: []}
    full_by_rank: dict[int, list[str]] = {0: [], 1: []}
    for batch in batches:
        assert batch["has_mask"] == [True, False]  # one F sample, then one W sample
        full_by_rank[batch["rank"]].append(batch["id"][0])
        weak_by_rank[batch["rank"]].append(batch["id"][1])
    # W (10 images) is split 5 / 5 between the ranks; F (2 images) 1 / 1 in each of its passes (one
    # per step here; each pass deals F in a new order)
    assert len(weak_by_rank[0]) == len(weak_by_rank[1]) == 5
    assert not set(weak_by_rank[0]) & set(weak_by_rank[1])
    assert len(set(weak_by_rank[0]) | set(weak_by_rank[1])) == 10
    assert len(full_by_rank[0]) == len(full_by_rank[1]) == 5
    both = set(full_by_rank[0]) | set(full_by_rank[1])
    assert all({a, b} == both for a, b in zip(full_by_rank[0], full_by_rank[1], strict=True))
