"""Memory layout (``channels_last``) and ``torch.compile`` on the training step, fp32 and bf16 autocast.

Every variant trains the same DeepLabV3+ (resnet18, ``decoder_channels`` 128, as in
``configs/baseline_synthetic.yaml``) from the same initial weights on the same in-memory
synthetic batches (96x96, batch 16, AdamW), in one process. The variants take turns: each round
runs every variant for ``--steps`` timed steps after ``--warmup`` untimed ones, in an order
rotated every round. A compiled variant's first call is timed separately: its compile time is
the first step's wall time minus one steady step, with inductor's on-disk cache empty (cold, a
user's first run), and again for a second copy of the net in the same process ("second copy":
dynamo may reuse the first copy's code or recompile from inductor's filled cache; a lower bound
of what a later run with the same shapes pays). The report sets each speed-up against its
compile time over the step counts of the shipped synthetic configs.

    .venv/bin/python bench/layout_compile.py     # writes docs/results/layout_compile.md
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

# a cold compile, as on a user's first run: inductor's on-disk caches start empty (set before torch loads)
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="segmend-inductor-"))

import torch  # noqa: E402
from contention import OtherLoad
from torch import nn

from segmend.nets.factory import build_smp_net

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "layout_compile.md"
# optimizer steps of the shipped synthetic configs (epochs x steps per epoch); eval passes come on top
RUN_LENGTHS = {
    "baseline_synthetic (16 x 25)": 400,
    "arm_synthetic_coarse (16 x 25)": 400,
    "selfcorr_synthetic (3 stages, about 300 each)": 900,
}


def cpu_description() -> str:
    """CPU model and its bf16-relevant flags."""
    model, flags = platform.processor() or "unknown CPU", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    relevant = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni") if f in flags]
    return f"{model} (flags: {', '.join(relevant) or 'none of avx512f/avx512_bf16/amx'})"


def make_batches(count: int, batch_size: int, size: int, num_classes: int, seed: int) -> list[tuple]:
    """Seeded smooth images and blocky labels (what a step computes does not depend on the values)."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        image = torch.randn(batch_size, 3, size, size, generator=generator)
        mask = torch.randint(0, num_classes, (batch_size, size // 8, size // 8), generator=generator)
        mask = mask.repeat_interleave(8, 1).repeat_interleave(8, 2)
        batches.append((image, mask))
    return batches


class Variant:
    """One training setup: its own copy of the net and optimizer, and a step function."""

    def __init__(self, name: str, initial: nn.Module, bf16: bool, channels_last: bool, compiled: bool) -> None:
        self.name, self.bf16, self.channels_last, self.compiled = name, bf16, channels_last, compiled
        self.net = copy.deepcopy(initial).train()
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=0.003, weight_decay=1e-4)
        self.forward = torch.compile(self._forward) if compiled else self._forward
        self.compile_s: float | None = None
        self.warm_s: float | None = None
        self.speeds: list[float] = []
        self.loads: list[float] = []

    def _forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.net(image)
        return nn.functional.cross_entropy(logits.float(), mask, ignore_index=255)

    def step(self, batch: tuple) -> None:
        image, mask = batch
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        loss = self.forward(image, mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def run(self, batches: list[tuple], steps: int, warmup: int) -> tuple[float, float]:
        """Images/s over ``steps`` steps after ``warmup``, and the cores other processes used meanwhile."""
        for i in range(warmup):
            self.step(batches[i % len(batches)])
        with OtherLoad() as load:
            start = time.perf_counter()
            for i in range(steps):
                self.step(batches[(warmup + i) % len(batches)])
            seconds = time.perf_counter() - start
        return steps * batches[0][0].shape[0] / seconds, load.cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4, help="measurements to keep per variant (without other load)")
    parser.add_argument("--max-rounds", type=int, default=10, help="rounds to run at most")
    parser.add_argument(
        "--max-load", type=float, default=0.25, help="cores other processes may use in a kept measurement"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    num_classes = 6
    initial = build_smp_net("DeepLabV3Plus", "resnet18", num_classes, None, decoder_channels=128)
    batches = make_batches(4, args.batch_size, args.image_size, num_classes, args.seed)
    variants = [
        Variant(
            f"{precision}, {layout}, {mode}",
            initial,
            precision == "bf16",
            layout == "channels_last",
            mode == "compiled",
        )
        for mode in ("eager", "compiled")
        for precision in ("fp32", "bf16")
        for layout in ("contiguous", "channels_last")
    ]
    for variant in variants:  # first call: compilation (eager variants: one-off allocations)
        start = time.perf_counter()
        variant.step(batches[0])
        variant.compile_s = time.perf_counter() - start
        if variant.compiled:  # the same again on a fresh copy: dynamo traces again, inductor's cache answers
            twin = Variant(variant.name, initial, variant.bf16, variant.channels_last, compiled=True)
            start = time.perf_counter()
            twin.step(batches[0])
            variant.warm_s = time.perf_counter() - start
            del twin
        print(f"{variant.name}: first step {variant.compile_s:.1f} s (warm cache: {variant.warm_s})", flush=True)
    for round_index in range(args.max_rounds):
        shift = round_index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            speed, load = variant.run(batches, args.steps, args.warmup)
            variant.speeds.append(speed)
            variant.loads.append(load)
        print(
            f"round {round_index}: "
            + ", ".join(f"{v.name} {v.speeds[-1]:.1f} (load {v.loads[-1]:.2f})" for v in variants),
            flush=True,
        )
        if all(sum(load <= args.max_load for load in v.loads) >= args.rounds for v in variants):
            break
    write_report(args, variants)


def write_report(args, variants: list[Variant]) -> None:
    for v in variants:  # medians over the measurements without other load (all of them if none was free)
        v.all_speeds = v.speeds
        v.speeds = [s for s, load in zip(v.speeds, v.loads, strict=True) if load <= args.max_load] or v.speeds
    reference = statistics.median(variants[0].speeds)
    by_name = {v.name: v for v in variants}
    rounds = len(variants[0].all_speeds)
    lines = [
        "# Layout and compilation of the training step",
        "",
        f"Command: `{' '.join(['python bench/layout_compile.py', *sys.argv[1:]])}`",
        "",
        f"Machine: {cpu_description()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}. Seed {args.seed}.  ",
        f"DeepLabV3+ (resnet18, decoder_channels 128) as in `configs/baseline_synthetic.yaml`, "
        f"{args.image_size}x{args.image_size} images, batch {args.batch_size}, AdamW; per round and variant "
        f"{args.steps} timed steps after {args.warmup} untimed; order rotated every round. "
        "`compiled` is `torch.compile` (inductor) of forward + loss; backward through AOTAutograd.  ",
        f"The machine is shared: a measurement during which other processes used more than {args.max_load} "
        "cores (in brackets, from `/proc/stat`) is left out of the medians (marked *), and rounds run until "
        f"every variant has {args.rounds} measurements kept or {args.max_rounds} rounds have run.",
        "",
        "| variant | "
        + " | ".join(f"round {i}" for i in range(rounds))
        + " | median img/s (kept) | vs fp32 eager | first step, cold (s) | first step, second copy (s) |",
        "|---" * (rounds + 5) + "|",
    ]
    for v in variants:
        med = statistics.median(v.speeds)
        cells = " | ".join(
            f"{s:.1f} ({load:.2f}){'*' if load > args.max_load else ''}"
            for s, load in zip(v.all_speeds, v.loads, strict=True)
        )
        warm = f"{v.warm_s:.1f}" if v.warm_s is not None else ""
        lines.append(f"| {v.name} | {cells} | {med:.1f} | {med / reference:.2f}x | {v.compile_s:.1f} | {warm} |")
    lines += [
        "",
        "Break-even: a compiled variant pays over a run of N optimizer steps when N x (eager step time - "
        "compiled step time) exceeds its compile time (first step minus one steady step). Evaluation "
        '(module in eval mode, a last smaller batch) compiles further graphs, not counted here. "second copy": '
        "the first step of a second copy of the net in the same process (a lower bound of a warm-cache run).",
        "",
        "| compiled variant | compile time, cold / second copy (s) | saved per step (s) | break-even steps (cold) | "
        + " | ".join(f"net gain over {name}, cold / second copy (s)" for name in RUN_LENGTHS)
        + " |",
        "|---" * (4 + len(RUN_LENGTHS)) + "|",
    ]
    for v in variants:
        if not v.compiled:
            continue
        eager = by_name[v.name.replace("compiled", "eager")]
        eager_step = args.batch_size / statistics.median(eager.speeds)
        compiled_step = args.batch_size / statistics.median(v.speeds)
        compile_s = v.compile_s - compiled_step
        warm_s = v.warm_s - compiled_step
        saved = eager_step - compiled_step
        breakeven = f"{compile_s / saved:.0f}" if saved > 0 else "never"
        gains = " | ".join(
            f"{steps * saved - compile_s:+.0f} / {steps * saved - warm_s:+.0f}" for steps in RUN_LENGTHS.values()
        )
        lines.append(f"| {v.name} | {compile_s:.1f} / {warm_s:.1f} | {saved:+.3f} | {breakeven} | {gains} |")
    lines.append("")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
