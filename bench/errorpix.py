"""Erroneous-pixel prediction on the synthetic scenes: the paper's Tables 1-3 shaped, paired by seed.

    python bench/errorpix.py                    # every run (resumable: a re-run skips finished runs) + report
    python bench/errorpix.py --report-only      # rewrite docs/results/errorpix.md from docs/results/errorpix_runs/
    python bench/errorpix.py --seeds 0 1 2 --semantic-steps 1500

For every seed (it initialises every net and orders every variant's batches the same way; the
images are the same for all seeds), through the real modules, DataModule and stage runner
(:func:`segmend.runs.fit`):

* ``semantic``: DeepLabV3+ (resnet18, random init) trained with CE for ``--semantic-steps``, its
  val mIoU recorded every ``--curve-every`` steps (the learning curve that shows the plateau).
  Its final checkpoint is the frozen semantic branch of every error-pixel variant of the seed.
* ``ours_t<t>``: :class:`ErrorPixelModule` with the paper's settings (rho 0.95, w1 1, w2 1.5) and
  threshold ``t`` in {0.5, 0.6, 0.7, 0.8} (Tab. 2): the ``error`` stage is trained once (in
  ``ours_t0.7``) and its final checkpoint shared, so the variants differ only in the detail stage.
* ``bagging``: the detail branch trained on every labelled pixel and averaged with the semantic
  branch (``detail_pixels: all``, ``fusion: average``), on the same error-stage checkpoint.
* ``gau_decoder``, ``hard_mining``, ``layer_cascade``: DeepLabV3+ with its decoder replaced by the
  detail branch's GAU decoder (same widths), trained from scratch like ``semantic`` (same steps, data
  order and initial encoder), with plain CE, with loss-rank mining of the 20% highest-loss pixels,
  and as a layer cascade (rho 0.95).

Every score is measured on a held-out test set of ``--test-images`` synthetic images generated
with another data seed; nothing is tuned on it (all settings are the paper's). Each run's result
is written to the JSON as soon as it ends.

Inference time: the semantic branch, the error branch and the detail branch of one seed's trained
module on the same images, interleaved over rounds in this process; the branches' times relative
to the semantic branch's (the paper: 0.05 s and 0.28 s against DeepLabV3+'s 0.38 s).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from segmend.datamodules import SyntheticDataModule

from segmend.checkpoints import read_weights
from segmend.metrics import segmentation_metrics
from segmend.metrics.error_pixel import ErrorThresholdSweep
from segmend.modules import ErrorPixelModule, GAUDecoderModule, LayerCascadeModule, SegmentationModule
from segmend.optim import PolyLR
from segmend.precision import auto_precision
from segmend.runs import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import code_state, command_line, machine  # noqa: E402
from verdicts import comparison, difference_interval, ratio_interval  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
RUNS = RESULTS / "errorpix_runs"  # one JSON per seed, and timing.json
REPORT = RESULTS / "errorpix.md"
THRESHOLDS = (0.5, 0.6, 0.7, 0.8)
OURS = "ours_t0.7"
TABLE3 = (
    ("semantic", "DeepLabV3+ (the semantic branch)"),
    ("gau_decoder", "DeepLabV3+-GAU-Decoder"),
    ("layer_cascade", "LC-GAU-Decoder (rho 0.95)"),
    ("hard_mining", "DeepLabV3+-GAU-Decoder, hard mining (loss rank, top 20%)"),
    ("bagging", "DeepLabV3+-Bagging (detail branch on all pixels, averaged)"),
    (OURS, "Ours (t = 0.7)"),
)


@dataclass(frozen=True)
class Regime:
    """What every run of the benchmark shares."""

    image_size: int = 64
    num_train: int = 400
    num_val: int = 100
    test_images: int = 300
    test_data_seed: int = 1000
    batch_size: int = 16
    lr: float = 0.002
    semantic_steps: int = 2000
    error_steps: int = 500
    detail_steps: int = 700
    curve_every: int = 100
    encoder_name: str = "resnet18"
    decoder_channels: int = 128
    detail_widths: tuple[int, ...] = (128, 64, 32)

    def net(self) -> dict[str, Any]:
        """The semantic net's arguments (also the GAU-decoder baselines' encoder)."""
        return {
            "arch": "DeepLabV3Plus",
            "encoder_name": self.encoder_name,
            "net_kwargs": {"decoder_channels": self.decoder_channels},
        }

    def optimisation(self) -> dict[str, Any]:
        """Adam and poly(0.9) over each stage, as in the paper."""
        return {"optimizer": partial(torch.optim.Adam, lr=self.lr), "lr_scheduler": partial(PolyLR, power=0.9)}


def train_data(regime: Regime) -> SyntheticDataModule:
    """The training images (the same for every seed; the loader order follows the global seed)."""
    return SyntheticDataModule(
        seed=0,
        num_train=regime.num_train,
        num_val=regime.num_val,
        num_wild=0,
        image_size=regime.image_size,
        batch_size=regime.batch_size,
        num_workers=1,
    )


def test_data(regime: Regime) -> SyntheticDataModule:
    """The held-out test images: the val split of another data seed."""
    return SyntheticDataModule(
        seed=regime.test_data_seed,
        num_train=1,
        num_val=regime.test_images,
        num_wild=0,
        image_size=regime.image_size,
        batch_size=regime.batch_size,
        num_workers=0,
    )


class LearningCurve(Callback):
    """Records ``(step, val/mIoU)`` after each validation."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if not trainer.sanity_checking and "val/mIoU" in trainer.callback_metrics:
            self.points.append((trainer.global_step, float(trainer.callback_metrics["val/mIoU"])))


