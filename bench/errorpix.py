"""Erroneous-pixel prediction on the synthetic scenes: the paper's Tables 1-3 shaped, paired by seed.

    python bench/errorpix.py                    # every run (resumable: a re-run skips finished runs) + report
    python bench/errorpix.py --report-only      # rewrite docs/results/errorpix.md from docs/results/errorpix_runs/
    python bench/errorpix.py --seeds 0 1 2 --semantic-steps 1500
    python bench/errorpix.py --doubled --seeds 0 1 2   # the semantic branch at twice the steps (convergence check)

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

``--doubled`` trains only ``semantic``, at twice ``--semantic-steps``, into ``<results>_doubled`` and
``<work>_doubled``; the report pairs it by seed with the results' own ``semantic`` (the check that
more steps would not raise the semantic branch by 2 points or more, as for the regime).

Every score is measured on a held-out test set of ``--test-images`` synthetic images generated
with another data seed; nothing is tuned on it (all settings are the paper's). Each run's result
is written to the JSON as soon as it ends.

Inference time: the semantic branch, the error branch and the detail branch of one seed's trained
module on the same images, interleaved over rounds in this process; the branches' times relative
to the semantic branch's (the paper: 0.05 s and 0.28 s against DeepLabV3+'s 0.38 s).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from segmend.checkpoints import read_weights
from segmend.datamodules import SyntheticDataModule
from segmend.metrics import segmentation_metrics
from segmend.metrics.error_pixel import ErrorThresholdSweep
from segmend.modules import ErrorPixelModule, GAUDecoderModule, LayerCascadeModule, SegmentationModule
from segmend.optim import PolyLR
from segmend.precision import auto_precision
from segmend.runs import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from errorpix_report import (  # noqa: E402
    DIAGNOSES,
    OURS,
    REPO,
    RUNS,
    TABLE3,
    THRESHOLDS,
    doubled_folder,
    strip_option,
    write_report,
)
from harness import SeedResults, save_json  # noqa: E402
from provenance import check_checkout, code_state, command_line, machine  # noqa: E402


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
    scale_range: tuple[float, float] = (0.75, 1.25)  # training random rescale; (1, 1) with --no-rescale

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
        scale_range=regime.scale_range,
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


class SeedRuns:
    """Every variant of one seed, trained in ``<work>/seed<seed>/<variant>`` and evaluated on the test set."""

    def __init__(self, seed: int, regime: Regime, work: Path, results: Path) -> None:
        self.seed, self.regime, self.folder = seed, regime, work / f"seed{seed}"
        self.results = SeedResults(results / f"seed{seed}.json", asdict(regime), "bench/errorpix.py", seed)
        self.data, self.test = train_data(regime), test_data(regime)
        self.classes = {"num_classes": self.data.num_classes, "class_names": self.data.class_names}

    @property
    def done(self) -> dict[str, Any]:
        """This seed's finished variants."""
        return self.results.variants

    def record(self, variant: str, result: dict[str, Any], started: float) -> None:
        """Store a variant's result (with its wall time) and write the JSON."""
        result["seconds"] = round(time.time() - started, 1)
        self.results.record(variant, result)
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
        done = self.results.data.setdefault("diagnostics", {})
        final = self.folder / variant / "detail" / "final.ckpt"
        if variant in done or not final.is_file():
            return
        options = {"detail_pixels": "all", "fusion": "average"} if variant == "bagging" else {}
        threshold = 0.7 if variant == "bagging" else float(variant.removeprefix("ours_t"))
        module = self.build_error_pixel(threshold, **options)
        module.load_state_dict(read_weights(final, prefix="").state_dict)
        done[variant] = diagnose(module, self.test)
        done[variant]["code"] = code_state()
        self.results.save()
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


def main(argv: list[str] | None = None) -> int:
    """Run the missing runs of every seed, time the branches, write the report."""
    check_checkout()
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
    parser.add_argument("--no-rescale", action="store_true", help="train without the random rescale augmentation")
    parser.add_argument(
        "--doubled", action="store_true", help="only the semantic branch, at twice the steps, into <results>_doubled"
    )
    args = parser.parse_args(argv)
    args.results = args.results.resolve()
    settings = {k: getattr(args, k) for k in asdict(Regime()) if hasattr(args, k)}
    if args.no_rescale:
        settings["scale_range"] = (1.0, 1.0)
    if args.doubled:
        settings["semantic_steps"] *= 2
        args.variants, args.no_report = ["semantic"], True
        args.results, args.work = doubled_folder(args.results), doubled_folder(args.work)
    args.regime = regime = Regime(**settings)
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
