"""The ARM ablation (paper Tables 1, 2, 4 and 5), run as ``python bench/arm.py ablation``.

``ablation``: every variant (base CE; Linear ARM suppressing / focusing; detached or not; ARM
with L1 / L2 / L3 normalisation and var / std / log var / entropy inputs; CE, GCE and KL with and
without ARM; OHEM) trains through the real ``ARMModule`` + ``Trainer`` path on
``SyntheticDataModule`` (generated once into ``--cache-dir``), one thread, for each seed, and its
final validation aAcc / mAcc / mIoU on the fine validation masks is appended to
``docs/results/arm_runs.json`` as soon as the run ends. A rerun skips finished runs, so a killed
sweep loses at most the run in progress; ``--report-only`` rewrites the tables from the JSON.
Coarse labels run every variant (the paper's Tables 1, 2 and 4 are Cityscapes Coarse numbers);
fine labels run base CE, Linear ARM, ARM and OHEM, the comparison of the paper's Table 5. The
reduced CPU budget (image size, images, epochs, ARM's lr multiplier) is set by the flags and
recorded with every run; docs/results/arm.md explains the choice.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from segmend.datamodules import SyntheticDataModule
from segmend.losses import holder_optimal_weights
from segmend.modules import ARMModule
from segmend.optim import WarmupStepLR

# name -> (label sets it runs on, ARMModule arguments). One run may fill several table rows.
VARIANTS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "base_ce": (("coarse", "fine"), {"reweighting": "none"}),
    "linear_suppress": (("coarse", "fine"), {"reweighting": "linear", "linear_k": -0.5, "linear_b": 0.5}),
    "linear_focus": (("coarse",), {"reweighting": "linear", "linear_k": 0.5, "linear_b": 0.5}),
    "linear_suppress_nodetach": (
        ("coarse",),
        {"reweighting": "linear", "linear_k": -0.5, "linear_b": 0.5, "detach_confidence": False},
    ),
    "arm": (("coarse", "fine"), {"reweighting": "arm"}),
    "arm_nodetach": (("coarse",), {"reweighting": "arm", "detach_confidence": False}),
    "arm_l1": (("coarse",), {"reweighting": "arm", "norm_p": 1.0}),
    "arm_l3": (("coarse",), {"reweighting": "arm", "norm_p": 3.0}),
    "arm_std": (("coarse",), {"reweighting": "arm", "confidence": "std"}),
    "arm_logvar": (("coarse",), {"reweighting": "arm", "confidence": "logvar"}),
    "arm_entropy": (("coarse",), {"reweighting": "arm", "confidence": "entropy"}),
    "gce": (("coarse",), {"reweighting": "none", "pixel_loss": "gce"}),
    "gce_arm": (("coarse",), {"reweighting": "arm", "pixel_loss": "gce"}),
    "kl": (("coarse",), {"reweighting": "none", "pixel_loss": "kl"}),
    "kl_arm": (("coarse",), {"reweighting": "arm", "pixel_loss": "kl", "confidence": "uncertainty"}),
    "ohem": (("coarse", "fine"), {"reweighting": "ohem"}),
}
RESULTS_DIR = Path(__file__).resolve().parents[1] / "docs" / "results"
RUNS_JSON = RESULTS_DIR / "arm_runs.json"
ABLATION_MD = RESULTS_DIR / "arm.md"
CURVE_POINTS = torch.linspace(-1.0, 1.0, 21)


class RunRecorder(Callback):
    """Count non-finite training losses; for ARM, keep only the second half's loss-by-confidence histogram."""

    def __init__(self) -> None:
        self.non_finite_steps = 0
        self.last_loss = float("nan")
        self.histogram_reset = False

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if isinstance(pl_module, ARMModule) and pl_module.hparams.reweighting == "arm":
            pl_module.track_loss_by_confidence = True

    def on_train_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.last_loss = float(loss)
        if not math.isfinite(self.last_loss):
            self.non_finite_steps += 1
        half = int(trainer.estimated_stepping_batches) // 2
        if (
            getattr(pl_module, "track_loss_by_confidence", False)
            and not self.histogram_reset
            and trainer.global_step >= half
        ):
            pl_module.loss_by_confidence.reset()
            self.histogram_reset = True