def trainer_kwargs(steps: int, validate_every: int | None = None) -> dict[str, Any]:
    """Trainer arguments of one stage: ``steps`` optimizer steps, quiet, the hardware's precision."""
    validation = (
        {"val_check_interval": validate_every, "check_val_every_n_epoch": None}
        if validate_every
        else {"limit_val_batches": 0}
    )
    return {
        "max_steps": steps,
        "max_epochs": -1,
        "accelerator": "cpu",
        "devices": 1,
        "precision": auto_precision("cpu").precision,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        **validation,
    }


@torch.no_grad()
def evaluate(module: LightningModule, data: SyntheticDataModule) -> dict[str, Any]:
    """Test-set mIoU of ``module``'s prediction; for an error-pixel module also its semantic mIoU and error sweep."""
    module.eval()
    metrics = segmentation_metrics(module.num_classes, module.ignore_index, module.class_names)
    semantic = metrics.clone() if isinstance(module, ErrorPixelModule) else None
    sweep = ErrorThresholdSweep(THRESHOLDS, 0.95, module.ignore_index) if semantic is not None else None
    data.setup("test")
    for batch in data.test_dataloader():
        image, target = batch["image"], batch["mask"]
        if isinstance(module, ErrorPixelModule):
            outputs = module.cascade(image)
            metrics.update(module.fused_logits(outputs).argmax(dim=1), target)
            semantic.update(outputs.semantic_logits.argmax(dim=1), target)
            sweep.update(outputs.error_prob, outputs.semantic_probs, target)
        else:
            metrics.update(module(image).argmax(dim=1), target)
    result: dict[str, Any] = {"mIoU": float(metrics.compute()["mIoU"])}
    if semantic is not None:
        result["semantic_mIoU"] = float(semantic.compute()["mIoU"])
        result["sweep"] = {key: [float(v) for v in value.reshape(-1)] for key, value in sweep.compute().items()}
    return result


#: The predictions :func:`diagnose` scores, by name.
DIAGNOSES = {
    "semantic": "semantic branch",
    "detail": "detail branch alone",
    "predicted_errors": "Eq. 5 with the predicted error mask (P_ep > t)",
    "true_errors": "Eq. 5 with the true error mask (a perfect error branch)",
    "average": "average of both branches' probabilities",
}


