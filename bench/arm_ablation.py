"""The ARM paper's claims (its Tables 1, 2, 4 and 5) re-run in the benchmark regime, as ``python bench/arm.py ablation``.

    .venv/bin/python bench/arm.py ablation --tune                       # the lr sweeps; resumable
    .venv/bin/python bench/arm.py ablation --seeds 0 1 2 --variants base_ce arm ohem   # reporting runs
    .venv/bin/python bench/arm.py ablation --report-only                # docs/results/arm.md from the JSON

Every run trains the real ``ARMModule`` through ``Trainer.fit`` in the regime of
``bench/regime.py`` (its ``CHOSEN`` candidate: data, net, AdamW with poly decay, steps, precision),
with the paper's auxiliary FCN head at weight 0.4, and is scored by the final val aAcc / mAcc / mIoU
on the fine val masks (no checkpoint selection).

Tuning (``--tune``) is done on other images (``data_seed`` 1) and other seeds (100, 101) than the
reporting runs (``data_seed`` 0, seeds 0, 1, ...), with the same budget for both sides: plain CE and
ARM each try the same three learning rates on coarse labels, and each keeps the one with the best
mean val mIoU. Variants that reweight (Linear ARM, ARM and its ablations) train with ARM's lr,
the others (CE, GCE, KL, OHEM) with CE's. ARM's lr is the network's, negated (the paper's rule).

Results go to one file per seed (``docs/results/arm_runs/seed<k>.json``, ``bench/harness.py``)
as each run ends, so a killed sweep resumes where it stopped; a file of another regime or other
tuned lrs is refused. The report pairs every comparison by seed, gives its 95% t interval and the
verdict computed from it, and, where a claim is not resolved, how many seeds would resolve the
paper's effect.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from harness import (
    SeedResults,
    sweep,
)
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from regime import CANDIDATES, CHOSEN, DOUBLED, Regime, fit

from segmend.losses import holder_optimal_weights
from segmend.modules import ARMModule

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "docs" / "results" / "arm_runs"
RUNS_DOUBLED = REPO / "docs" / "results" / "arm_runs_doubled"  # ``--doubled``: the budget check
TUNING = REPO / "docs" / "results" / "arm_tuning"
REPORT = REPO / "docs" / "results" / "arm.md"
COMMAND = ".venv/bin/python bench/arm.py ablation"

REGIME = CANDIDATES[CHOSEN]
AUX_WEIGHT = 0.4
ARM_LR_MULTIPLIER = 1.0  # the paper: ARM's lr is the net's with a minus sign
# The same sweep for CE and for ARM; it reaches 1.2e-2 because the 400-image regime chose its old edge, 6e-3.
LEARNING_RATES = (1.5e-3, 3e-3, 6e-3, 1.2e-2)
TUNING_DATA_SEED, TUNING_SEEDS = 1, (100, 101)
CURVE_POINTS = torch.linspace(-1.0, 1.0, 21)
THREADS = [REGIME.threads]  # torch threads of a run (``--threads``); recorded with each run, not part of the regime


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of the paper's tables: the label sets it runs on and its ``ARMModule`` arguments."""

    labels: tuple[str, ...]
    options: dict[str, Any]

    @property
    def family(self) -> str:
        """Whose tuned lr it trains with: ``"arm"`` for the reweighting variants, else ``"ce"``."""
        return "arm" if self.options["reweighting"] in ("arm", "linear") else "ce"


