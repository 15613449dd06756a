"""Pytest set-up: the environment of every test and the session's fixtures (data made by tests/fixtures/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# plain asserts in the fixtures package's check helpers report their values, as in test modules
pytest.register_assert_rewrite("tests.fixtures")

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
# 2 shared CPU cores: one intra-op thread is far faster for the tests' tiny nets than threads that
# compete with other processes (measured: the three selfcorr config runs 130 s -> 18 s).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the session so every test reuses the generated tiny datasets."""
    return tmp_path_factory.mktemp("segmend-cache")


@pytest.fixture
def tiny_synthetic(data_cache: Path):
    """A SyntheticDataModule over a handful of 64-px scenes (:data:`tests.fixtures.data.TINY_SYNTHETIC`)."""
    from segmend.datamodules import SyntheticDataModule
    from tests.fixtures.data import TINY_SYNTHETIC

    return SyntheticDataModule(cache_dir=str(data_cache), **TINY_SYNTHETIC)
