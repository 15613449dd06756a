"""The training step with glibc's allocator defaults against segmend's allocator tuning.

    .venv/bin/python bench/allocator.py      # writes docs/results/allocator.md

A plain fp32 loop (DeepLabV3+ resnet18, 128x128, batch 16, SGD, in-memory seeded batches) runs in a
new process per measurement, alternately with glibc's defaults and after
``segmend.memory.tune_cpu_allocator()`` (the setting is process-wide, so the two never share a
process). Each measurement times ``--steps`` steps after ``--warmup`` and counts the minor page
faults per step and the peak memory (``getrusage``) and the CPU other processes took meanwhile.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from verdicts import ratio_interval

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "allocator.md"
VARIANTS = ("glibc defaults", "tune_cpu_allocator")


def measure(args: argparse.Namespace) -> None:
    """One measurement in this process; prints ``RESULT {...}``."""
    import torch
    from contention import OtherLoad
    from torch import nn

    from segmend.memory import tune_cpu_allocator
    from segmend.nets.factory import build_smp_net

    if args.variant == "tune_cpu_allocator" and not tune_cpu_allocator():
        sys.exit("tune_cpu_allocator() did nothing here (not glibc on Linux)")
    torch.manual_seed(args.seed)
    net = build_smp_net("DeepLabV3Plus", "resnet18", 6, None).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)
    size = args.image_size
    batches = [
        (
            torch.randn(args.batch_size, 3, size, size, generator=generator),
            torch.randint(0, 6, (args.batch_size, size, size), generator=generator),
        )
        for _ in range(4)
    ]

    def steps(count: int) -> None:
        for step in range(count):
            image, mask = batches[step % len(batches)]
            loss = nn.functional.cross_entropy(net(image), mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    steps(args.warmup)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with OtherLoad() as load:
        start = time.perf_counter()
        steps(args.steps)
        seconds = time.perf_counter() - start
    result = {
        "ms_per_step": 1000 * seconds / args.steps,
        "faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.steps,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load": load.cores,
    }
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", choices=VARIANTS, help="internal: measure one variant in this process")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.variant:
        measure(args)
        return
    rounds = []
    for index in range(args.rounds):
        order = VARIANTS if index % 2 == 0 else VARIANTS[::-1]
        row = {}
        for variant in order:
            command = [sys.executable, __file__, "--variant", variant]
            for option in ("steps", "warmup", "batch_size", "image_size", "seed"):
                command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if done.returncode != 0 or not line:
                sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
            row[variant] = json.loads(line[-1][len("RESULT ") :])
        rounds.append(row)
        print(f"round {index}: " + ", ".join(f"{v} {row[v]['ms_per_step']:.0f} ms" for v in VARIANTS), flush=True)
    write_report(args, rounds)


def write_report(args: argparse.Namespace, rounds: list[dict]) -> None:
    from provenance import code_state, command_line, machine

    speedups = [r[VARIANTS[0]]["ms_per_step"] / r[VARIANTS[1]]["ms_per_step"] for r in rounds]
    interval = ratio_interval(speedups)
    lines = [
        "# The memory allocator and the training step",
        "",
        f"Command: `{command_line('bench/allocator.py')}`  ",
        f"Machine: {machine()}; code: {code_state()}.  ",
        f"Plain fp32 loop, DeepLabV3+ (resnet18), {args.image_size}x{args.image_size}, batch {args.batch_size}, SGD; "
        f"{args.steps} timed steps after {args.warmup}, each measurement in a new process, the order swapped "
        "every round. Load: CPU cores other processes used during the measurement.",
        "",
        "| round | variant | ms per step | minor page faults per step | peak memory (MiB) | load |",
        "|---|---|---|---|---|---|",
    ]
    for index, r in enumerate(rounds):
        for variant in VARIANTS:
            m = r[variant]
            lines.append(
                f"| {index} | {variant} | {m['ms_per_step']:.0f} | {m['faults_per_step']:.0f} | {m['peak_mib']:.0f} "
                f"| {m['load']:.2f} |"
            )
    lines += [
        "",
        f"Speed-up of `tune_cpu_allocator` (glibc defaults' step time / tuned step time, per round): "
        f"{interval.format(3)}.",
        "",
    ]
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
