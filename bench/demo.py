"""`make demo` as a new user runs it: segmend's defaults against the demo as it was before them.

    .venv/bin/python bench/demo.py               # writes docs/results/demo.md (about 5 min a round)
    .venv/bin/python bench/demo.py --report      # rewrite the report from docs/results/demo.json

Each measurement is the whole command, ``segmend fit -c configs/baseline_synthetic.yaml`` in a new
process: start-up, data generation into an empty cache, 16 epochs with validation, checkpoints and
offline W&B. Two variants run in every round, the order swapped every round:

- ``default``: the config as shipped (precision chosen by the hardware, the tuned CPU allocator,
  the fused optimizer kernel);
- ``before``: the demo before those defaults: ``32-true``, the allocator left alone and torch's
  ``foreach`` optimizer kernel.

The wall time and the final validation scores come from the command itself. Each measurement takes
the benchmark lock (``/tmp/segmend-bench.lock``, as ``flock`` does), and the CPU time other
processes used meanwhile is recorded: a round whose measurements saw more than ``--max-load``
cores of other load is reported but left out of the interval. The rounds are saved to
``docs/results/demo.json`` as they finish, so a killed run keeps what it measured and resumes.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from contention import OtherLoad
from verdicts import ratio_interval, verdict_text

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "demo.md"
LOCK = Path("/tmp/segmend-bench.lock")
CONFIG = "configs/baseline_synthetic.yaml"
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "before": [
        "--trainer.precision=32-true",
        "--model.init_args.tune_cpu_allocator=false",
        "--model.init_args.optimizer.init_args.foreach=true",
    ],
}
TARGET = "speed-up >= 1.5"
MIOU_RANGE = (0.6, 0.9)
SCORES = re.compile(r"Final validation: (.*)")


def run_demo(variant: str) -> dict[str, Any]:
    """Run the demo command once in a fresh run folder and data cache; its wall time, scores and other load."""
    segmend = Path(sys.executable).with_name("segmend")
    with tempfile.TemporaryDirectory(prefix="segmend-demo-") as scratch:
        command = [str(segmend), "fit", "-c", CONFIG, f"--trainer.default_root_dir={scratch}/run", *VARIANTS[variant]]
        env = {**os.environ, "SEGMEND_CACHE": f"{scratch}/cache", "WANDB_SILENT": "true"}
        with LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with OtherLoad() as load:
                start = time.perf_counter()
                done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
                seconds = time.perf_counter() - start
    found = SCORES.findall(done.stdout)
    if done.returncode != 0 or not found:
        sys.exit(f"the {variant} demo failed (exit code {done.returncode}):\n{done.stderr[-3000:]}")
    scores = {key: float(value) for key, value in (item.split() for item in found[-1].split(", "))}
    return {"seconds": seconds, "scores": scores, "load": load.cores}


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run rounds until ``args.rounds`` are undisturbed (at most ``args.max_rounds``), saving each."""
    store = args.output.with_suffix(".json")
    rounds: list[dict[str, Any]] = json.loads(store.read_text())["rounds"] if store.exists() and args.resume else []
    while len(clean_rounds(rounds, args.max_load)) < args.rounds and len(rounds) < args.max_rounds:
        order = list(VARIANTS) if len(rounds) % 2 == 0 else list(VARIANTS)[::-1]
        row = {variant: run_demo(variant) for variant in order}
        rounds.append(row)
        store.write_text(json.dumps({"rounds": rounds, "max_load": args.max_load}, indent=1))
        print(
            f"round {len(rounds) - 1}: "
            + ", ".join(f"{v} {row[v]['seconds']:.0f} s (load {row[v]['load']:.2f})" for v in order),
            flush=True,
        )
    return rounds


def clean_rounds(rounds: list[dict[str, Any]], max_load: float) -> list[dict[str, Any]]:
    """The rounds in which no measurement saw more than ``max_load`` cores of other load."""
    return [r for r in rounds if all(r[v]["load"] <= max_load for v in VARIANTS)]


def write_report(args: argparse.Namespace, rounds: list[dict[str, Any]]) -> None:
    """Write the per-round table, the speed-up's interval and the verdicts."""
    from provenance import code_state, command_line, machine

    kept = clean_rounds(rounds, args.max_load)
    lines = [
        "# `make demo`: segmend's defaults against the demo before them",
        "",
        f"Command: `{command_line('bench/demo.py')}`  ",
        f"Machine: {machine()}; code: {code_state()}; seed: the config's (`seed_everything: 0`).  ",
        f"Each measurement: `segmend fit -c {CONFIG}` in a new process with an empty data cache and run "
        "folder (start-up, data generation, 16 epochs, validation, checkpoints, offline W&B). `before` adds "
        f"`{' '.join(VARIANTS['before'])}`. Load: CPU cores other processes used meanwhile; a round with "
        f"more than {args.max_load} is marked * and left out.",
        "",
        "| round | variant | wall time (s) | val/mIoU | val/aAcc | val/mAcc | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, r in enumerate(rounds):
        mark = "" if r in kept else "*"
        for variant in VARIANTS:
            m = r[variant]
            s = m["scores"]
            lines.append(
                f"| {index}{mark} | {variant} | {m['seconds']:.1f} | {s['val/mIoU']:.4f} | {s['val/aAcc']:.4f} "
                f"| {s['val/mAcc']:.4f} | {m['load']:.2f} |"
            )
    lines.append("")
    if len(kept) >= 2:
        interval = ratio_interval([r["before"]["seconds"] / r["default"]["seconds"] for r in kept])
        lines.append(
            f"Speed-up of the default demo (before's wall time / default's, per round): {verdict_text(interval, TARGET)}."
        )
    else:
        lines.append(f"Only {len(kept)} undisturbed round(s): no interval.")
    low, high = MIOU_RANGE
    mious = [r["default"]["scores"]["val/mIoU"] for r in rounds]
    inside = all(low <= m <= high for m in mious)
    lines += [
        "",
        f"Default demo's val/mIoU in [{low}, {high}] in every round: {'yes' if inside else 'no'} "
        f"({', '.join(f'{m:.4f}' for m in mious)}).",
        "",
    ]
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="undisturbed rounds to measure")
    parser.add_argument("--max-rounds", type=int, default=6)
    parser.add_argument("--max-load", type=float, default=0.1)
    parser.add_argument("--resume", action="store_true", help="continue from the saved rounds")
    parser.add_argument("--report", action="store_true", help="only rewrite the report from the saved rounds")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.report:
        rounds = json.loads(args.output.with_suffix(".json").read_text())["rounds"]
    else:
        rounds = measure(args)
    write_report(args, rounds)


if __name__ == "__main__":
    main()