@torch.no_grad()
def diagnose(module: ErrorPixelModule, data: SyntheticDataModule) -> dict[str, float]:
    """Test-set mIoU of each way to combine a trained error-pixel module's branches (:data:`DIAGNOSES`).

    Where a fusion's gain or loss comes from: how good the detail branch is on its own, what the
    fusion gives with the error mask the error branch predicts, and what it would give with the
    true error mask.
    """
    module.eval()
    template = segmentation_metrics(module.num_classes, module.ignore_index, module.class_names)
    metrics = {name: template.clone() for name in DIAGNOSES}
    data.setup("test")
    for batch in data.test_dataloader():
        image, target = batch["image"], batch["mask"]
        outputs = module.cascade(image)
        semantic, detail = outputs.semantic_logits.argmax(dim=1), outputs.detail_logits.argmax(dim=1)
        wrong = (semantic != target) & (target != module.ignore_index)  # (B, H, W) Eq. 1
        flagged = outputs.error_prob[:, 0] > module.hparams.threshold  # (B, H, W) Eq. 4
        average = outputs.semantic_probs + outputs.detail_logits.softmax(dim=1)
        labels = {
            "semantic": semantic,
            "detail": detail,
            "predicted_errors": torch.where(flagged, detail, semantic),
            "true_errors": torch.where(wrong, detail, semantic),
            "average": average.argmax(dim=1),
        }
        for name, predicted in labels.items():
            metrics[name].update(predicted, target)
    return {name: float(metric.compute()["mIoU"]) for name, metric in metrics.items()}


def load_json(path: Path) -> dict[str, Any]:
    """A results file, or an empty dict when there is none yet."""
    return json.loads(path.read_text()) if path.is_file() else {}


def save_json(data: dict[str, Any], path: Path) -> None:
    """Write a results file atomically, so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial_file = path.with_suffix(".json.partial")
    partial_file.write_text(json.dumps(data, indent=1, sort_keys=True))
    partial_file.replace(path)


def load_runs(folder: Path) -> dict[str, dict[str, Any]]:
    """Every seed's finished variants, by seed (as a string)."""
    return {path.stem.removeprefix("seed"): load_json(path)["variants"] for path in sorted(folder.glob("seed*.json"))}


