"""A synthetic benchmark regime that can resolve the weak-label papers' claims (issue 15, part 1).

    .venv/bin/python bench/regime.py                          # the chosen regime, 3 seeds; resumable
    .venv/bin/python bench/regime.py --report-only            # re-render docs/results/regime.md
    .venv/bin/python bench/regime.py --candidate unet64_s600 --seeds 0   # one explored candidate

For every seed (the seed draws F, the loaders' order and the network's initial weights; the images
are the same for every seed), three variants of one plain ``SegmentationModule`` are trained through
``SemiSupervisedSyntheticDataModule``:

* ``fullsup``: fine masks of every training image (F + W, ``train_set="full+weak_masks"``);
* ``f_only``: fine masks of F only (``num_full`` = 10% of the training images, ``train_set="full"``);
* ``coarse``: the simulated coarse masks of every training image (``labels="coarse"``).

The validation mIoU (fine masks of the val split) is recorded every ``val_every`` steps. Each run's
curve, final mIoU, seconds and steps go to ``docs/results/regime_runs/<candidate>__seed<s>__<variant>.json``
as soon as it ends (atomic write; a rerun skips finished runs). The report, with every verdict,
is rendered from those files only. Properties checked (issue 15): the curve's plateau, the label
gaps, the boxes' fill of their objects and the W/F ratio, and the time of one run (``threads`` of the
machine's 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from segmend.datamodules import SemiSupervisedSyntheticDataModule
from segmend.datamodules.voc_format import parse_voc_xml, read_index_mask
from segmend.modules import SegmentationModule
from segmend.optim import PolyLR

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import save_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "docs" / "results" / "regime_runs"
REPORT = REPO / "docs" / "results" / "regime.md"
WORK = REPO / "runs" / "regime"
VARIANTS = ("fullsup", "f_only", "coarse")
COMMAND = ".venv/bin/python bench/regime.py"


@dataclass(frozen=True)
class Regime:
    """Data, model and schedule of one candidate regime."""

    image_size: int = 64
    num_train: int = 400
    num_val: int = 100
    num_full: int = 40  # F = 10% of the training images: W/F = 9
    box_jitter: float = 0.1
    data_seed: int = 0  # the images (the same for every run seed)
    arch: str = "Unet"
    encoder_name: str = "resnet18"
    encoder_depth: int = 4
    decoder_channels: tuple[int, ...] = (64, 32, 16, 8)
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    steps: int = 600
    val_every: int = 50
    precision: str = "32-true"
    threads: int = 1  # torch threads of one run (the machine has 2 cores)
    scale_range: tuple[float, float] = (0.75, 1.25)  # random rescale of training images (augmentation)

    def model(self, num_classes: int, module: type[SegmentationModule] = SegmentationModule, **options: Any) -> Any:
        """The network, AdamW and poly decay (per step), as ``module`` (a ``SegmentationModule`` subclass) with ``options``."""
        lr, weight_decay = self.lr, self.weight_decay
        return module(
            num_classes=num_classes,
            arch=self.arch,
            encoder_name=self.encoder_name,
            encoder_weights=None,
            net_kwargs={"encoder_depth": self.encoder_depth, "decoder_channels": list(self.decoder_channels)},
            optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay),
            lr_scheduler=lambda optimizer: PolyLR(optimizer, power=0.9),
            **options,
        )

    def trainer_kwargs(self) -> dict[str, Any]:
        """Trainer arguments of a run: the steps, periodic validation and precision; no logger, checkpoints or bars."""
        return {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": self.steps,
            "max_epochs": -1,
            "val_check_interval": self.val_every,
            "check_val_every_n_epoch": None,
            "num_sanity_val_steps": 0,
            "precision": self.precision,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        }

    def data(self, variant: str, seed: int, labels: str = "fine") -> SemiSupervisedSyntheticDataModule:
        """The seed's DataModule serving ``variant``'s training set."""
        return SemiSupervisedSyntheticDataModule(
            num_full=self.num_full,
            split_seed=seed,
            train_set="full" if variant == "f_only" else "full+weak_masks",
            cache_dir=str(WORK / "cache"),
            seed=self.data_seed,
            num_train=self.num_train,
            num_val=self.num_val,
            num_wild=0,
            image_size=self.image_size,
            crop_size=self.image_size,
            labels="coarse" if variant == "coarse" else labels,
            box_jitter=self.box_jitter,
            scale_range=self.scale_range,
            batch_size=self.batch_size,
            num_workers=0,
        )


def unet3(**settings: Any) -> Regime:
    """A candidate on the depth-3 resnet18 Unet with decoder (32, 16, 8) in bf16, with ``settings`` changed."""
    return Regime(**{"encoder_depth": 3, "decoder_channels": (32, 16, 8), "precision": "bf16-mixed", **settings})


NO_RESCALE = (1.0, 1.0)
# Every candidate tried (the report's "what was tried" lists the runs of each); CHOSEN is the regime.
CANDIDATES: dict[str, Regime] = {
    "unet64_s600": Regime(),
    "unet64_s600_bf16": Regime(precision="bf16-mixed"),
    "unet3_b8_s1200_bf16": unet3(batch_size=8, steps=1200, val_every=100),
    "unet3_b8_s2400_bf16": unet3(batch_size=8, steps=2400, val_every=200),  # twice the steps of the above
    # toward a plateau within 90 s: a larger learning rate, or more and cheaper steps
    "unet3_b8_s1200_lr1e2_bf16": unet3(batch_size=8, lr=1e-2, steps=1200, val_every=100),
    "unet3_b8_s1800_bf16": unet3(batch_size=8, steps=1800, val_every=300),
    "unet3_b8_s2400_v600_bf16": unet3(batch_size=8, steps=2400, val_every=600),
    "unet3_b6_s2400_v600_bf16": unet3(batch_size=6, steps=2400, val_every=600),
    "unet3_d16_b8_s2400_v600_bf16": unet3(decoder_channels=(16, 8, 4), batch_size=8, steps=2400, val_every=600),
    "mnv2_3_b8_s2400_v600_bf16": unet3(encoder_name="mobilenet_v2", batch_size=8, steps=2400, val_every=600),
    "unet3_px48_b8_s2400_v600_bf16": unet3(image_size=48, batch_size=8, steps=2400, val_every=600),
    # the plateau's steps on both cores, validated every 200 steps so the curve shows the plateau
    "unet3_b8_s2400_bf16_t2": unet3(batch_size=8, steps=2400, val_every=200, threads=2),
    "unet3_b8_s4800_bf16_t2": unet3(batch_size=8, steps=4800, val_every=400, threads=2),  # its convergence check
    # toward a plateau: no rescaling augmentation (the model fits the images sooner), or smaller images
    "unet3_noaug_b8_s4800": unet3(batch_size=8, steps=4800, val_every=400, scale_range=NO_RESCALE),
    "unet3_noaug_b8_s2400_t2": unet3(batch_size=8, steps=2400, val_every=200, threads=2, scale_range=NO_RESCALE),
    "unet3_px32_b16_s4800": unet3(image_size=32, batch_size=16, steps=4800, val_every=400),
    "unet3_b4_s2400_bf16": unet3(batch_size=4, steps=2400, val_every=200),
    # toward a plateau without rescaling: the larger lr both tuning sweeps chose, or half the training images
    "unet3_noaug_lr6e3_b8_s2400": unet3(batch_size=8, lr=6e-3, steps=2400, val_every=200, scale_range=NO_RESCALE),
    "unet3_noaug_lr6e3_b8_s4800": unet3(batch_size=8, lr=6e-3, steps=4800, val_every=400, scale_range=NO_RESCALE),
    "unet3_noaug_n200_b8_s2400": unet3(
        num_train=200, num_full=20, batch_size=8, steps=2400, val_every=200, scale_range=NO_RESCALE
    ),
    "unet3_noaug_n200_b8_s4800": unet3(
        num_train=200, num_full=20, batch_size=8, steps=4800, val_every=400, scale_range=NO_RESCALE
    ),
    # half the training images plateau by ~1400 steps: 2000 steps on both cores fit in 90 s
    "unet3_noaug_n200_b8_s2000_t2": unet3(
        num_train=200, num_full=20, batch_size=8, steps=2000, val_every=200, threads=2, scale_range=NO_RESCALE
    ),
    "unet3_noaug_n200_b8_s4000": unet3(
        num_train=200, num_full=20, batch_size=8, steps=4000, val_every=400, scale_range=NO_RESCALE
    ),
    # the regime gains +1.6 [0.9, 2.4] from twice its steps (12 seeds): fewer images, toward a plateau by 2000 steps
    **{
        f"unet3_noaug_n{n}_b8_s{steps}": unet3(
            num_train=n, num_full=n // 10, batch_size=8, steps=steps, val_every=steps // 10, scale_range=NO_RESCALE
        )
        for n in (100, 150)
        for steps in (2000, 4000)
    },
    # 100 images: twice the steps added +0.3 on average on the screen's seeds 0-2 (150: +0.2, with more spread);
    # its convergence check runs on fresh seeds 3-14, its label gaps on seeds 0-2, on both cores like the regime
    "unet3_noaug_n100_b8_s2000_t2": unet3(
        num_train=100, num_full=10, batch_size=8, steps=2000, val_every=200, threads=2, scale_range=NO_RESCALE
    ),
}
# 100 images met the convergence check on its fixed fresh seeds (200 images did not): the regime since 2026-11-30
CHOSEN = "unet3_noaug_n100_b8_s2000_t2"
DOUBLED = "unet3_noaug_n100_b8_s4000"  # the regime with twice the steps: its convergence check
CHECK_SEEDS = range(3, 15)  # the check's seeds, fixed before it ran (the screen that chose it used seeds 0-2)


class Curve(Callback):
    """Val mIoU after every validation, by global step."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: Trainer, pl_module: Any) -> None:  # noqa: D102
        if not trainer.sanity_checking:
            self.points.append((int(trainer.global_step), float(trainer.callback_metrics["val/mIoU"])))


