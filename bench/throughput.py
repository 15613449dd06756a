"""Training throughput: SegmentationModule under the Lightning Trainer vs a plain PyTorch loop.

Both train the same DeepLabV3+ (resnet18) from the same initial weights on the same synthetic
batches with the same optimizer, schedule and batch size. The two are run alternately
(``--repeats`` rounds, the first of the two swapped every round) in one process so drift
of the machine hits both; each round times
``--steps`` steps after ``--warmup`` untimed ones. A third measurement runs the data pipeline
alone (decode + augment + collate through the same DataLoader) to show it is not the bottleneck.

    .venv/bin/python bench/throughput.py            # writes docs/results/throughput.md
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from segmend.datamodules import SyntheticDataModule
from torch import nn

from segmend.modules import SegmentationModule
from segmend.optim import PolyLR

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "throughput.md"


def make_optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)


class StepTimer(Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = 0.0
        self.end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end = time.perf_counter()


def lightning_images_per_s(module: SegmentationModule, datamodule, steps: int, warmup: int) -> float:
    timer = StepTimer(warmup)
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=warmup + steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=datamodule)
    return steps * datamodule.batch_size / (timer.end - timer.start)


def plain_images_per_s(net: nn.Module, datamodule, steps: int, warmup: int) -> float:
    net.train()
    optimizer = make_optimizer(net.parameters())
    scheduler = PolyLR(optimizer, total_steps=warmup + steps)
    criterion = nn.CrossEntropyLoss(ignore_index=255)
    loader = iter(datamodule.train_dataloader())
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        batch = next(loader)
        logits = net(batch["image"])
        loss = criterion(logits, batch["mask"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return steps * datamodule.batch_size / (time.perf_counter() - start)


def pipeline_images_per_s(datamodule, steps: int) -> float:
    loader = iter(datamodule.train_dataloader())
    next(loader)
    start = time.perf_counter()
    for _ in range(steps):
        next(loader)
    return steps * datamodule.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    seed_everything(args.seed)
    total = args.warmup + args.steps
    datamodule = SyntheticDataModule(
        seed=args.seed,
        num_train=max(400, total * args.batch_size),
        num_val=16,
        num_wild=0,
        image_size=args.image_size,
        crop_size=args.image_size,
        scale_range=(0.75, 1.25),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    reference = SegmentationModule(
        num_classes=datamodule.num_classes,
        class_names=datamodule.class_names,
        optimizer=make_optimizer,
    )
    initial = copy.deepcopy(reference.state_dict())

    rows = []
    for round_index in range(args.repeats):
        torch.manual_seed(args.seed + round_index)
        module = SegmentationModule(
            num_classes=datamodule.num_classes,
            class_names=datamodule.class_names,
            optimizer=make_optimizer,
        )
        module.load_state_dict(initial)
        plain_net = copy.deepcopy(module.net)
        # alternate which loop goes first so warm caches or drift do not favour one side
        order = ("plain", "lightning") if round_index % 2 == 0 else ("lightning", "plain")
        speeds = {}
        for name in order:
            torch.manual_seed(args.seed + round_index)
            if name == "plain":
                speeds[name] = plain_images_per_s(plain_net, datamodule, args.steps, args.warmup)
            else:
                speeds[name] = lightning_images_per_s(module, datamodule, args.steps, args.warmup)
        plain, lightning = speeds["plain"], speeds["lightning"]
        pipeline = pipeline_images_per_s(datamodule, args.steps)
        rows.append((plain, lightning, pipeline))
        print(
            f"round {round_index}: plain {plain:.2f} img/s, Lightning {lightning:.2f} img/s, "
            f"ratio {lightning / plain:.3f}, data pipeline {pipeline:.1f} img/s",
            flush=True,
        )

    plain_med = statistics.median(r[0] for r in rows)
    lightning_med = statistics.median(r[1] for r in rows)
    pipeline_med = statistics.median(r[2] for r in rows)
    ratios = [r[1] / r[0] for r in rows]
    write_report(args, rows, plain_med, lightning_med, pipeline_med, statistics.median(ratios))


def write_report(args, rows, plain_med, lightning_med, pipeline_med, ratio_med) -> None:
    command = "python bench/throughput.py " + " ".join(sys.argv[1:])
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads, Python {platform.python_version()}"
    )
    lines = [
        "# Training throughput",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine}  ",
        f"Seed: {args.seed}; DeepLabV3+ (resnet18, random init), synthetic {args.image_size}x{args.image_size} "
        f"images, batch size {args.batch_size}, SGD + poly schedule, {args.num_workers} DataLoader worker(s); "
        f"{args.steps} timed steps after {args.warmup} warm-up steps per measurement, {args.repeats} rounds, the order of the two swapped every round.",
        "",
        "| round | plain PyTorch loop (img/s) | SegmentationModule + Trainer (img/s) | ratio | data pipeline only (img/s) |",
        "|---|---|---|---|---|",
    ]
    for i, (plain, lightning, pipeline) in enumerate(rows):
        lines.append(f"| {i} | {plain:.2f} | {lightning:.2f} | {lightning / plain:.3f} | {pipeline:.1f} |")
    lines += [
        f"| **median** | **{plain_med:.2f}** | **{lightning_med:.2f}** | **{ratio_med:.3f}** | **{pipeline_med:.1f}** |",
        "",
        f"Lightning / plain ratio (median of rounds): **{ratio_med:.3f}** (target >= 0.90: "
        f"{'met' if ratio_med >= 0.90 else 'NOT met'}).  ",
        f"Data pipeline alone delivers {pipeline_med / lightning_med:.1f}x the images the training step consumes, "
        f"so it is {'not ' if pipeline_med > 2 * lightning_med else ''}the bottleneck.",
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