class SeedRuns:
    """Every variant of one seed, trained in ``<work>/seed<seed>/<variant>`` and evaluated on the test set."""

    def __init__(self, seed: int, regime: Regime, work: Path, results: Path) -> None:
        self.seed, self.regime, self.folder = seed, regime, work / f"seed{seed}"
        self.json_path = results / f"seed{seed}.json"
        as_saved = json.loads(json.dumps(asdict(regime)))
        self.results = load_json(self.json_path) or {"regime": as_saved, "variants": {}}
        if self.results["regime"] != as_saved:
            raise ValueError(
                f"{self.json_path} holds runs of another regime {self.results['regime']}; give another --results folder."
            )
        self.data, self.test = train_data(regime), test_data(regime)
        self.classes = {"num_classes": self.data.num_classes, "class_names": self.data.class_names}

    @property
    def done(self) -> dict[str, Any]:
        """This seed's finished variants."""
        return self.results["variants"]

    def record(self, variant: str, result: dict[str, Any], started: float) -> None:
        """Store a variant's result (with its wall time) and write the JSON."""
        result["seconds"] = round(time.time() - started, 1)
        self.done[variant] = result
        self.results.update(machine=machine(), code=code_state(), command=command_line("bench/errorpix.py"))
        save_json(self.results, self.json_path)
        print(f"seed {self.seed} {variant}: mIoU {result['mIoU']:.4f} ({result['seconds']} s)", flush=True)

    @property
    def semantic_checkpoint(self) -> Path:
        """The semantic run's final checkpoint."""
        return self.folder / "semantic" / "fit" / "final.ckpt"

    def semantic(self) -> None:
        """Train the semantic branch (DeepLabV3+ with CE), recording its learning curve."""
        started, regime = time.time(), self.regime
        seed_everything(self.seed)
        module = SegmentationModule(**self.classes, **regime.net(), **regime.optimisation())
        curve = LearningCurve()
        kwargs = trainer_kwargs(regime.semantic_steps, regime.curve_every)
        fit(module, self.data, self.folder / "semantic", callbacks=[curve], **kwargs)
        result = evaluate(module, self.test)
        result["curve"] = curve.points
        self.record("semantic", result, started)

    def build_error_pixel(self, threshold: float = 0.7, **options: Any) -> ErrorPixelModule:
        """The seed's :class:`ErrorPixelModule` (the paper's settings), initialised from the seed."""
        regime = self.regime
        seed_everything(self.seed)
        return ErrorPixelModule(
            **self.classes,
            semantic_checkpoint=str(self.semantic_checkpoint),
            threshold=threshold,
            rho=0.95,
            easy_weight=1.0,
            hard_weight=1.5,
            detail_widths=regime.detail_widths,
            error_steps=regime.error_steps,
            detail_steps=regime.detail_steps,
            **regime.optimisation(),
            **options,
        )

    def error_pixel(self, variant: str, threshold: float = 0.7, **options: Any) -> None:
        """An :class:`ErrorPixelModule` on the seed's semantic checkpoint; every variant but ``ours_t0.7`` reuses its error stage."""
        started, regime = time.time(), self.regime
        run = self.folder / variant
        shared = self.folder / OURS / "error" / "final.ckpt"
        if variant != OURS and not (run / "error" / "final.ckpt").is_file():
            (run / "error").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shared, run / "error" / "final.ckpt")  # the runner restores it and skips the stage
        module = self.build_error_pixel(threshold, **options)
        fit(module, self.data, run, **trainer_kwargs(regime.error_steps))
        self.record(variant, evaluate(module, self.test), started)

    def decoder_baseline(self, variant: str) -> None:
        """A GAU-decoder baseline trained from scratch like the semantic branch (same steps, data order, seed)."""
        started, regime = time.time(), self.regime
        seed_everything(self.seed)
        common = {**self.classes, **regime.net(), **regime.optimisation(), "decoder_widths": regime.detail_widths}
        if variant == "layer_cascade":
            module: SegmentationModule = LayerCascadeModule(rho=0.95, **common)
        else:
            module = GAUDecoderModule(hard_fraction=0.2 if variant == "hard_mining" else None, **common)
        fit(module, self.data, self.folder / variant, **trainer_kwargs(regime.semantic_steps))
        self.record(variant, evaluate(module, self.test), started)

    def diagnose(self, variant: str) -> None:
        """Store :func:`diagnose` of a trained error-pixel variant under ``diagnostics`` (skipped when done or untrained)."""
        done = self.results.setdefault("diagnostics", {})
        final = self.folder / variant / "detail" / "final.ckpt"
        if variant in done or not final.is_file():
            return
        options = {"detail_pixels": "all", "fusion": "average"} if variant == "bagging" else {}
        threshold = 0.7 if variant == "bagging" else float(variant.removeprefix("ours_t"))
        module = self.build_error_pixel(threshold, **options)
        module.load_state_dict(read_weights(final, prefix="").state_dict)
        done[variant] = diagnose(module, self.test)
        done[variant]["code"] = code_state()
        save_json(self.results, self.json_path)
        print(f"seed {self.seed} {variant} diagnosed: {done[variant]}", flush=True)

    def run(self, variants: list[str]) -> None:
        """Run the variants not yet in the JSON, the semantic branch and ``ours_t0.7`` first."""
        order = ["semantic", OURS, "bagging", "gau_decoder", "hard_mining", "layer_cascade"]
        order += [f"ours_t{t}" for t in THRESHOLDS if t != 0.7]
        for variant in order:
            if variant not in variants or variant in self.done:
                continue
            if variant == "semantic":
                self.semantic()
            elif variant.startswith("ours_t"):
                self.error_pixel(variant, threshold=float(variant.removeprefix("ours_t")))
            elif variant == "bagging":
                self.error_pixel(variant, detail_pixels="all", fusion="average")
            else:
                self.decoder_baseline(variant)
        for variant in (OURS, "bagging"):
            self.diagnose(variant)


# ---------------------------------------------------------------------------------------------- timing
@torch.no_grad()
def branch_times(module: ErrorPixelModule, size: tuple[int, int], rounds: int) -> list[dict[str, float]]:
    """Seconds per image of the semantic, error and detail branches, measured side by side in each round.

    Each round times the three in a rotating order on the same image (the branches get the
    semantic features they read, computed outside their timing), fp32, eval mode.
    """
    module.eval()
    image = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    features = module.forward_features(image)
    high = module.high_level_features(features)
    probs = torch.nn.functional.interpolate(features.logits, size=size, mode="bilinear").softmax(dim=1)
    skips = [features.encoder[index] for index in module.skip_indices]
    calls = {
        "semantic": lambda: module.forward_features(image),
        "error": lambda: module.error_branch(probs, high, image),
        "detail": lambda: module.detail_branch(high, skips, size),
    }
    for call in calls.values():  # warm-up
        call()
    measured = []
    names = list(calls)
    for round_index in range(rounds):
        times = {}
        for name in names[round_index % 3 :] + names[: round_index % 3]:
            start = time.perf_counter()
            calls[name]()
            times[name] = time.perf_counter() - start
        measured.append(times)
    return measured


