"""ARM benchmarks: training-step overhead, and the ablation of the paper's Tables 1, 2, 4 and 5.

    .venv/bin/python bench/arm.py overhead      # writes docs/results/arm_overhead.md
    .venv/bin/python bench/arm.py ablation --tune               # lr sweeps: docs/results/arm_tuning/
    .venv/bin/python bench/arm.py ablation --seeds 0 1 2        # runs: docs/results/arm_runs/, then arm.md

``overhead``: plain CE and ARM train the same DeepLabV3+ (resnet18) from the same initial weights
on the same pre-loaded synthetic batches (data loading excluded), SGD with ARM's negative-lr
group built by ``ARMModule.build_optimizer``. Each round trains fresh copies of both on the same
batches, their steps alternating A B B A ... (which one starts swaps every round), so load from
other processes on a shared machine hits both alike. Each round gives one paired ratio of median
step times (ARM / CE);
the report gives their 95% t interval (on the log ratios) and the verdicts computed from it
(``bench/verdicts.py``): the target (``--target``, default ``ratio <= 1.03``) is met only when the
whole interval satisfies it. Every per-round number goes to ``docs/results/arm_overhead_runs.json``;
``--report-only`` re-renders the report from it.

``ablation`` lives in ``bench/arm_ablation.py`` (see its docstring).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import arm_ablation
import provenance
import torch
from lightning.pytorch import seed_everything
from verdicts import comparison, ratio_interval, target_verdict

from segmend.datamodules import SyntheticDataModule
from segmend.modules import ARMModule, SegmentationModule

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "arm_overhead.md"
JSON = RESULTS.with_name("arm_overhead_runs.json")


def sgd(params):
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)


def interleaved_step_ms(
    modules: dict[str, SegmentationModule], batches: list[dict], warmup: int, first: str
) -> dict[str, float]:
    """Median ms per training step of each module, their steps alternating A B B A A B ... on the same batches.

    Adjacent steps of the two variants are a second apart, so a burst of load from another process
    on this shared machine hits both sides alike instead of one side's whole block.
    """
    optimizers = {}
    for name, module in modules.items():
        module.train()
        optimizers[name] = module.build_optimizer()
    names = [first] + [name for name in modules if name != first]
    times: dict[str, list[float]] = {name: [] for name in modules}
    for index, batch in enumerate(batches):
        for name in names if index % 2 == 0 else names[::-1]:
            module, optimizer = modules[name], optimizers[name]
            start = time.perf_counter()
            loss = module.compute_loss(module(batch["image"]), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if index >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def measure(args: argparse.Namespace) -> dict:
    """Time plain CE and ARM steps in alternating rounds; every per-round number goes into the record."""
    seed_everything(args.seed)
    datamodule = SyntheticDataModule(
        seed=args.seed,
        num_train=args.batch_size * (args.steps + args.warmup),
        num_val=4,
        num_wild=0,
        image_size=args.image_size,
        crop_size=args.image_size,
        scale_range=(1.0, 1.0),
        batch_size=args.batch_size,
        labels="coarse",
    )
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())[: args.steps + args.warmup]
    common = dict(num_classes=datamodule.num_classes, encoder_name="resnet18", optimizer=sgd)
    plain = SegmentationModule(**common)
    arm = ARMModule(reweighting="arm", **common)
    arm.net.load_state_dict(plain.net.state_dict())
    record = {
        "command": provenance.command_line("bench/arm.py"),
        "machine": f"{provenance.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "code": provenance.code_state(),
        "seed": args.seed,
        "steps": args.steps,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "target": args.target,
        "rounds": [],
    }
    for round_index in range(args.repeats):
        first = "plain" if round_index % 2 == 0 else "arm"
        modules = {"plain": copy.deepcopy(plain), "arm": copy.deepcopy(arm)}
        result = interleaved_step_ms(modules, batches, args.warmup, first)
        record["rounds"].append(
            {"round": round_index, "first": first, "plain_ms": result["plain"], "arm_ms": result["arm"]}
        )
        print(
            f"round {round_index}: plain {result['plain']:.1f} ms/step, ARM {result['arm']:.1f} "
            f"ms/step, ratio {result['arm'] / result['plain']:.3f}",
            flush=True,
        )
    return record


def render(record: dict) -> str:
    """The markdown report; every conclusion in it is computed from ``record``."""
    rounds = record["rounds"]
    ratios = [r["arm_ms"] / r["plain_ms"] for r in rounds]
    interval = ratio_interval(ratios)
    target = record["target"]
    verdict = target_verdict(interval, target)
    faster = sum(ratio < 1 for ratio in ratios)
    lines = [
        "# ARM training-step overhead",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine']}  ",
        f"Code: {record['code']}  ",
        f"Seed: {record['seed']}; DeepLabV3+ (resnet18), synthetic coarse labels "
        f"{record['image_size']}x{record['image_size']}, batch {record['batch_size']}, SGD (ARM's negative-lr group "
        f"included); {len(rounds)} rounds, each training fresh copies of both from the same weights on the same "
        f"batches with their steps alternating (A B B A ..., the first swapped each round); per round and variant the "
        f"median of {record['steps']} timed steps after {record['warmup']} warm-up steps; data loading excluded. "
        f"Every per-round number is in `{JSON.name}`.",
        "",
        "| round | first | plain CE (ms/step) | ARM (ms/step) | ratio ARM / CE |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['round']} | {'CE' if r['first'] == 'plain' else 'ARM'} | {r['plain_ms']:.1f} | {r['arm_ms']:.1f} | "
        f"{ratio:.3f} |"
        for r, ratio in zip(rounds, ratios, strict=True)
    ]
    lines += [
        "",
        f"ARM / CE step time, geometric mean over rounds: **{interval.format()}**; 95% t interval on the log "
        "ratios of the rounds (each round's ratio pairs the two variants step by step, so drift and load bursts "
        "largely cancel within it; the rounds are the independent samples).",
        "",
        f"- Target {target}: **{verdict}** "
        + {
            "met": "(the whole interval is at or below the target).",
            "not met": "(the whole interval is above the target).",
            "not resolved": "(the interval contains the target; more rounds or a quieter machine would be needed "
            "to decide).",
        }[verdict],
        "- "
        + _capitalised(
            comparison(interval, "ARM's training step", "plain CE's", higher="slower", lower="faster", label="ratio")
        )
        + f". ARM measured faster than CE in {faster} of {len(rounds)} rounds.",
        "",
    ]
    return "\n".join(lines)


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def overhead(args: argparse.Namespace) -> None:
    if args.report_only:
        record = json.loads(args.json.read_text())
    else:
        record = measure(args)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(record))
    print(f"wrote {args.output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    over = sub.add_parser("overhead", help="ARM step time over plain CE step time")
    over.add_argument("--steps", type=int, default=10)
    over.add_argument("--warmup", type=int, default=2)
    over.add_argument("--repeats", type=int, default=20, help="rounds (at least 2; the interval needs several)")
    over.add_argument("--batch-size", type=int, default=16)
    over.add_argument("--image-size", type=int, default=128)
    over.add_argument("--seed", type=int, default=0)
    over.add_argument("--target", default="ratio <= 1.03", help="verdict target on ARM / CE step time")
    over.add_argument("--output", type=Path, default=RESULTS)
    over.add_argument("--json", type=Path, default=JSON, help="every per-round number (written, or read back)")
    over.add_argument("--report-only", action="store_true", help="re-render the report from --json, no timing")
    arm_ablation.add_arguments(sub.add_parser("ablation", help=arm_ablation.ABLATION_HELP))
    args = parser.parse_args()
    if args.command == "overhead":
        if not args.report_only and args.repeats < 2:
            parser.error("--repeats must be at least 2 for an interval")
        overhead(args)
    else:
        arm_ablation.ablation(args)


if __name__ == "__main__":
    main()