def run_path(candidate: str, seed: int, variant: str) -> Path:
    """The JSON of one run."""
    return RUNS / f"{candidate}__seed{seed}__{variant}.json"


@dataclass
class Fit:
    """What one training run of a regime produced."""

    curve: list[tuple[int, float]]  # (global step, val mIoU) after every validation, the last after the last step
    seconds: float  # wall-clock Trainer.fit time (training and the periodic validation)
    steps: int
    load_average: tuple[float, float]  # the machine's 1-minute load, before and after
    metrics: dict[str, float]  # the final validation's metrics, e.g. {"mIoU": ..., "aAcc": ..., "mAcc": ...}

    @property
    def miou(self) -> float:
        """The final val mIoU (no checkpoint selection)."""
        return self.curve[-1][1]


def fit(regime: Regime, module: Any, data: Any, callbacks: list[Callback] | None = None) -> Fit:
    """Train ``module`` on ``data`` for the regime's steps and threads, validating every ``val_every`` steps."""
    torch.set_num_threads(regime.threads)
    curve = Curve()
    trainer = Trainer(
        **regime.trainer_kwargs(), callbacks=[curve, *(callbacks or [])], default_root_dir=str(WORK / "trainer")
    )
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    seconds = time.perf_counter() - started
    if not curve.points or curve.points[-1][0] != trainer.global_step:  # the final score, after the last step
        score = trainer.validate(module, data, verbose=False)[0]["val/mIoU"]
        curve.points.append((int(trainer.global_step), float(score)))
    metrics = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return Fit(curve.points, seconds, int(trainer.global_step), (load_before, os.getloadavg()[0]), metrics)


