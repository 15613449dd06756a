"""Training throughput of segmend against a plain PyTorch loop, and the quality of the default precision.

    .venv/bin/python bench/throughput.py speed     # rounds in one process -> docs/results/throughput_speed.json
    .venv/bin/python bench/throughput.py quality   # 6 fits through the CLI -> docs/results/throughput_quality_runs.json
    .venv/bin/python bench/throughput.py report    # docs/results/throughput.md from the two JSON files

``speed`` trains the same DeepLabV3+ (resnet18) from the same initial weights on the same seeded
synthetic batches (same DataLoader, same order) with the same optimizer and schedule, four ways:

* a plain PyTorch loop in fp32;
* the same loop under ``torch.autocast("cpu", dtype=torch.bfloat16)``;
* ``SegmentationModule`` under ``lightning.Trainer`` at ``precision="32-true"``;
* ``SegmentationModule`` under ``lightning.Trainer`` with segmend's defaults: the precision of
  :func:`segmend.precision.auto_precision` and the module's default options.

The Trainer runs as a user's would: progress bar, a logger (CSV, into a temporary folder) written
every ``log_every_n_steps`` as in the shipped configs, ``LearningRateMonitor`` every step and the
default checkpointing. Each round runs all four (the order rotated every round), each in a new
Python process (segmend's defaults tune the process-wide memory allocator when a fit starts, see
``segmend.memory``, which must not carry over to the plain loops) and each timing ``--steps`` steps
after ``--warmup`` untimed ones, then the data pipeline alone. The report gives the
per-round speeds, the medians, the per-round ratios against the plain fp32 loop with a 95% t
interval, and verdicts computed from the intervals.

``quality`` trains ``configs/baseline_synthetic.yaml`` (its full budget) for each seed at fp32 and
at the default precision, each in its own ``segmend fit`` process writing into a temporary folder;
each finished run is added to the JSON at once, and a re-run skips the runs already there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from contention import OtherLoad
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from provenance import code_state
from torch import nn
from verdicts import MET, NOT_MET, NOT_RESOLVED, difference_interval, ratio_interval, target_verdict

from segmend.datamodules import SyntheticDataModule
from segmend.modules import SegmentationModule
from segmend.optim import PolyLR
from segmend.precision import auto_precision

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "docs" / "results"
REPORT = RESULTS_DIR / "throughput.md"
SPEED_JSON = RESULTS_DIR / "throughput_speed.json"
QUALITY_JSON = RESULTS_DIR / "throughput_quality_runs.json"
QUALITY_CONFIG = "configs/baseline_synthetic.yaml"

ROWS = ("plain_fp32", "plain_bf16", "segmend_fp32", "segmend_default")
ROW_TITLES = {
    "plain_fp32": "plain PyTorch loop, fp32",
    "plain_bf16": "plain PyTorch loop, bf16 autocast",
    "segmend_fp32": 'segmend, `precision="32-true"`',
    "segmend_default": "segmend default",
}
# target ratios against the plain fp32 loop (issue 10)
SPEED_TARGETS = {"segmend_default": 1.5, "segmend_fp32": 0.97}
QUALITY_MARGIN = 1.0  # mIoU points


# ---------------------------------------------------------------------------------------- machine
def cpu_description() -> dict[str, Any]:
    """CPU model, core count and the flags that decide bf16 speed."""
    model, flags = platform.processor() or "unknown", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("unknown", "", platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    relevant = [f for f in ("avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16") if f in flags]
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "bf16_flags": relevant,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def save_json(path: Path, data: Any) -> None:
    """Write atomically, so a kill never leaves a truncated file."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def load_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


# ---------------------------------------------------------------------------------------- speed
def make_optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)


class StepTimer(Callback):
    """Wall time (and other processes' CPU use) from the start of batch ``warmup`` to the end of batch ``last``."""

    def __init__(self, warmup: int, last: int) -> None:
        self.warmup, self.last = warmup, last
        self.start = 0.0
        self.end = 0.0
        self.load = OtherLoad()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.load.__enter__()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.last:
            self.end = time.perf_counter()
            self.load.__exit__(None, None, None)


