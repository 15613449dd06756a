"""Where segmend's fp32 training loop spends its time, against a plain PyTorch loop (profiled, not guessed).

    .venv/bin/python bench/overhead.py            # writes docs/results/overhead.md

Both train ``configs/baseline_synthetic.yaml``'s model on its data at fp32 for ``--epochs`` epochs
(validation off, so only training steps are compared), in this order: the plain loop, then segmend.
segmend runs as the shipped config sets it up, through ``SegmendCLI``: progress bar, the W&B logger
(offline, into a temporary folder; honours ``WANDB_MODE=disabled``), ``log_every_n_steps`` 10,
``LearningRateMonitor``, ``ModelCheckpoint``, the image logger. The plain loop uses the same net
(built by the same module), optimizer, schedule and DataLoader. Each runs under pyinstrument
(1 ms sampling); the report sorts the wall time into the parts below, per training step, and
counts minor page faults per step (``getrusage``).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contention import OtherLoad
from lightning.pytorch import Callback
from provenance import code_state, command_line, machine
from pyinstrument import Profiler
from torch import nn

from segmend.cli import SegmendCLI

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "overhead.md"
CONFIG = "configs/baseline_synthetic.yaml"

# part -> predicate on (function, file path). A frame of a part nested in another part's frame is carved
# out of the outer one (Lightning runs forward and backward inside the optimizer's step, as a closure).
PARTS: dict[str, Callable[[str, str], bool]] = {
    "net forward": lambda fn, path: fn == "forward" and "segmentation_models_pytorch/base/model.py" in path,
    "loss (compute_loss / criterion)": lambda fn, path: (
        (fn == "compute_loss" and "segmend" in path) or (fn == "cross_entropy" and "torch/nn/functional.py" in path)
    ),
    "backward": lambda fn, path: fn == "backward" and path.endswith("torch/_tensor.py"),
    "optimizer + schedule (torch)": lambda fn, path: fn in ("step", "zero_grad") and "torch/optim/" in path,
    "data (next batch)": lambda fn, path: fn == "__next__" and "torch/utils/data/dataloader.py" in path,
    "self.log": lambda fn, path: fn == "log" and "lightning/pytorch/core/module.py" in path,
    "progress bar": lambda fn, path: "callbacks/progress/" in path,
    "LearningRateMonitor": lambda fn, path: "callbacks/lr_monitor.py" in path,
    "ModelCheckpoint": lambda fn, path: "callbacks/model_checkpoint.py" in path,
    "metrics to the logger": lambda fn, path: fn == "log_metrics" and "logger_connector" in path,
    "setup (logger start, config, hooks)": lambda fn, path: (
        fn in ("_call_setup_hook", "_log_hyperparams") or (fn == "save_config" and "segmend" in path)
    ),
    "image logger": lambda fn, path: "image_logger.py" in path,
}


def split(profiler: Profiler) -> dict[str, float]:
    """Seconds of the profile in each of :data:`PARTS`; the rest as ``"other"``."""
    root = profiler.last_session.root_frame()
    seconds: dict[str, float] = defaultdict(float)

    def walk(frame: Any, inside: str | None) -> None:
        path, here = frame.file_path or "", inside
        part = next((name for name, matches in PARTS.items() if matches(frame.function or "", path)), None)
        if part is not None and part != inside:
            seconds[part] += frame.time
            if inside is not None:
                seconds[inside] -= frame.time
            here = part
        for child in frame.children:
            walk(child, here)

    walk(root, None)
    seconds["other"] = root.time - sum(seconds.values())
    seconds["total"] = root.time
    return dict(seconds)


class StepCounter(Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_train_batch_end(self, *args: Any) -> None:
        self.steps += 1


def build(epochs: int, folder: str, tune_allocator: bool = False) -> SegmendCLI:
    return SegmendCLI(
        args=[
            "-c",
            CONFIG,
            "--trainer.precision=32-true",
            f"--trainer.max_epochs={epochs}",
            f"--trainer.default_root_dir={folder}",
            f"--trainer.logger.init_args.save_dir={folder}",
            "--trainer.limit_val_batches=0",
            "--trainer.num_sanity_val_steps=0",
            f"--model.init_args.tune_cpu_allocator={str(tune_allocator).lower()}",
        ],
        run=False,
    )


def plain(epochs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        cli = build(epochs, folder)
        module, datamodule = cli.model, cli.datamodule
        datamodule.setup("fit")
        net = module.net.train()
        optimizer = module.build_optimizer()
        scheduler = module.lr_scheduler_factory(optimizer)
        scheduler.bind_total_steps(epochs * len(datamodule.train_dataloader()))
        profiler, steps = Profiler(interval=0.001), 0
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        with OtherLoad() as load:
            start = time.perf_counter()
            profiler.start()
            for epoch in range(epochs):
                loader = datamodule.train_dataloader()
                loader.sampler.set_epoch(epoch)
                for batch in loader:
                    loss = nn.functional.cross_entropy(net(batch["image"]), batch["mask"], ignore_index=255)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    steps += 1
            profiler.stop()
            seconds = time.perf_counter() - start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"steps": steps, "seconds": seconds, "faults": faults, "load": load.cores, "parts": split(profiler)}


def segmend(epochs: int, tune_allocator: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        cli = build(epochs, folder, tune_allocator)
        counter = StepCounter()
        cli.trainer.callbacks.append(counter)
        cli.datamodule.setup("fit")
        profiler = Profiler(interval=0.001)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        with OtherLoad() as load:
            start = time.perf_counter()
            profiler.start()
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            profiler.stop()
            seconds = time.perf_counter() - start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"steps": counter.steps, "seconds": seconds, "faults": faults, "load": load.cores, "parts": split(profiler)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--tune-allocator",
        action="store_true",
        help="let segmend tune the memory allocator (off by default: the plain loop runs with glibc's defaults)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs = {"plain": plain(args.epochs), "segmend": segmend(args.epochs, args.tune_allocator)}
    for name, run in runs.items():
        print(f"{name}: {run['steps']} steps in {run['seconds']:.2f} s, other load {run['load']:.2f}", flush=True)
    write_report(args, runs)


def write_report(args: argparse.Namespace, runs: dict[str, dict[str, Any]]) -> None:
    names = [*PARTS, "other", "total"]
    lines = [
        "# Framework overhead: segmend's fp32 training loop against a plain PyTorch loop",
        "",
        f"Command: `{command_line('bench/overhead.py')}`  ",
        f"Machine: {machine()}; code: {code_state()}.  ",
        f"`{CONFIG}` at fp32, {args.epochs} epochs of training (validation off), profiled with pyinstrument "
        "(1 ms sampling). segmend runs the config's callbacks and W&B logger; the plain loop the same net, "
        "optimizer, schedule and DataLoader; segmend's memory allocator tuning "
        f"{'on' if args.tune_allocator else 'off (`tune_cpu_allocator=false`), as the plain loop leaves it'}. "
        "Times in ms per training step; setup and end-of-fit work are spread over the steps too.",
        "",
        "| part | plain loop (ms/step) | segmend (ms/step) | segmend - plain (ms/step) |",
        "|---|---|---|---|",
    ]
    plain_run, seg_run = runs["plain"], runs["segmend"]
    for name in names:
        p = 1000 * plain_run["parts"].get(name, 0.0) / plain_run["steps"]
        s = 1000 * seg_run["parts"].get(name, 0.0) / seg_run["steps"]
        bold = "**" if name == "total" else ""
        lines.append(f"| {bold}{name}{bold} | {p:.1f} | {s:.1f} | {s - p:+.1f} |")
    lines += [
        "",
        "| run | steps | wall time (s) | minor page faults per step | other processes (cores) |",
        "|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        lines.append(
            f"| {name} | {run['steps']} | {run['seconds']:.2f} | {run['faults'] / run['steps']:.0f} | {run['load']:.2f} |"
        )
    lines.append("")
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
