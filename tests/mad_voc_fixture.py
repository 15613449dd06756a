"""Tiny stand-ins for ``configs/mad_voc.yaml``'s inputs: a target and competitor checkpoints, and an image folder pool.

The checkpoints are untrained SegmentationModules (resnet18 encoders, VOC's 21 classes) saved with their
hyper-parameters, as the loop reads trained ones; the pool is the VOC fixture's JPEG images.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from segmend.datamodules.voc import VOC_CLASSES

from segmend.modules import SegmentationModule

TARGET = ("DeepLabV3Plus", "resnet18")
COMPETITORS = (("FPN", "resnet18"), ("Unet", "resnet18"))


def save_module(path: Path, arch: str, encoder: str) -> Path:
    """An untrained SegmentationModule of ``arch`` saved as a checkpoint (state_dict + hyper_parameters)."""
    torch.manual_seed(0)
    module = SegmentationModule(num_classes=len(VOC_CLASSES), class_names=VOC_CLASSES, arch=arch, encoder_name=encoder)
    hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(module.hparams).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams}, path)
    return path


def make_mad_voc(base: Path, voc_root: Path) -> list[str]:
    """Write the stand-ins under ``base`` (once); the CLI overrides pointing ``mad_voc.yaml`` at them."""
    target = base / "voc_deeplab" / "fit" / "final.ckpt"
    competitors = [base / f"voc_{arch.lower()}" / "fit" / "final.ckpt" for arch, _ in COMPETITORS]
    pool = base / "pool"
    if not pool.exists():
        save_module(target, *TARGET)
        for path, (arch, encoder) in zip(competitors, COMPETITORS, strict=True):
            save_module(path, arch, encoder)
        shutil.copytree(voc_root / "JPEGImages", pool)
    callback = "--trainer.callbacks.init_args"
    return [
        f"{callback}.target_checkpoint={target}",
        f"{callback}.competitors=[{', '.join(map(str, competitors))}]",
        f"{callback}.pool_root={pool}",
        f"--model.init_args.arch={TARGET[0]}",
        f"--model.init_args.encoder_name={TARGET[1]}",
        "--model.init_args.net_kwargs=null",
    ]