def segmend_images_per_s(
    module: SegmentationModule, datamodule, precision: str, args: argparse.Namespace
) -> tuple[float, float]:
    """A fit of ``warmup + steps`` steps under a Trainer set up as a user's run.

    Returns:
        Images/s of the timed steps and the cores other processes used meanwhile.

    """
    timer = StepTimer(args.warmup, args.warmup + args.steps - 1)
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(
            accelerator="cpu",
            devices=1,
            precision=precision,
            max_steps=args.warmup + args.steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            default_root_dir=folder,
            logger=CSVLogger(folder),
            log_every_n_steps=10,
            callbacks=[LearningRateMonitor(logging_interval="step"), timer],
            enable_model_summary=False,
        )
        trainer.fit(module, datamodule=datamodule)
    return args.steps * datamodule.batch_size / (timer.end - timer.start), timer.load.cores


def plain_images_per_s(net: nn.Module, datamodule, bf16: bool, args: argparse.Namespace) -> tuple[float, float]:
    """The loop a user writes by hand, optionally under bf16 autocast.

    Returns:
        Images/s of the timed steps and the cores other processes used meanwhile.

    """
    net.train()
    optimizer = make_optimizer(net.parameters())
    scheduler = PolyLR(optimizer, total_steps=args.warmup + args.steps)
    criterion = nn.CrossEntropyLoss(ignore_index=255)
    loader = iter(datamodule.train_dataloader())
    start = 0.0
    load = OtherLoad()
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            load.__enter__()
            start = time.perf_counter()
        batch = next(loader)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(batch["image"])
        loss = criterion(logits.float(), batch["mask"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    seconds = time.perf_counter() - start
    load.__exit__(None, None, None)
    return args.steps * datamodule.batch_size / seconds, load.cores


def pipeline_images_per_s(datamodule, steps: int) -> float:
    loader = iter(datamodule.train_dataloader())
    next(loader)
    start = time.perf_counter()
    for _ in range(steps):
        next(loader)
    return steps * datamodule.batch_size / (time.perf_counter() - start)


def make_datamodule(args: argparse.Namespace) -> SyntheticDataModule:
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
    return datamodule


def measure(args: argparse.Namespace) -> None:
    """One row's measurement, in a process of its own; prints ``RESULT {"speed": ..., "load": ...}``."""
    datamodule = make_datamodule(args)
    seed_everything(args.seed, verbose=False)  # the same initial weights and dropout draws in every process
    module = SegmentationModule(
        num_classes=datamodule.num_classes, class_names=datamodule.class_names, optimizer=make_optimizer
    )
    if args.row.startswith("plain"):
        speed, load = plain_images_per_s(module.net, datamodule, args.row == "plain_bf16", args)
    else:
        precision = "32-true" if args.row == "segmend_fp32" else auto_precision("cpu").precision
        speed, load = segmend_images_per_s(module, datamodule, precision, args)
    print("RESULT " + json.dumps({"speed": speed, "load": load}), flush=True)


def measure_in_process(name: str, args: argparse.Namespace) -> tuple[float, float]:
    """Run :func:`measure` for row ``name`` in a new Python process; its images/s and other load."""
    command = [sys.executable, __file__, "_measure", "--row", name]
    for option in ("steps", "warmup", "batch_size", "image_size", "num_workers", "seed"):
        command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = re.search(r"^RESULT (.*)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or found is None:
        sys.exit(f"measuring {name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(found.group(1))
    return result["speed"], result["load"]


def speed(args: argparse.Namespace) -> None:
    default_precision = auto_precision("cpu")
    datamodule = make_datamodule(args)
    rounds: list[dict[str, Any]] = []
    for round_index in range(args.max_rounds):
        shift = round_index % len(ROWS)
        order = ROWS[shift:] + ROWS[:shift]
        speeds: dict[str, float] = {}
        loads: dict[str, float] = {}
        for name in order:
            speeds[name], loads[name] = measure_in_process(name, args)
        speeds["pipeline"] = pipeline_images_per_s(datamodule, args.steps)
        rounds.append({**speeds, "order": " > ".join(order), "other_load": loads})
        print(
            f"round {round_index}: "
            + ", ".join(f"{name} {speeds[name]:.2f}" for name in (*ROWS, "pipeline"))
            + " img/s; other load "
            + ", ".join(f"{loads[name]:.2f}" for name in ROWS),
            flush=True,
        )
        if all(len(kept_ratios(rounds, name, args.max_load)) >= args.rounds for name in ROWS):
            break
    command = " ".join(["python bench/throughput.py", *sys.argv[1:]])
    save_json(
        args.speed_json,
        {
            "command": command,
            "machine": cpu_description(),
            "default_precision": {"precision": default_precision.precision, "reason": default_precision.reason},
            "setup": {
                "seed": args.seed,
                "steps": args.steps,
                "warmup": args.warmup,
                "batch_size": args.batch_size,
                "image_size": args.image_size,
                "num_workers": args.num_workers,
                "rounds_to_keep": args.rounds,
                "max_rounds": args.max_rounds,
                "max_load": args.max_load,
                "process_per_measurement": True,
            },
            "rounds": rounds,
        },
    )
    print(f"wrote {args.speed_json}")
    report(args)


# ---------------------------------------------------------------------------------------- quality
FINAL = re.compile(r"Final validation: val/mIoU ([0-9.]+), val/aAcc ([0-9.]+), val/mAcc ([0-9.]+)")


def quality(args: argparse.Namespace) -> None:
    default_precision = auto_precision("cpu").precision
    runs = load_json(args.quality_json, {})
    segmend = Path(sys.executable).with_name("segmend")
    for seed in args.seeds:
        for label, precision in (("fp32", "32-true"), ("default", default_precision)):
            key = f"{label}|{seed}"
            if key in runs:
                print(f"{key}: done before, skipped")
                continue
            with tempfile.TemporaryDirectory() as folder:
                command = [
                    str(segmend),
                    "fit",
                    "-c",
                    QUALITY_CONFIG,
                    f"--seed_everything={seed}",
                    f"--trainer.precision={precision}",
                    "--trainer.logger=false",
                    f"--trainer.default_root_dir={folder}",
                ]
                start = time.perf_counter()
                done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
                seconds = time.perf_counter() - start
            found = FINAL.search(done.stdout)
            if done.returncode != 0 or found is None:
                sys.exit(f"{key} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
            runs[key] = {
                "variant": label,
                "precision": precision,
                "seed": seed,
                "mIoU": float(found.group(1)),
                "aAcc": float(found.group(2)),
                "mAcc": float(found.group(3)),
                "seconds": round(seconds, 1),
                "command": " ".join(["segmend", *command[1:-1], "--trainer.default_root_dir=<temp folder>"]),
                "machine": cpu_description()["cpu"],
                "code": code_state(),
            }
            save_json(args.quality_json, runs)
            print(f"{key}: val/mIoU {runs[key]['mIoU']:.4f} in {seconds:.0f} s", flush=True)
    report(args)


# ---------------------------------------------------------------------------------------- report
def clean(r: dict[str, Any], name: str, max_load: float) -> bool:
    """Whether other processes stayed under ``max_load`` cores during the round's measurement of ``name``."""
    return r["other_load"][name] <= max_load


def kept_ratios(rounds: list[dict[str, Any]], name: str, max_load: float) -> list[float]:
    """Per-round ratios of ``name`` to the plain fp32 loop, from rounds where neither measurement was disturbed."""
    return [r[name] / r["plain_fp32"] for r in rounds if clean(r, name, max_load) and clean(r, "plain_fp32", max_load)]


def within_verdict(interval, margin: float) -> str:
    """``met`` when the interval lies inside [-margin, margin], ``not met`` when it lies wholly outside it."""
    verdicts = (target_verdict(interval, f">= {-margin}"), target_verdict(interval, f"<= {margin}"))
    if verdicts == (MET, MET):
        return MET
    if NOT_MET in verdicts:
        return NOT_MET
    return NOT_RESOLVED


def speed_section(data: dict[str, Any]) -> list[str]:
    rounds, setup, machine = data["rounds"], data["setup"], data["machine"]
    max_load = setup["max_load"]
    medians = {
        name: statistics.median([r[name] for r in rounds if clean(r, name, max_load)] or [r[name] for r in rounds])
        for name in ROWS
    }
    medians["pipeline"] = statistics.median(r["pipeline"] for r in rounds)
    ratios = {name: kept_ratios(rounds, name, max_load) for name in ROWS}
    chosen = data["default_precision"]
    lines = [
        "## Speed",
        "",
        f"Command: `{data['command']}`  ",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, bf16-relevant CPU flags: "
        f"{', '.join(machine['bf16_flags']) or 'none'}; torch {machine['torch']}, {machine['threads']} intra-op "
        f"threads, Python {machine['python']}.  ",
        f"Seed {setup['seed']}; DeepLabV3+ (resnet18, random init), synthetic {setup['image_size']}x"
        f"{setup['image_size']} images, batch size {setup['batch_size']}, SGD (lr 0.01, momentum 0.9) + poly "
        f"schedule, {setup['num_workers']} DataLoader worker(s), same initial weights and batches for every "
        f"row. Each measurement times {setup['steps']} steps after {setup['warmup']} warm-up steps; "
        "the order of the four rotated every round"
        + (
            ", each measurement in a new Python process (segmend's defaults tune the process-wide memory "
            "allocator, which must not carry over to the plain loops).  "
            if setup.get("process_per_measurement")
            else ", all in one process.  "
        ),
        f"The machine is shared (other engineers' test runs): a measurement during which other processes "
        f"used more than {max_load} cores (from `/proc/stat`) is marked * and left out; a round's ratio "
        "counts only when neither the row nor the plain fp32 loop of that round was disturbed. Rounds run "
        f"until every row has {setup['rounds_to_keep']} ratios or {setup['max_rounds']} rounds have run.  ",
        f"segmend default: `{chosen['precision']}` from `auto_precision()` ({chosen['reason']}) and "
        "`SegmentationModule`'s defaults (among them `tune_cpu_allocator=True`, which both segmend rows get). The segmend rows run under a Trainer with a progress bar, a "
        "CSV logger (every 10 steps), `LearningRateMonitor` (every step) and default checkpointing.",
        "",
        "| round | order | " + " | ".join(ROW_TITLES[n] for n in ROWS) + " | data pipeline only |",
        "|---|---|" + "---|" * (len(ROWS) + 1),
    ]
    for index, r in enumerate(rounds):
        cells = " | ".join(
            f"{r[n]:.2f}{'' if clean(r, n, max_load) else '*'} ({r[n] / r['plain_fp32']:.3f}x; "
            f"load {r['other_load'][n]:.2f})"
            for n in ROWS
        )
        lines.append(f"| {index} | {r['order']} | {cells} | {r['pipeline']:.0f} |")
    cells = " | ".join(f"**{medians[n]:.2f}** ({statistics.median(ratios[n] or [math.nan]):.3f}x)" for n in ROWS)
    lines += [
        f"| **median** (kept) | | {cells} | **{medians['pipeline']:.0f}** |",
        "",
        "Images/s; in brackets the ratio to the plain fp32 loop of the same round and the cores other "
        "processes used during the measurement. The medians and the intervals below use the kept "
        "measurements only; the interval is a t interval on the log ratios (`bench/verdicts.py`), and a "
        "target is met when the whole interval satisfies it, not met when none of it does.",
        "",
        "| row | kept rounds | median ratio to plain fp32 | geometric mean ratio, 95% t interval | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for name in ROWS[1:]:
        if len(ratios[name]) < 2:
            lines.append(f"| {ROW_TITLES[name]} | {len(ratios[name])} | - | - | | **not resolved** (too few rounds) |")
            continue
        interval = ratio_interval(ratios[name])
        target = SPEED_TARGETS.get(name)
        verdict = target_verdict(interval, f">= {target}") if target else "(no target)"
        target_text = f">= {target:.2f}x" if target else ""
        lines.append(
            f"| {ROW_TITLES[name]} | {len(ratios[name])} | {statistics.median(ratios[name]):.3f}x | "
            f"{interval.estimate:.3f}x [{interval.low:.3f}, {interval.high:.3f}] | {target_text} | **{verdict}** |"
        )
    fastest = max(medians[n] for n in ROWS)
    lines += [
        "",
        f"The data pipeline alone delivers {medians['pipeline'] / fastest:.1f}x the images the fastest "
        f"training row consumes, so it is {'not ' if medians['pipeline'] > 2 * fastest else ''}the bottleneck.",
        "",
    ]
    return lines


def quality_section(runs: dict[str, Any]) -> list[str]:
    seeds = sorted({r["seed"] for r in runs.values()})
    paired = [s for s in seeds if f"fp32|{s}" in runs and f"default|{s}" in runs]
    precisions = sorted({r["precision"] for r in runs.values() if r["variant"] == "default"})
    commands = sorted(
        {r["command"].replace(f"--seed_everything={r['seed']}", "--seed_everything=S") for r in runs.values()}
    )
    lines = [
        "## Quality: the default precision against fp32",
        "",
        f"`{QUALITY_CONFIG}` with its full budget (16 epochs x 25 steps), each run its own process:  ",
        *(f"`{c}`  " for c in commands),
        f"Machine: {', '.join(sorted({r['machine'] for r in runs.values()}))}. Default precision: "
        f"{', '.join(precisions) or '-'}. Final val mIoU / aAcc / mAcc per run and its wall time "
        "(values from `docs/results/throughput_quality_runs.json`).",
        "",
        "| seed | fp32 mIoU | default mIoU | default - fp32 (points) | fp32 aAcc / mAcc | default aAcc / mAcc "
        "| fp32 time (s) | default time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(key: str, fmt: str) -> str:
        run = runs.get(key)
        return fmt.format(**run) if run else "-"

    for seed in seeds:
        fp32, default = runs.get(f"fp32|{seed}"), runs.get(f"default|{seed}")
        diff = f"{100 * (default['mIoU'] - fp32['mIoU']):+.2f}" if fp32 and default else "-"
        lines.append(
            f"| {seed} | {cell(f'fp32|{seed}', '{mIoU:.4f}')} | {cell(f'default|{seed}', '{mIoU:.4f}')} | {diff} "
            f"| {cell(f'fp32|{seed}', '{aAcc:.4f} / {mAcc:.4f}')} | {cell(f'default|{seed}', '{aAcc:.4f} / {mAcc:.4f}')} "
            f"| {cell(f'fp32|{seed}', '{seconds:.0f}')} | {cell(f'default|{seed}', '{seconds:.0f}')} |"
        )
    for label in ("fp32", "default"):
        values = [100 * runs[f"{label}|{s}"]["mIoU"] for s in seeds if f"{label}|{s}" in runs]
        if values:
            spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
            lines.append(
                f"\n{label}: mIoU {statistics.fmean(values):.2f}{spread} (mean ± std over {len(values)} seeds, points)"
            )
    lines.append("")
    if len(paired) >= 2:
        diffs = [100 * (runs[f"default|{s}"]["mIoU"] - runs[f"fp32|{s}"]["mIoU"]) for s in paired]
        interval = difference_interval(diffs)
        mean, low, high = interval.estimate, interval.low, interval.high
        verdict = within_verdict(interval, QUALITY_MARGIN)
        lines += [
            f"Paired difference default - fp32 over {len(paired)} seeds: {mean:+.2f} mIoU points, 95% t interval "
            f"[{low:+.2f}, {high:+.2f}]. Target: the default within {QUALITY_MARGIN:.0f} mIoU point of fp32 "
            f"(the interval inside [-{QUALITY_MARGIN:.0f}, +{QUALITY_MARGIN:.0f}]): **{verdict}**"
            + (
                f" (the mean difference alone, {mean:+.2f}, is {'inside' if abs(mean) <= QUALITY_MARGIN else 'outside'} the margin)."
                if verdict == "not resolved"
                else "."
            ),
            "",
        ]
        codes = sorted({r.get("code", "not recorded") for r in runs.values()})
        lines += [
            "Times are wall times of whole runs (process start to exit, data cached), as the runs were made; "
            f"code measured: {'; '.join(codes)}. Compare speeds in the speed section and in "
            "`docs/performance.md`, not here.",
            "",
        ]
    else:
        lines += ["Paired difference: fewer than 2 seeds with both runs, no interval yet.", ""]
    return lines


def report(args: argparse.Namespace) -> None:
    speed_data = load_json(args.speed_json, None)
    runs = load_json(args.quality_json, {})
    lines = [
        "# Training throughput",
        "",
        "Generated by `bench/throughput.py` (see its docstring) from `docs/results/throughput_speed.json` and "
        "`docs/results/throughput_quality_runs.json`. Speeds are comparable only within one run of the script.",
        "",
    ]
    lines += speed_section(speed_data) if speed_data else ["## Speed", "", "Not measured yet.", ""]
    lines += quality_section(runs) if runs else ["## Quality", "", "Not measured yet.", ""]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("speed", "quality", "report", "_measure"), nargs="?", default="speed")
    parser.add_argument("--row", choices=ROWS, help="_measure: the row to measure (used by speed)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=8, help="speed: ratios to keep per row (without other load)")
    parser.add_argument("--max-rounds", type=int, default=16, help="speed: rounds to run at most")
    parser.add_argument(
        "--max-load", type=float, default=0.25, help="speed: cores other processes may use in a kept measurement"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=tuple(range(10)), help="quality: the seeds")
    parser.add_argument("--speed-json", type=Path, default=SPEED_JSON)
    parser.add_argument("--quality-json", type=Path, default=QUALITY_JSON)
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args()
    {"speed": speed, "quality": quality, "report": report, "_measure": measure}[args.command](args)


if __name__ == "__main__":
    main()