def time_branches(args: argparse.Namespace, regime: Regime) -> None:
    """Time the branches of the first seed's trained ``ours_t0.7`` module; write ``timing.json``."""
    runs = SeedRuns(args.seeds[0], regime, args.work, args.results)
    module = runs.build_error_pixel()
    module.load_state_dict(read_weights(runs.folder / OURS / "detail" / "final.ckpt", prefix="").state_dict)
    size = (args.time_height, args.time_width)
    rounds = branch_times(module, size, args.time_rounds)
    timing = {"size": list(size), "seed": runs.seed, "threads": torch.get_num_threads(), "rounds": rounds}
    timing.update(machine=machine(), code=code_state(), command=command_line("bench/errorpix.py"))
    save_json(timing, args.results / "timing.json")


# ---------------------------------------------------------------------------------------------- report
def points(value: float) -> str:
    """An mIoU as points with one decimal, e.g. ``'66.1'``."""
    return f"{100 * value:.1f}"


def mean_std(values: list[float]) -> str:
    """``'66.1 ± 0.8'`` (points, sample std over seeds) or the single value; NaNs (empty denominators) left out."""
    values = [value for value in values if not math.isnan(value)]
    if len(values) < 2:
        return points(values[0]) if values else "-"
    return f"{points(statistics.mean(values))} ± {points(statistics.stdev(values))}"


def paired(runs: dict[str, dict[str, Any]], subject: str, baseline: str, key: str = "mIoU") -> list[float]:
    """Per-seed ``subject - baseline`` in points, over the seeds that have both."""
    return [
        100 * (variants[subject][key] - variants[baseline][key])
        for variants in runs.values()
        if subject in variants and baseline in variants
    ]


def difference_cell(differences: list[float], subject: str, baseline: str) -> tuple[str, str]:
    """The paired difference with its 95% t interval, and the computed sentence (or why there is none)."""
    if len(differences) < 2:
        return "-", f"needs 2 or more paired seeds (has {len(differences)})"
    interval = difference_interval(differences)
    sentence = comparison(interval, subject, baseline, digits=2, unit=" pts")
    return per_seed(interval.format(2, " pts")), per_seed(sentence)


def per_seed(text: str) -> str:
    """An interval's text with its sample named: here the rounds are seeds."""
    return text.replace(" rounds)", " seeds)")


