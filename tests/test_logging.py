"""W&B obeys WANDB_MODE=disabled, and every logger gets the full config (CLI) or both modules' hparams (Python)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import wandb
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger

from segmend.cli import main
from segmend.datamodules import SyntheticDataModule
from segmend.loggers import WandbLogger
from segmend.modules import SegmentationModule
from tests.fixtures.cli import REPO, fast_cli_args
from tests.fixtures.data import TINY_SYNTHETIC

BASELINE = REPO / "configs" / "baseline_synthetic.yaml"


def read_hparams(path: Path) -> dict:
    """A CSVLogger's hparams.yaml (it writes tuples with Python tags)."""
    return yaml.load(path.read_text(), Loader=yaml.UnsafeLoader)


def short_fit_args(tmp_path: Path, data_cache: Path) -> list[str]:
    """A fit of one tiny epoch (not fast_dev_run, which replaces the loggers and skips the config)."""
    args = [a for a in fast_cli_args(BASELINE, tmp_path, data_cache) if "fast_dev_run" not in a]
    return [*args, "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]


def test_wandb_mode_disabled_writes_no_wandb_folder(tmp_path: Path, data_cache: Path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    main(["fit", *short_fit_args(tmp_path, data_cache)])
    assert list(tmp_path.rglob("last.ckpt")), "the fit ran"
    assert not list(tmp_path.rglob("wandb")), sorted(str(p) for p in tmp_path.rglob("*"))
    assert os.environ["WANDB_MODE"] == "disabled"  # Lightning's logger would have set it to dryrun


def test_offline_wandb_writes_its_run_and_leaves_the_environment_alone(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    wandb.finish()  # a disabled run of an earlier test would be reused
    logger = WandbLogger(project="segmend", name="offline-check", save_dir=str(tmp_path), offline=True)
    logger.log_hyperparams({"answer": 42})
    logger.log_metrics({"x": 1.0}, step=0)
    logger.experiment.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*")), sorted(str(p) for p in tmp_path.rglob("*"))
    assert "WANDB_MODE" not in os.environ


def test_offline_with_log_model_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(Exception, match="log_model"):
        WandbLogger(offline=True, log_model=True)


def test_cli_logs_the_full_resolved_config(tmp_path: Path, data_cache: Path):
    args = short_fit_args(tmp_path, data_cache)
    args = [a for a in args if not a.startswith("--trainer.logger")]
    args += ["--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    main(["fit", *args, "--seed_everything=5"])
    logged = read_hparams(next(tmp_path.rglob("hparams.yaml")))
    assert logged["seed_everything"] == 5
    model = logged["model"]["init_args"]
    assert model["optimizer"]["class_path"] == "torch.optim.AdamW"
    assert model["optimizer"]["init_args"]["lr"] == 0.003
    assert model["lr_scheduler"]["class_path"] == "segmend.optim.PolyLR"
    data = logged["data"]["init_args"]
    assert data["batch_size"] == 4 and data["crop_size"] == 64
    assert logged["trainer"]["max_epochs"] == 1
    assert not [key for key in logged if key.startswith("_")], sorted(logged)


def test_python_fit_logs_model_and_datamodule_hyperparameters(tmp_path: Path, data_cache: Path):
    datamodule = SyntheticDataModule(cache_dir=str(data_cache), **TINY_SYNTHETIC)
    model = SegmentationModule(num_classes=datamodule.num_classes, encoder_name="resnet18")
    logger = CSVLogger(save_dir=str(tmp_path))
    trainer = Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        logger=logger,
        enable_progress_bar=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=datamodule)
    logged = read_hparams(Path(logger.log_dir) / "hparams.yaml")
    assert logged["encoder_name"] == "resnet18"
    assert logged["batch_size"] == TINY_SYNTHETIC["batch_size"]
    assert logged["crop_size"] == TINY_SYNTHETIC["crop_size"]
    assert logged["num_train"] == TINY_SYNTHETIC["num_train"]
    assert not [key for key in logged if key.startswith("_")]