def run_key(variant: str, labels: str, seed: int) -> str:
    return f"{variant}|{labels}|{seed}"


def load_runs(path: Path) -> dict[str, dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_runs(path: Path, runs: dict[str, dict[str, Any]]) -> None:
    """Write atomically, so a kill never leaves a truncated file."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(runs, indent=1, sort_keys=True))
    tmp.replace(path)


def arm_lr_multiplier(total_steps: int) -> float:
    """ARM's |lr| over the net's, scaled with the schedule's length.

    configs/arm_synthetic_coarse.yaml measured x50 for a 400-step run (ARM then reaches the closed
    form within the run; x1, the paper's value for 40k steps, leaves W(v) flat). Keeping the
    product multiplier x steps at 50 x 400 keeps ARM's total movement comparable.
    """
    return 50.0 * 400.0 / total_steps


def train_one(variant: str, labels: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one variant with the real ARMModule / Trainer path; return its validation metrics."""
    options = VARIANTS[variant][1]
    datamodule = SyntheticDataModule(
        cache_dir=str(args.cache_dir),
        seed=args.data_seed,
        num_train=args.num_train,
        num_val=args.num_val,
        num_wild=0,
        image_size=args.image_size,
        crop_size=args.image_size,
        scale_range=(0.75, 1.25),
        batch_size=args.batch_size,
        num_workers=0,
        labels=labels,
    )
    steps = args.epochs * math.ceil(args.num_train / args.batch_size)
    seed_everything(seed, verbose=False)
    module = ARMModule(
        num_classes=datamodule.num_classes,
        encoder_name="resnet18",
        net_kwargs={"decoder_channels": 128},
        optimizer=partial(torch.optim.SGD, lr=args.lr, momentum=0.9, weight_decay=1e-4),
        lr_scheduler=partial(WarmupStepLR, warmup_fraction=0.05, warmup_start=0.01, milestones=(0.6, 0.9)),
        arm_lr_multiplier=arm_lr_multiplier(steps),
        **options,
    )
    recorder = RunRecorder()
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=args.epochs,
        callbacks=[recorder],
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("val/mIoU", "val/aAcc", "val/mAcc")}
    result: dict[str, Any] = {
        "variant": variant,
        "labels": labels,
        "seed": seed,
        "options": options,
        "arm_lr_multiplier": arm_lr_multiplier(steps) if options["reweighting"] == "arm" else None,
        "steps": int(trainer.global_step),
        "seconds": round(seconds, 1),
        "non_finite_steps": recorder.non_finite_steps,
        "last_train_loss": recorder.last_loss,
        **{k.split("/")[1]: v for k, v in metrics.items()},
    }
    if options["reweighting"] == "arm":
        result.update(arm_diagnostics(module))
    return result


def arm_diagnostics(module: ARMModule) -> dict[str, Any]:
    """ARM's final W(v) and its rank correlation with the closed form of the second half's losses."""
    from segmend.callbacks.arm_curve import rank_correlation

    with torch.no_grad():
        curve = module.weight_map(CURVE_POINTS.view(1, 1, 1, -1)).flatten()
        histogram = module.loss_by_confidence
        learned = module.weight_map(histogram.centres.view(1, 1, 1, -1)).flatten().double()
    occupied = histogram.count > 0
    optimal = holder_optimal_weights(histogram.mean_loss(), histogram.count, max(module.hparams.norm_p, 1.0 + 1e-3))
    corr = rank_correlation(learned[occupied].numpy(), optimal[occupied].numpy()) if occupied.sum() > 2 else None
    return {
        "arm_curve": [round(float(w), 5) for w in curve],
        "closed_form_rank_corr": None if corr is None or math.isnan(corr) else round(corr, 4),
        "confidence_histogram": [int(c) for c in histogram.count],
        "loss_by_confidence": [round(float(x), 5) for x in histogram.mean_loss()],
    }


def planned_runs(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """Seed-major order, so a partial sweep has every variant at the first seeds."""
    plan = []
    for seed in args.seeds:
        for labels in args.labels:
            for variant, (label_sets, _) in VARIANTS.items():
                if labels in label_sets and (not args.only or variant in args.only):
                    plan.append((variant, labels, seed))
    return plan


def ablation(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    runs = load_runs(args.results)
    plan = planned_runs(args)
    if not args.report_only:
        for index, (variant, labels, seed) in enumerate(plan):
            key = run_key(variant, labels, seed)
            if key in runs:
                continue
            try:
                result = train_one(variant, labels, seed, args)
            except Exception as error:  # noqa: BLE001 - a crashed variant is a result too; keep sweeping
                result = {"variant": variant, "labels": labels, "seed": seed, "error": repr(error), "seconds": 0.0}
                result["steps"] = 0
            result["budget"] = budget(args)
            runs[key] = result
            save_runs(args.results, runs)
            print(
                f"[{index + 1}/{len(plan)}] {key}: mIoU {result.get('mIoU', float('nan')):.4f} "
                f"({result['seconds']:.0f} s, {result['steps']} steps)",
                flush=True,
            )
            write_report(args, runs)
    write_report(args, runs)
    print(f"wrote {args.output}")


def budget(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "image_size": args.image_size,
        "num_train": args.num_train,
        "num_val": args.num_val,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "data_seed": args.data_seed,
    }


def summary(runs: dict[str, dict[str, Any]], variant: str, labels: str, metric: str = "mIoU") -> str:
    """``mean ± std (n=k)`` in per cent over the finished seeds, NaN runs counted as NaN."""
    values = [r.get(metric, float("nan")) for r in runs.values() if r["variant"] == variant and r["labels"] == labels]
    if not values:
        return "not run"
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values):
        return f"NaN in {len(values) - len(finite)}/{len(values)} runs"
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{mean:.2f} ± {std:.2f} (n={len(values)})" if len(values) > 1 else f"{mean:.2f} (n=1)"


def delta(runs: dict[str, dict[str, Any]], variant: str, base: str, labels: str) -> str:
    """Mean paired difference (same seed) of mIoU, variant minus base, in points, with its std."""
    by_seed = {
        r["seed"]: r.get("mIoU", float("nan")) for r in runs.values() if r["variant"] == base and r["labels"] == labels
    }
    diffs = [
        100 * (r.get("mIoU", float("nan")) - by_seed[r["seed"]])
        for r in runs.values()
        if r["variant"] == variant and r["labels"] == labels and r["seed"] in by_seed
    ]
    if not diffs or not all(math.isfinite(d) for d in diffs):
        return "–"
    std = f" ± {statistics.stdev(diffs):.2f}" if len(diffs) > 1 else ""
    return f"{statistics.fmean(diffs):+.2f}{std}"


def table(runs: dict, rows: list[tuple[str, str, str]], labels: str, base: str = "base_ce") -> list[str]:
    """Markdown rows ``| label | subtype | aAcc | mAcc | mIoU | Δ vs base (paired) |``."""
    lines = ["| setting | | aAcc | mAcc | mIoU | Δ mIoU vs base (paired by seed) |", "|---|---|---|---|---|---|"]
    for first, second, variant in rows:
        lines.append(
            f"| {first} | {second} | {summary(runs, variant, labels, 'aAcc')} | {summary(runs, variant, labels, 'mAcc')} | "
            f"{summary(runs, variant, labels)} | {'' if variant == base else delta(runs, variant, base, labels)} |"
        )
    return lines


def write_report(args: argparse.Namespace, runs: dict[str, dict[str, Any]]) -> None:
    """Write the paper-shaped tables of every finished run to ``args.output`` (the prose is kept)."""
    done = len(runs)
    planned = len(planned_runs(args))
    seconds = sum(r["seconds"] for r in runs.values())
    blocks = [
        "<!-- tables generated by bench/arm.py ablation; everything outside the markers is hand-written -->",
        f"Finished runs: **{done}** of {planned} planned; total training time {seconds / 60:.1f} min. "
        "Metrics are validation aAcc / mAcc / mIoU in per cent on the fine validation masks, mean ± sample std "
        "over the seeds; Δ is the mean (± std) of the per-seed difference to the base model of the same seed.",
        "",
        "**Table 1 (paper Table 1): detaching the confidence; suppressing vs focusing.** Coarse labels.",
        "",
        *table(
            runs,
            [
                ("Base model (CE)", "", "base_ce"),
                ("Linear ARM (suppressing)", "not detached", "linear_suppress_nodetach"),
                ("Linear ARM (suppressing)", "detached", "linear_suppress"),
                ("Linear ARM (focusing)", "detached", "linear_focus"),
                ("ARM", "not detached", "arm_nodetach"),
                ("ARM", "detached", "arm"),
            ],
            "coarse",
        ),
        "",
        "**Table 2 (paper Table 2): normalisation and input type of ARM.** Coarse labels.",
        "",
        *table(
            runs,
            [
                ("Base model (CE)", "", "base_ce"),
                ("Normalize type", "L1 norm", "arm_l1"),
                ("Normalize type", "L2 norm", "arm"),
                ("Normalize type", "L3 norm", "arm_l3"),
                ("Input type", "var", "arm"),
                ("Input type", "std", "arm_std"),
                ("Input type", "log var", "arm_logvar"),
                ("Input type", "entropy", "arm_entropy"),
            ],
            "coarse",
        ),
        "",
        "**Table 4 (paper Table 4): ARM on different losses.** Coarse labels; Δ here is against the same loss "
        "without ARM.",
        "",
        "| loss | ARM | aAcc | mAcc | mIoU | Δ mIoU vs same loss without ARM (paired) |",
        "|---|---|---|---|---|---|",
    ]
    for loss, plain, with_arm in (("KL", "kl", "kl_arm"), ("CE", "base_ce", "arm"), ("GCE", "gce", "gce_arm")):
        for variant, mark in ((plain, ""), (with_arm, "✓")):
            blocks.append(
                f"| {loss} | {mark} | {summary(runs, variant, 'coarse', 'aAcc')} | {summary(runs, variant, 'coarse', 'mAcc')} | "
                f"{summary(runs, variant, 'coarse')} | {delta(runs, variant, plain, 'coarse') if mark else ''} |"
            )
    blocks += ["", "**Table 5 (paper Tables 5 and 6): ARM vs OHEM, fine and coarse labels.**", ""]
    blocks += ["| labels | method | aAcc | mAcc | mIoU | Δ mIoU vs base (paired) |", "|---|---|---|---|---|---|"]
    for labels in ("fine", "coarse"):
        for name, variant in (
            ("Base model (CE)", "base_ce"),
            ("OHEM", "ohem"),
            ("Linear ARM (suppressing)", "linear_suppress"),
            ("ARM", "arm"),
        ):
            blocks.append(
                f"| synthetic {labels} | {name} | {summary(runs, variant, labels, 'aAcc')} | "
                f"{summary(runs, variant, labels, 'mAcc')} | {summary(runs, variant, labels)} | "
                f"{'' if variant == 'base_ce' else delta(runs, variant, 'base_ce', labels)} |"
            )
    blocks += [
        "",
        "**What ARM learned** (mean over seeds): W(v) at v = -1, -0.5, 0, 0.5, 1, scaled to a "
        "maximum of 1, and the rank correlation of W with the Hölder closed form of the loss-by-confidence "
        "histogram of the second half of training. The rank correlation alone hides a flat W (a W that barely "
        "moved still ranks the bins in the right order): W(1) / W(-1) near 1 means ARM did not shape the weights.",
        "",
    ]
    blocks += [
        "| variant | W(-1) | W(-0.5) | W(0) | W(0.5) | W(1) | rank corr. with closed form | W(1) / W(-1) per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, (label_sets, options) in VARIANTS.items():
        if options["reweighting"] != "arm":
            continue
        for labels in label_sets:
            found = [r for r in runs.values() if r["variant"] == variant and r["labels"] == labels and "arm_curve" in r]
            if not found:
                continue
            curves = torch.tensor([r["arm_curve"] for r in found])
            curves = curves / curves.amax(dim=1, keepdim=True).clamp_min(1e-12)
            mean = curves.mean(0)
            corrs = [r["closed_form_rank_corr"] for r in found if r["closed_form_rank_corr"] is not None]
            corr = f"{statistics.fmean(corrs):.3f}" if corrs else "–"
            points = " | ".join(f"{mean[i]:.2f}" for i in (0, 5, 10, 15, 20))
            contrast = ", ".join(
                f"{r['arm_curve'][-1] / max(r['arm_curve'][0], 1e-12):.2f}" for r in sorted(found, key=run_order)
            )
            blocks.append(f"| {variant} ({labels}) | {points} | {corr} (n={len(corrs)}) | {contrast} |")
    if plot_curves(runs, args.output.with_name(args.output.stem + "_curves.png")):
        blocks += ["", f"![ARM's W(v) against the closed form]({args.output.stem}_curves.png)"]
    blocks.append("<!-- end of generated tables -->")
    generated = "\n".join(blocks)
    text = args.output.read_text() if args.output.is_file() else ""
    begin, end = "<!-- tables generated by bench/arm.py ablation", "<!-- end of generated tables -->"
    if begin in text and end in text:
        text = text[: text.index(begin)] + generated + text[text.index(end) + len(end) :]
    else:
        text = ablation_header(args) + generated + "\n"
    args.output.write_text(text)


def plot_curves(runs: dict[str, dict[str, Any]], path: Path) -> bool:
    """Plot each seed's learned W(v) with the closed form of its loss-by-confidence histogram.

    Returns:
        Whether a figure was written (there are finished ARM runs with a histogram).

    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [v for v in ("arm", "gce_arm", "arm_entropy", "kl_arm") if any(r["variant"] == v for r in runs.values())]
    if not shown:
        return False
    figure, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.2), squeeze=False)
    centres = (torch.linspace(-1, 1, 21)[:-1] + torch.linspace(-1, 1, 21)[1:]) / 2
    for axis, variant in zip(axes[0], shown, strict=True):
        for r in sorted((r for r in runs.values() if r["variant"] == variant and "arm_curve" in r), key=run_order):
            curve = torch.tensor(r["arm_curve"])
            (line,) = axis.plot(CURVE_POINTS, curve / curve.max().clamp_min(1e-12), label=f"{r['labels']} s{r['seed']}")
            counts = torch.tensor(r["confidence_histogram"], dtype=torch.float64)
            optimal = holder_optimal_weights(torch.tensor(r["loss_by_confidence"], dtype=torch.float64), counts)
            occupied = counts > 0
            axis.plot(
                centres[occupied],
                optimal[occupied] / optimal.max().clamp_min(1e-12),
                "o",
                ms=2.5,
                color=line.get_color(),
            )
        axis.set_title(f"{variant}: W(v) (line), closed form (dots)", fontsize=8)
        axis.set_xlabel("confidence v")
        axis.legend(fontsize=6)
    axes[0][0].set_ylabel("weight / max")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def run_order(run: dict[str, Any]) -> tuple[str, int]:
    return run["labels"], run["seed"]


def ablation_header(args: argparse.Namespace) -> str:
    command = "python bench/arm.py " + " ".join(sys.argv[1:])
    return "\n".join(
        [
            "# ARM ablation on synthetic coarse and fine labels",
            "",
            f"Command: `{command.strip()}`  ",
            f"Machine: {platform.platform()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s)  ",
            f"Seeds: {', '.join(map(str, args.seeds))} (training seeds; the data set is generated once with seed "
            f"{args.data_seed})",
            "",
            "",
        ]
    )


ABLATION_HELP = "paper Tables 1, 2, 4, 5 on synthetic coarse/fine labels"


def add_arguments(abl: argparse.ArgumentParser) -> None:
    """Add the flags of the ``ablation`` subcommand to its parser in ``bench/arm.py``."""
    abl.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    abl.add_argument("--labels", nargs="+", choices=["coarse", "fine"], default=["coarse", "fine"])
    abl.add_argument("--only", nargs="*", choices=sorted(VARIANTS), help="run only these variants")
    abl.add_argument("--image-size", type=int, default=64)
    abl.add_argument("--num-train", type=int, default=160)
    abl.add_argument("--num-val", type=int, default=100)
    abl.add_argument("--epochs", type=int, default=10)
    abl.add_argument("--batch-size", type=int, default=8)
    abl.add_argument("--lr", type=float, default=0.02)
    abl.add_argument("--data-seed", type=int, default=0)
    abl.add_argument("--threads", type=int, default=1)
    abl.add_argument("--cache-dir", type=Path, default=Path("/tmp/segmend-arm-bench"))
    abl.add_argument("--results", type=Path, default=RUNS_JSON, help="per-run JSON; finished runs are skipped")
    abl.add_argument("--output", type=Path, default=ABLATION_MD)
    abl.add_argument("--report-only", action="store_true", help="only rewrite the tables from --results")