def sweep_rows(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Tab. 1: error-pixel IoU, hard recall, precision and recall of the shared error branch at each t."""
    sweeps = [variants[OURS]["sweep"] for variants in runs.values() if OURS in variants]
    if not sweeps:
        return []
    rows = ["| t | error-pixel IoU (%) | hard recall (%) | precision (%) | recall (%) |", "|---|---|---|---|---|"]
    for index, threshold in enumerate(sweeps[0]["threshold"]):
        cells = [
            mean_std([sweep[key][index] for sweep in sweeps]) for key in ("iou", "hard_recall", "precision", "recall")
        ]
        rows.append(f"| {threshold:g} | " + " | ".join(cells) + " |")
    fraction = [sweep["error_fraction"][0] for sweep in sweeps]
    hard = [sweep["hard_fraction"][0] for sweep in sweeps if "hard_fraction" in sweep]
    rows.append("")
    rows.append(
        f"Erroneous share of the labelled test pixels: {mean_std(fraction)} %"
        + (f"; hard errors (semantic max probability > 0.95) among them: {mean_std(hard)} %." if hard else ".")
    )
    return rows


def curve_rows(runs: dict[str, dict[str, Any]], regime: Regime) -> list[str]:
    """The semantic branch's learning curve (val mIoU by step, mean over seeds) and the computed plateau check."""
    curves = [dict(variants["semantic"]["curve"]) for variants in runs.values() if "semantic" in variants]
    if not curves:
        return []
    steps = sorted(set.intersection(*(set(curve) for curve in curves)))
    rows = ["| step | " + " | ".join(str(step) for step in steps) + " |", "|---|" + "---|" * len(steps)]
    rows.append("| val mIoU | " + " | ".join(mean_std([curve[step] for curve in curves]) for step in steps) + " |")
    late = [step for step in steps if step <= (2 * regime.semantic_steps) // 3]
    if late and len(curves) >= 2:
        start = late[-1]
        gains = [100 * (curve[steps[-1]] - curve[start]) for curve in curves]
        interval = difference_interval(gains)
        verdict = "a plateau" if interval.high <= 1.0 else "not shown to be a plateau"
        rows += [
            "",
            f"Gain over the last third of training (step {start} to {steps[-1]}): {per_seed(interval.format(2, ' pts'))}; "
            f"the whole interval at or below +1 point is called a plateau: **{verdict}**.",
        ]
    return rows


def diagnosis_rows(folder: Path) -> list[str]:
    """Each way to combine the trained branches (:func:`diagnose`), and the paired gaps between them."""
    found = {seed: load_json(folder / f"seed{seed}.json").get("diagnostics", {}) for seed in load_runs(folder)}
    found = {seed: d for seed, d in found.items() if OURS in d and "bagging" in d}
    if not found:
        return []
    rows = ["| prediction | the branches of ours (t = 0.7) | the branches of bagging |", "|---|---|---|"]
    for name, label in DIAGNOSES.items():
        cells = [mean_std([d[variant][name] for d in found.values()]) for variant in (OURS, "bagging")]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    codes = sorted({d[variant].get("code", "not recorded") for d in found.values() for variant in (OURS, "bagging")})
    rows += [
        "",
        f"Diagnosed with code: {'; '.join(codes)}. Paired over {len(found)} seeds (ours' branches unless named):",
        "",
    ]
    pairs = (
        ("true_errors", "predicted_errors", "Eq. 5 with the true error mask", "Eq. 5 with the predicted one"),
        ("average", "predicted_errors", "averaging ours' two branches", "Eq. 5 with the predicted mask"),
        ("detail", "semantic", "ours' detail branch alone", "the semantic branch"),
    )
    for subject, baseline, subject_label, baseline_label in pairs:
        gaps = [100 * (d[OURS][subject] - d[OURS][baseline]) for d in found.values()]
        rows.append(f"- {difference_cell(gaps, subject_label, baseline_label)[1]}.")
    gaps = [100 * (d["bagging"]["detail"] - d[OURS]["detail"]) for d in found.values()]
    rows.append(
        f"- {difference_cell(gaps, 'the detail branch trained on all pixels', 'the one trained on P_ep > t')[1]}."
    )
    return rows


#: The paper's Tab. 3 (Cityscapes val mIoU, %): ours minus each row.
PAPER_GAPS = {"semantic": 1.11, "gau_decoder": 1.01, "layer_cascade": 0.17, "hard_mining": 0.53, "bagging": 0.52}


def claim_verdict(differences: list[float]) -> str:
    """Whether a paper's "ours is higher" claim reproduces: by the paired interval's side of 0."""
    if len(differences) < 2:
        return "not resolved (fewer than 2 seeds)"
    side = difference_interval(differences).side(0.0)
    return {1: "reproduces", -1: "does not reproduce (ours is lower)", 0: "not resolved"}[side]


def reproduction_rows(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Each claim of the paper's Tables 1-3 with the verdict computed from this run's numbers."""
    rows = ["| the paper's claim | here | verdict |", "|---|---|---|"]
    labels = dict(TABLE3)
    for variant, gap in PAPER_GAPS.items():
        differences = paired(runs, OURS, variant)
        here = per_seed(difference_interval(differences).format(2, " pts")) if len(differences) >= 2 else "-"
        rows.append(f"| ours above {labels[variant]} (+{gap} pts) | {here} | **{claim_verdict(differences)}** |")
    means = {
        t: statistics.mean(v[f"ours_t{t}"]["mIoU"] for v in runs.values() if f"ours_t{t}" in v) for t in THRESHOLDS
    }
    best = max(means, key=means.get)
    against = paired(runs, "ours_t0.7", f"ours_t{best}") if best != 0.7 else []
    verdict = (
        "reproduces"
        if best == 0.7
        else f"best mean at t = {best}; "
        + {
            "reproduces": "0.7 is higher",
            "does not reproduce (ours is lower)": f"0.7 is lower than {best}",
        }.get(claim_verdict(against), "0.7 against it: not resolved")
    )
    rows.append(
        f"| Tab. 2: t = 0.7 gives the best fused mIoU | means {', '.join(f'{t}: {points(m)}' for t, m in means.items())} | **{verdict}** |"
    )
    sweeps = [v[OURS]["sweep"] for v in runs.values() if OURS in v]
    if sweeps:
        count = len(sweeps[0]["threshold"])
        iou = [statistics.mean(s["iou"][i] for s in sweeps) for i in range(count)]
        hard = [statistics.mean(s["hard_recall"][i] for s in sweeps) for i in range(count)]
        rises = all(b >= a for a, b in zip(iou[:3], iou[1:3], strict=False))
        falls = all(b <= a for a, b in zip(hard, hard[1:], strict=False))
        shape = "reproduces" if rises and falls else "does not reproduce"
        trend = f"IoU {' → '.join(points(v) for v in iou)}; hard recall {' → '.join(points(v) for v in hard)}"
        rows.append(
            f"| Tab. 1: error IoU rises with t up to 0.7 while hard recall falls | {trend} | **{shape}** (means) |"
        )
    return rows


def timing_rows(timing: dict[str, Any] | None) -> list[str]:
    """Each branch's time per image and its ratio to the semantic branch, with 95% intervals over rounds."""
    if not timing:
        return []
    rounds = timing["rounds"]
    semantic = statistics.median(r["semantic"] for r in rounds)
    rows = [
        f"One {timing['size'][0]}x{timing['size'][1]} image, fp32, eval mode, {timing['threads']} threads, "
        f"{len(rounds)} rounds, the branches' order rotating each round (seed {timing['seed']}'s trained module).",
        "",
        "| branch | median time (ms) | ratio to the semantic branch | paper (0.38 s DeepLabV3+) |",
        "|---|---|---|---|",
        f"| semantic (DeepLabV3+) | {1000 * semantic:.1f} | 1 | 0.38 s |",
    ]
    for name, paper in (("error", 0.05), ("detail", 0.28)):
        interval = ratio_interval([r[name] / r["semantic"] for r in rounds])
        median = statistics.median(r[name] for r in rounds)
        rows.append(f"| {name} branch | {1000 * median:.1f} | {interval.format(3)} | {paper} s ({paper / 0.38:.2f}) |")
    return rows


def parent(command: str | None) -> str:
    """The command as the user gave it: a child's command without the options its parent added."""
    words = strip_option((command or "").split(), ("--seeds", "--jobs", "--no-report", "--threads"))
    return " ".join(words)


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def write_report(args: argparse.Namespace, regime: Regime) -> None:
    """Write ``docs/results/errorpix.md`` from the per-seed JSON files and ``timing.json``."""
    runs = load_runs(args.results)
    seeds = sorted(runs, key=int)
    files = [load_json(args.results / f"seed{seed}.json") for seed in seeds]
    provenance = sorted(
        {f"{f.get('machine')}; code: {f.get('code')}; command: `{parent(f.get('command'))}`" for f in files}
    )
    lines = [
        "# Erroneous-pixel prediction: the paper's Tables 1-3 on the synthetic scenes",
        "",
        f"Generated by `bench/errorpix.py` from `{shown(args.results)}/` (see the script's docstring for "
        "every run; `python bench/errorpix.py --report-only` rewrites this page).  ",
        *[f"Runs made on: {line}  " for line in provenance],
        f"Seeds: {', '.join(seeds)} (each initialises every net and orders every variant's batches alike; "
        "the images are the same for every seed).  ",
        f"Regime: {json.dumps(asdict(regime))}.  ",
        f"Scores: mIoU on {regime.test_images} held-out synthetic test images (another data seed), "
        "mean ± sample std over seeds, in points; differences are paired by seed with a 95% t interval.",
        "",
        "## The semantic branch's learning curve",
        "",
        *curve_rows(runs, regime),
        "",
        "## Tab. 1: error prediction at each threshold t (the error branch of `ours_t0.7`)",
        "",
        *sweep_rows(runs),
        "",
        "## Tab. 2: the threshold t of the detail branch's pixels and of the fusion",
        "",
        "| t | fused mIoU | semantic mIoU (same images) | fused - semantic (paired) |",
        "|---|---|---|---|",
    ]
    for threshold in THRESHOLDS:
        variant = f"ours_t{threshold}"
        fused = [v[variant]["mIoU"] for v in runs.values() if variant in v]
        semantic = [v[variant]["semantic_mIoU"] for v in runs.values() if variant in v]
        gain, _ = difference_cell(paired(runs, variant, "semantic"), variant, "semantic")
        lines.append(f"| {threshold:g} | {mean_std(fused)} | {mean_std(semantic)} | {gain} |")
    lines += ["", "## Tab. 3: against the baselines", ""]
    lines += ["| method | mIoU | ours - method (paired) |", "|---|---|---|"]
    sentences = []
    for variant, label in TABLE3:
        values = [v[variant]["mIoU"] for v in runs.values() if variant in v]
        cell, sentence = ("", "") if variant == OURS else difference_cell(paired(runs, OURS, variant), "ours", label)
        lines.append(f"| {label} | {mean_std(values)} | {cell or '-'} |")
        if sentence:
            sentences.append(f"- {sentence}.")
    lines += ["", "Computed from the intervals above:", "", *sentences]
    lines += ["", "## What reproduces (verdicts computed from the tables above)", "", *reproduction_rows(runs)]
    lines += ["", "## Where the differences come from", "", *diagnosis_rows(args.results)]
    lines += ["", "## Inference time of the branches", "", *timing_rows(load_json(args.results / "timing.json")), ""]
    lines += ["Seconds per run (training and evaluation, mean over seeds):", ""]
    variants = sorted({name for v in runs.values() for name in v})
    lines += [
        f"- {name}: {statistics.mean(v[name]['seconds'] for v in runs.values() if name in v):.0f} s"
        for name in variants
    ]
    REPORT.write_text("\n".join(lines) + "\n")
    print(f"wrote {REPORT}")


def run_in_parallel(args: argparse.Namespace, argv: list[str]) -> None:
    """Split the seeds over ``--jobs`` child processes of this script, one thread each, and wait for them."""
    train_data(args.regime).prepare_data()  # generate the cached images once, before the children read them
    test_data(args.regime).prepare_data()
    groups = [args.seeds[job :: args.jobs] for job in range(args.jobs)]
    children = []
    for group in filter(None, groups):
        command = [sys.executable, __file__, *strip_option(argv, ("--jobs", "--seeds")), "--jobs", "1", "--no-report"]
        command += ["--threads", "1", "--seeds", *map(str, group)]
        children.append(subprocess.Popen(command))
    codes = [child.wait() for child in children]
    if any(codes):
        raise SystemExit(f"a child run failed (exit codes {codes}); re-run the same command to resume.")


def strip_option(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``argv`` without the given options and their values."""
    kept, skipping = [], False
    for arg in argv:
        if arg.startswith("--"):
            skipping = arg in options
        if not skipping:
            kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> int:
    """Run the missing runs of every seed, time the branches, write the report."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(6)))
    variants = [name for name, _ in TABLE3] + [f"ours_t{t}" for t in THRESHOLDS if t != 0.7]
    parser.add_argument("--variants", nargs="+", default=variants)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench_errorpix", help="run folders")
    parser.add_argument("--results", type=Path, default=RUNS, help="folder of the per-seed JSON files")
    parser.add_argument("--jobs", type=int, default=2, help="processes training seeds side by side (1 thread each)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of this process")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--time-rounds", type=int, default=15)
    parser.add_argument("--time-height", type=int, default=256)
    parser.add_argument("--time-width", type=int, default=512)
    for name, value in asdict(Regime()).items():
        if isinstance(value, int):
            parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value)
    args = parser.parse_args(argv)
    args.results = args.results.resolve()
    args.regime = regime = Regime(**{k: getattr(args, k) for k in asdict(Regime()) if hasattr(args, k)})
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.report_only:
        if args.jobs > 1:
            run_in_parallel(args, argv)
        else:
            for seed in args.seeds:
                SeedRuns(seed, regime, args.work, args.results).run(args.variants)
        if not args.no_report:
            time_branches(args, regime)
    if not args.no_report:
        write_report(args, regime)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