BOTH, COARSE = ("coarse", "fine"), ("coarse",)
LINEAR = {"reweighting": "linear", "linear_k": -0.5, "linear_b": 0.5}
# In the order a seed runs them: the paper's headline comparisons (Table 5) first.
VARIANTS: dict[str, Variant] = {
    "base_ce": Variant(BOTH, {"reweighting": "none"}),
    "arm": Variant(BOTH, {"reweighting": "arm"}),
    "ohem": Variant(BOTH, {"reweighting": "ohem"}),
    "linear_suppress": Variant(BOTH, LINEAR),
    "linear_focus": Variant(COARSE, {**LINEAR, "linear_k": 0.5}),
    "linear_suppress_nodetach": Variant(COARSE, {**LINEAR, "detach_confidence": False}),
    "arm_nodetach": Variant(COARSE, {"reweighting": "arm", "detach_confidence": False}),
    "arm_l1": Variant(COARSE, {"reweighting": "arm", "norm_p": 1.0}),
    "arm_l3": Variant(COARSE, {"reweighting": "arm", "norm_p": 3.0}),
    "arm_std": Variant(COARSE, {"reweighting": "arm", "confidence": "std"}),
    "arm_logvar": Variant(COARSE, {"reweighting": "arm", "confidence": "logvar"}),
    "arm_entropy": Variant(COARSE, {"reweighting": "arm", "confidence": "entropy"}),
    "gce": Variant(COARSE, {"reweighting": "none", "pixel_loss": "gce"}),
    "gce_arm": Variant(COARSE, {"reweighting": "arm", "pixel_loss": "gce"}),
    "kl": Variant(COARSE, {"reweighting": "none", "pixel_loss": "kl"}),
    "kl_arm": Variant(COARSE, {"reweighting": "arm", "pixel_loss": "kl", "confidence": "uncertainty"}),
}


class RunRecorder(Callback):
    """Count non-finite training losses; for ARM, keep only the second half's loss-by-confidence histogram."""

    def __init__(self) -> None:
        self.non_finite_steps = 0
        self.histogram_reset = False

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if isinstance(pl_module, ARMModule) and pl_module.hparams.reweighting == "arm":
            pl_module.track_loss_by_confidence = True

    def on_train_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not math.isfinite(float(loss)):
            self.non_finite_steps += 1
        second_half = trainer.global_step >= trainer.max_steps // 2
        if getattr(pl_module, "track_loss_by_confidence", False) and second_half and not self.histogram_reset:
            pl_module.loss_by_confidence.reset()
            self.histogram_reset = True


def train(variant: str, labels: str, seed: int, lr: float, data_seed: int, regime: Regime = REGIME) -> dict[str, Any]:
    """Train one variant in ``regime`` (with ``lr`` and the images of ``data_seed``); its val metrics and curve."""
    options = VARIANTS[variant].options
    regime = dataclasses.replace(regime, lr=lr, data_seed=data_seed, threads=THREADS[0])
    data = regime.data("fullsup", seed, labels=labels)  # every training image, with ``labels`` masks
    data.prepare_data()
    seed_everything(seed, workers=True)  # the same initial net, aux head and batch order for every variant
    module = regime.model(
        data.num_classes, ARMModule, aux_weight=AUX_WEIGHT, arm_lr_multiplier=ARM_LR_MULTIPLIER, **options
    )
    recorder = RunRecorder()
    run = fit(regime, module, data, [recorder])
    result: dict[str, Any] = {
        "labels": labels,
        "lr": lr,
        "options": options,
        "steps": run.steps,
        "seconds": round(run.seconds, 1),
        "threads": regime.threads,
        "load_average": list(run.load_average),
        "curve": run.curve,
        "non_finite_steps": recorder.non_finite_steps,
        **run.metrics,
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
    }


# -------------------------------------------------------------------------------------------- tuning
def shared_settings(regime: Regime) -> dict[str, Any]:
    """The regime's settings that decide a result (all but the threads)."""
    return {k: v for k, v in dataclasses.asdict(regime).items() if k != "threads"}


def tuning_regime() -> dict[str, Any]:
    """What every tuning file shares."""
    regime = shared_settings(dataclasses.replace(REGIME, data_seed=TUNING_DATA_SEED))
    return {"regime": regime, "aux_weight": AUX_WEIGHT, "arm_lr_multiplier": ARM_LR_MULTIPLIER, "labels": "coarse"}


def tuning_files() -> dict[int, SeedResults]:
    """The tuning seeds' results files."""
    return {
        seed: SeedResults(TUNING / f"seed{seed}.json", tuning_regime(), "bench/arm.py", seed) for seed in TUNING_SEEDS
    }


def tune(seeds: list[int] | None = None) -> None:
    """CE and ARM each try every lr of ``LEARNING_RATES`` on the tuning data and seeds (``seeds``: some of them)."""
    for seed, results in tuning_files().items():
        if seeds is not None and seed not in seeds:
            continue
        plan = [
            (f"{family}@lr{lr:g}", lambda f=family, lr=lr, s=seed: train(f, "coarse", s, lr, TUNING_DATA_SEED))
            for family in ("base_ce", "arm")
            for lr in LEARNING_RATES
        ]
        sweep(results, plan)