def train(candidate: str, seed: int, variant: str) -> None:
    """Train one run and write its JSON (skipped when the JSON exists)."""
    path = run_path(candidate, seed, variant)
    if path.is_file():
        return
    regime = CANDIDATES[candidate]
    dm = regime.data(variant, seed)
    dm.prepare_data()
    seed_everything(seed, workers=True)  # same initial weights and loader seed for every variant of a seed
    run = fit(regime, regime.model(dm.num_classes), dm)
    result = {
        "candidate": candidate,
        "regime": dataclasses.asdict(regime),
        "seed": seed,
        "variant": variant,
        "steps": run.steps,
        "seconds": run.seconds,
        "load_average": list(run.load_average),
        "curve": run.curve,
        "mIoU": run.miou,
        "machine": machine(),
    }
    save_json(result, path)
    print(f"[regime] {path.name}: mIoU {100 * result['mIoU']:.1f}, {run.seconds:.0f} s", flush=True)


def machine() -> dict[str, Any]:
    """Where a run was measured."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


# ------------------------------------------------------------------------------------ box statistics
def box_statistics(regime: Regime) -> dict[str, Any]:
    """How much of its (jittered) box each object fills, per class, on the training images.

    The fill of a box is the fraction of its pixels that carry the box's class in the fine mask
    (objects of one class that touch are counted together). ``box_miou`` is the mIoU of masks painted
    from the boxes alone (larger boxes first), scored against the fine masks: what the boxes give away.
    """
    dm = regime.data("fullsup", seed=0)  # the regime's images and boxes (the seed only draws F)
    dm.prepare_data()
    names = dm.class_names
    fills: dict[int, list[float]] = {c: [] for c in range(1, len(names))}
    inter, union = np.zeros(len(names)), np.zeros(len(names))
    ids = (dm.root / "ImageSets/Segmentation/train.txt").read_text().split()
    for sample_id in ids:
        mask = read_index_mask(dm.root / "SegmentationClass" / f"{sample_id}.png")
        boxes = parse_voc_xml(dm.root / "Annotations" / f"{sample_id}.xml", names)
        painted = np.zeros_like(mask)
        for box in sorted(boxes, key=lambda b: -(b.xmax - b.xmin + 1) * (b.ymax - b.ymin + 1)):
            window = mask[box.ymin : box.ymax + 1, box.xmin : box.xmax + 1]
            fills[box.label].append(float((window == box.label).mean()))
            painted[box.ymin : box.ymax + 1, box.xmin : box.xmax + 1] = box.label
        for c in range(len(names)):
            inter[c] += np.sum((painted == c) & (mask == c))
            union[c] += np.sum((painted == c) | (mask == c))
    all_fills = [f for values in fills.values() for f in values]
    return {
        "images": len(ids),
        "boxes": len(all_fills),
        "mean_fill": float(np.mean(all_fills)),
        "per_class": {names[c]: [float(np.mean(v)), len(v)] for c, v in fills.items() if v},
        "box_miou": float(np.mean(inter / np.maximum(union, 1))),
        "box_jitter": regime.box_jitter,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidate", default=CHOSEN, choices=sorted(CANDIDATES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    from regime_report import write_report  # the report reads only the runs' JSON

    if not args.report_only:
        boxes_path = RUNS / f"boxes__{args.candidate}.json"
        if not boxes_path.is_file():
            save_json(box_statistics(CANDIDATES[args.candidate]), boxes_path)
        for seed in args.seeds:
            for variant in args.variants:
                train(args.candidate, seed, variant)
                write_report()
    write_report()


if __name__ == "__main__":
    main()
