"""The optimizer step with torch's default CPU kernel (``foreach``) against its fused kernel.

    .venv/bin/python bench/optimizer.py      # writes docs/results/optimizer.md

The parameters of DeepLabV3+ (resnet18 encoder, 128 decoder channels, 6 classes: the baseline
config's net) get fixed random gradients; each optimizer then takes ``--steps`` timed steps after
``--warmup``. Every round times both kernels, the order swapped every round, for AdamW (the
synthetic configs') and SGD with momentum (the real-data configs'). The report also gives the
largest difference between the two kernels' parameters after the same steps from the same start.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from verdicts import comparison, ratio_interval

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "optimizer.md"
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "AdamW": lambda params, **kernel: torch.optim.AdamW(params, lr=0.003, weight_decay=1e-4, **kernel),
    "SGD": lambda params, **kernel: torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4, **kernel),
}
KERNELS = {"foreach": {"foreach": True}, "fused": {"fused": True}}


def model_parameters(seed: int) -> list[torch.nn.Parameter]:
    """The baseline net's parameters, each with a seeded random gradient."""
    from segmend.nets.factory import build_smp_net

    torch.manual_seed(seed)
    net = build_smp_net("DeepLabV3Plus", "resnet18", 6, None, decoder_channels=128)
    params = list(net.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def ms_per_step(optimizer: torch.optim.Optimizer, steps: int, warmup: int) -> float:
    """Mean wall time of one ``optimizer.step()`` in milliseconds."""
    for _ in range(warmup):
        optimizer.step()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return 1000 * (time.perf_counter() - start) / steps


def largest_difference(name: str, seed: int, steps: int) -> float:
    """Largest absolute parameter difference between the two kernels after ``steps`` steps."""
    results = []
    for kernel in KERNELS.values():
        params = model_parameters(seed)
        optimizer = OPTIMIZERS[name](params, **kernel)
        for _ in range(steps):
            optimizer.step()
        results.append(params)
    return max(float((a - b).detach().abs().max()) for a, b in zip(*results, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    from contention import OtherLoad

    params = model_parameters(args.seed)
    times: dict[str, list[dict[str, float]]] = {name: [] for name in OPTIMIZERS}
    with OtherLoad() as load:
        for index in range(args.rounds):
            for name, build in OPTIMIZERS.items():
                order = list(KERNELS) if index % 2 == 0 else list(KERNELS)[::-1]
                row = {
                    kernel: ms_per_step(build(params, **KERNELS[kernel]), args.steps, args.warmup) for kernel in order
                }
                times[name].append(row)
            print(f"round {index}: " + ", ".join(f"{n} {t[-1]}" for n, t in times.items()), flush=True)
    write_report(args, times, load.cores)


def write_report(args: argparse.Namespace, times: dict[str, list[dict[str, float]]], load: float) -> None:
    """Write the table, the intervals and the verdicts to ``args.output``."""
    from provenance import code_state, command_line, machine

    lines = [
        "# The optimizer step: foreach against fused kernels",
        "",
        f"Command: `{command_line('bench/optimizer.py')}`  ",
        f"Machine: {machine()}; torch {torch.__version__}; code: {code_state()}; seed {args.seed}.  ",
        f"DeepLabV3+ (resnet18, 128 decoder channels, 6 classes) parameters with fixed random gradients; "
        f"{args.steps} timed steps after {args.warmup} per measurement, both kernels every round, the order "
        f"swapped every round. Other processes used {load:.2f} CPU cores on average meanwhile.",
        "",
        "| optimizer | foreach ms/step (median) | fused ms/step (median) | speed-up of fused, per round | "
        "largest parameter difference after 20 steps |",
        "|---|---|---|---|---|",
    ]
    sentences = []
    for name, rows in times.items():
        interval = ratio_interval([row["foreach"] / row["fused"] for row in rows])
        medians = {kernel: sorted(row[kernel] for row in rows)[len(rows) // 2] for kernel in KERNELS}
        difference = largest_difference(name, args.seed, 20)
        lines.append(
            f"| {name} | {medians['foreach']:.1f} | {medians['fused']:.1f} | {interval.format(2)} | {difference:.1e} |"
        )
        sentences.append(f"- {name}: " + comparison(interval, "fused", "foreach", "faster", "slower", 2, "x"))
    lines += ["", *sentences, ""]
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
