"""segmend.memory: the CPU allocator tuning a fit on the CPU starts with."""

from __future__ import annotations

import platform

import pytest
from lightning.pytorch import Trainer
from torch import nn

import segmend.modules.segmentation as segmentation
from segmend.memory import tune_cpu_allocator
from segmend.modules import SegmentationModule


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds exist in glibc only")
def test_allocator_is_tuned_on_glibc():
    assert tune_cpu_allocator() is True
    assert tune_cpu_allocator() is True  # a second call is a no-op that reports the same


@pytest.mark.parametrize("enabled", [True, False])
def test_fit_on_the_cpu_tunes_the_allocator_unless_switched_off(enabled, tiny_synthetic, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(segmentation, "tune_cpu_allocator", lambda: calls.append(1) or True)
    classes = tiny_synthetic.num_classes
    module = SegmentationModule(num_classes=classes, net=nn.Conv2d(3, classes, 1), tune_cpu_allocator=enabled)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=tiny_synthetic)
    assert calls == ([1] if enabled else [])
