"""Shared fixtures: a tiny cached synthetic dataset and CLI helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
# 2 shared CPU cores: one intra-op thread is far faster for the tests' tiny nets than threads that
# compete with other processes (measured: the three selfcorr config runs 130 s -> 18 s).
torch.set_num_threads(1)

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
#: Trainer arguments of a quick, quiet CPU fit (2 steps, 1 validation batch) for Python-API tests.
TINY_TRAINER = {
    "accelerator": "cpu",
    "devices": 1,
    "max_steps": 2,
    "max_epochs": 1,
    "limit_val_batches": 1,
    "num_sanity_val_steps": 0,
    "logger": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
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


def voc_fixture_roots(data_cache: Path) -> tuple[Path, Path]:
    """The tiny VOC devkit and SBD release (generated once per session): ``(VOC2012 root, SBD dataset root)``."""
    from tests.fixtures.voc import make_voc_sbd

    base = data_cache / "voc_sbd"
    if not base.exists():
        make_voc_sbd(base)
    return base / "VOCdevkit" / "VOC2012", base / "benchmark_RELEASE" / "dataset"


def data_args(config: Path, data_cache: Path) -> list[str]:
    """CLI overrides pointing a shipped config's DataModule at tiny seeded fixture data."""
    text = config.read_text()
    small = ["--data.init_args.crop_size=64", "--data.init_args.batch_size=2", "--data.init_args.num_workers=0"]
    one_full_per_batch = "--data.init_args.full_per_batch=1"
    if "class_path: SemiSupervisedSyntheticDataModule" in text:
        return [*tiny_data_args(data_cache), "--data.init_args.num_full=4", one_full_per_batch]
    if "class_path: SemiSupervisedVOCDataModule" in text:
        voc, sbd = voc_fixture_roots(data_cache)
        # F from all 6 train_aug ids, so half of F (the ancillary stage's set) is 2 images, not 1
        pool = ["--data.init_args.full_pool=train_aug", "--data.init_args.num_full=4", one_full_per_batch]
        return [f"--data.init_args.root={voc}", f"--data.init_args.sbd_root={sbd}", *small, *pool]
    if "class_path: VOCDataModule" in text:
        from tests.fixtures.mad_voc import make_mad_voc

        voc, sbd = voc_fixture_roots(data_cache)
        mad = make_mad_voc(data_cache / "mad_voc", voc) if "MADTroubleshooting" in text else []
        return [f"--data.init_args.root={voc}", f"--data.init_args.sbd_root={sbd}", *small, *mad]
    if "class_path: SemiSupervisedCityscapesDataModule" in text:
        from tests.fixtures.cityscapes import make_cityscapes

        root = data_cache / "cityscapes"
        if not root.exists():
            make_cityscapes(root)
        # 3 train images: half of F is 1 image, and DeepLabV3+'s ASPP image pooling cannot train its
        # BatchNorm on a batch of one 1x1 map, so this fixture run uses a Unet
        unet = ["--model.init_args.arch=Unet", "--model.init_args.net_kwargs=null"]
        return [f"--data.init_args.root={root}", *small, "--data.init_args.num_full=2", one_full_per_batch, *unet]
    if "class_path: CityscapesDataModule" in text:
        from tests.fixtures.cityscapes import make_cityscapes

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