def tuning_table() -> dict[str, dict[float, list[float]]]:
    """Val mIoU of every tuning run, by family and lr."""
    table: dict[str, dict[float, list[float]]] = {"ce": {}, "arm": {}}
    for results in tuning_files().values():
        for name, result in results.variants.items():
            family = "arm" if name.startswith("arm@") else "ce"
            table[family].setdefault(result["lr"], []).append(result["mIoU"])
    return table


def tuned_lrs() -> dict[str, float] | None:
    """Each family's lr with the best mean val mIoU, or ``None`` while a tuning run is missing."""
    table = tuning_table()
    complete = all(len(table[f].get(lr, [])) == len(TUNING_SEEDS) for f in table for lr in LEARNING_RATES)
    if not complete:
        return None
    return {family: max(LEARNING_RATES, key=lambda lr: statistics.mean(table[family][lr])) for family in table}


# ---------------------------------------------------------------------------------------- reporting runs
def reporting_regime(lrs: dict[str, float], regime: Regime = REGIME) -> dict[str, Any]:
    """What every reporting file shares: the regime, the aux weight, ARM's lr rule and the tuned lrs."""
    return {
        "regime": shared_settings(regime),
        "aux_weight": AUX_WEIGHT,
        "arm_lr_multiplier": ARM_LR_MULTIPLIER,
        "lr": lrs,
    }


def run_key(variant: str, labels: str) -> str:
    """A run's name in its seed's file, e.g. ``'arm@coarse'``."""
    return f"{variant}@{labels}"


def run_seeds(
    seeds: list[int], variants: list[str], labels: list[str], regime: Regime = REGIME, folder: Path = RUNS
) -> None:
    """Run ``variants`` on ``labels`` for every seed, seed by seed, with the tuned lrs, into ``folder``.

    ``regime`` is the benchmark regime, or the same with twice the steps (``--doubled``): the check of
    whether a claim's verdict depends on the step budget.

    Raises:
        SystemExit: If the tuning runs are not finished.

    """
    lrs = tuned_lrs()
    if lrs is None:
        raise SystemExit(f"The lr tuning is not finished (docs/results/arm_tuning/); run `{COMMAND} --tune` first.")
    for seed in seeds:
        results = SeedResults(folder / f"seed{seed}.json", reporting_regime(lrs, regime), "bench/arm.py", seed)
        plan = [
            (
                run_key(v, lab),
                lambda v=v, lab=lab, s=seed: train(v, lab, s, lrs[VARIANTS[v].family], regime.data_seed, regime),
            )
            for v in variants
            for lab in labels
            if lab in VARIANTS[v].labels
        ]
        sweep(results, plan)


def ablation(args: argparse.Namespace) -> None:
    """The ``ablation`` subcommand: tune, run, and (always) render the report."""
    THREADS[0] = args.threads or REGIME.threads
    if args.tune:
        tune(args.seeds)
    elif args.doubled:
        run_seeds(args.seeds or [0, 1, 2], args.variants, args.labels, CANDIDATES[DOUBLED], RUNS_DOUBLED)
    elif not args.report_only:
        run_seeds(args.seeds or [0, 1, 2], args.variants, args.labels)
    from arm_report import write_report  # the report reads only the JSON files

    write_report()


ABLATION_HELP = "the ARM paper's Tables 1, 2, 4 and 5 in the benchmark regime"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of the ``ablation`` subcommand to its parser in ``bench/arm.py``."""
    parser.add_argument("--tune", action="store_true", help="run the lr sweeps (tuning data and seeds)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", help=f"reporting seeds (default 0 1 2); with --tune, some of {TUNING_SEEDS}"
    )
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--labels", nargs="+", choices=list(BOTH), default=list(BOTH))
    parser.add_argument("--threads", type=int, help="torch threads per run (default: the regime's)")
    parser.add_argument("--report-only", action="store_true", help="only render docs/results/arm.md")
    parser.add_argument(
        "--doubled",
        action="store_true",
        help="run at twice the regime's steps, into docs/results/arm_runs_doubled/ (does a verdict depend on the budget?)",
    )


if __name__ == "__main__":
    sys.exit("Run `python bench/arm.py ablation ...`.")
