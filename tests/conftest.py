"""Shared fixtures: a tiny cached synthetic dataset and CLI helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

TINY_SYNTHETIC = {
    "num_train": 8,
    "num_val": 4,
    "num_wild": 4,
    "image_size": 64,
    "crop_size": 64,
    "batch_size": 4,
    "num_workers": 0,
}


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the session so every test reuses the generated tiny datasets."""
    return tmp_path_factory.mktemp("segmend-cache")


@pytest.fixture
def tiny_synthetic(data_cache: Path):
    """A SyntheticDataModule over a handful of 64-px scenes."""
    from segmend.datamodules import SyntheticDataModule

    return SyntheticDataModule(cache_dir=str(data_cache), **TINY_SYNTHETIC)


def tiny_data_args(data_cache: Path) -> list[str]:
    """CLI overrides that shrink the synthetic data of a shipped config."""
    args = [f"--data.init_args.cache_dir={data_cache}"]
    args += [f"--data.init_args.{key}={value}" for key, value in TINY_SYNTHETIC.items()]
    return args


def data_args(config: Path, data_cache: Path) -> list[str]:
    """CLI overrides pointing a shipped config's DataModule at tiny seeded fixture data."""
    text = config.read_text()
    small = ["--data.init_args.crop_size=64", "--data.init_args.batch_size=2", "--data.init_args.num_workers=0"]
    if "class_path: CityscapesDataModule" in text:
        from tests.cityscapes_fixture import make_cityscapes

        root = data_cache / "cityscapes"
        if not root.exists():
            make_cityscapes(root)
        return [f"--data.init_args.root={root}", *small]
    if "class_path: ADE20KDataModule" in text:
        from tests.test_ade20k import make_ade

        root = data_cache / "ade20k"
        if not root.exists():
            make_ade(root)
        return [f"--data.init_args.root={root}", *small]
    return tiny_data_args(data_cache)


CPU_TRAINER = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.strategy=auto",
    "--trainer.precision=32-true",
    "--trainer.sync_batchnorm=false",
]


def fast_cli_args(config: Path, run_dir: Path, data_cache: Path) -> list[str]:
    """Arguments running ``config`` with fast_dev_run on tiny data on the CPU, writing into ``run_dir``."""
    return [
        "-c",
        str(config),
        "--trainer.fast_dev_run=1",
        f"--trainer.default_root_dir={run_dir}",
        "--trainer.enable_progress_bar=false",
        *CPU_TRAINER,
        *logger_args(config, run_dir),
        *data_args(config, data_cache),
    ]


def logger_args(config: Path, run_dir: Path) -> list[str]:
    """Point a config's W&B logger (if any) at ``run_dir``."""
    return [f"--trainer.logger.init_args.save_dir={run_dir}"] if "WandbLogger" in config.read_text() else []
