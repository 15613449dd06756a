"""Self-correcting networks (Ibrahim et al.) in the benchmark regime: the shape of the paper's Tables 1 and 2.

    .venv/bin/python bench/selfcorr.py --seeds 0 1 2 --fulls 10 20 --threads 1   # every variant; resumable
    .venv/bin/python bench/selfcorr.py --seeds 0 --fulls 10 --variants none conv    # some of them
    .venv/bin/python bench/selfcorr.py --report-only                                # docs/results/selfcorr.md

Every run trains in the regime of ``bench/regime.py`` (its ``CHOSEN`` candidate: images, net, AdamW
with poly decay, steps, precision) through the real modules and stage runner, and is scored by the
final val metrics of the primary model on the fine val masks (no checkpoint selection). Per size of
F (``--fulls``, the regime's ``num_full`` replaced) and seed, the variants are:

* ``fullsup``: a plain ``SegmentationModule`` on F + W with W's masks (``full+weak_masks``), ``regime.fit``;
* ``ancillary_full``: an ``AncillaryModule`` trained on **all of F** (the paper's Eq. 1), one stage of
  ``segmend.runs.run_stages``; its val metrics use the val images' boxes;
* ``none`` / ``linear``: ``SelfCorrectionModule`` through ``run_self_correction``, given that
  ancillary as ``ancillary_checkpoint`` (so the runner's own half-of-F ancillary stage is skipped):
  one stage, the primary on F + W;
* ``conv``: ``run_self_correction`` with no checkpoint: the runner's three stages, the ancillary on
  **half of F** (``half_full``), the primary + conv self-correction net on F, then F + W, as in the
  paper's Sec. 3.4; ``ancillary_half`` is that stage-1 ancillary, scored like ``ancillary_full``;
* ``f_only``: the primary after conv's stage 2 (see :func:`f_only` for why that is CE on F alone);
* ``em_fixed``: the EM-fixed baseline of the paper's Table 2 (no ancillary model), one stage on F + W.

Every stage trains for the regime's ``steps``. Every variant of a seed shares the F draw (the
DataModule's ``split_seed``), the loaders' order (seeded from ``seed_everything``'s seed, one
stream per loader: F+W batches of ``fullsup`` and of the main stages are the same samples) and the
initial primary weights (``seed_everything(seed)`` right before a module is built; the primary net
is the first thing every module draws). The seed's results go to
``docs/results/selfcorr_runs/seed<k>.json`` (``bench/harness.py``) as each variant ends; the stage
runner's checkpoints (``runs/bench_selfcorr/<regime>/seed<k>/F<f>/<variant>/<stage>/``) let a
killed multi-stage run resume at its unfinished stage. ``bench/selfcorr_report.py`` renders the
report from the JSON only.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from harness import SeedResults, load_json, save_json, sweep
from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything
from regime import CANDIDATES, CHOSEN, Curve, Regime, fit

from segmend.checkpoints import read_weights
from segmend.datamodules import SemiSupervisedSyntheticDataModule
from segmend.modules import AncillaryModule, SelfCorrectionModule
from segmend.modules.stages import self_correction_stages
from segmend.runs import ResumePolicy, RunResult, Stage, StageResult, run_stages

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "docs" / "results" / "selfcorr_runs"
REPORT = REPO / "docs" / "results" / "selfcorr.md"
WORK = REPO / "runs" / "bench_selfcorr"
COMMAND = ".venv/bin/python bench/selfcorr.py"

REGIME = CANDIDATES[CHOSEN]
THREADS = [REGIME.threads]  # torch threads of a run (``--threads``); recorded with each run, not part of the regime
RESUME = ResumePolicy(interval=60.0)  # a kill loses at most a minute of a stage's training
# In the order a (seed, F) runs them.
VARIANTS = ("fullsup", "ancillary_full", "none", "linear", "ancillary_half", "f_only", "conv", "em_fixed")
# Which ancillary each self-correction trains with (the paper: all of F for none / linear, Eq. 1 and
# Sec. 3.2-3.3; half of F for conv, Sec. 3.4 step 1); em_fixed has no ancillary model.
ANCILLARY = {"none": "ancillary_full", "linear": "ancillary_full", "conv": "ancillary_half", "em_fixed": None}
ANCILLARY_TRAIN_SET = {"ancillary_full": "full", "ancillary_half": "half_full"}


def settings() -> dict[str, Any]:
    """What every seed file shares: the regime's settings that decide a result (all but the threads) and the plan."""
    return {
        "regime": {k: v for k, v in dataclasses.asdict(REGIME).items() if k != "threads"},
        "steps_per_stage": REGIME.steps,
        "ancillary": {k: ANCILLARY_TRAIN_SET[v] if v else None for k, v in ANCILLARY.items()},
    }


def run_key(variant: str, num_full: int) -> str:
    """A variant's name in its seed's file, e.g. ``'conv@F40'``."""
    return f"{variant}@F{num_full}"


def default_fulls() -> tuple[int, ...]:
    """The sizes of F: the regime's first (Table 2), then twice it (Table 1's shape).

    Half the regime's F is left out: conv trains its ancillary on half of F, and at F = 10 that would
    be 2 images.
    """
    return (REGIME.num_full, 2 * REGIME.num_full)


# ------------------------------------------------------------------------------------------- one (seed, F)
@dataclasses.dataclass(frozen=True)
class Cell:
    """One seed and size of F: its regime, data and run folder."""

    seed: int
    num_full: int

    @property
    def regime(self) -> Regime:
        """The regime with this F and the threads of this process."""
        return dataclasses.replace(REGIME, num_full=self.num_full, threads=THREADS[0])

    @property
    def root(self) -> Path:
        """The stage runner's folder of this cell (one per regime, so another regime never resumes these)."""
        tag = hashlib.sha1(json.dumps(settings(), sort_keys=True).encode()).hexdigest()[:10]
        return WORK / tag / f"seed{self.seed}" / f"F{self.num_full}"

    def data(self, variant: str = "fullsup") -> SemiSupervisedSyntheticDataModule:
        """The seed's DataModule (F drawn with the seed); the stages switch its training set."""
        data = self.regime.data(variant, self.seed)
        data.prepare_data()
        return data


class StageRecord(Curve):
    """The regime's val-mIoU curve of one stage, plus its time and training set, kept across a kill.

    ``<stage>/record.json`` is rewritten after every validation and when the fit ends, so it
    outlives the process that trained the stage. A resumed stage (its ``last.ckpt`` carries this
    callback's seconds) takes back the points up to the step it resumes at; later ones are measured again.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.seconds_before = 0.0
        self.started = time.perf_counter()
        self.load_before = os.getloadavg()[0]
        self.resumed = False

    def elapsed(self) -> float:
        """Seconds of training of this stage, over every process that trained it."""
        return self.seconds_before + time.perf_counter() - self.started

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self.started = time.perf_counter()
        self.load_before = os.getloadavg()[0]

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        if self.resumed:  # the checkpoint's step is restored by now
            before = load_json(self.path).get("curve", [])
            self.points = [(int(step), float(miou)) for step, miou in before if step <= trainer.global_step]

    def on_validation_end(self, trainer: Trainer, pl_module: Any) -> None:  # noqa: D102
        super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking:
            self.write(trainer)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self.write(trainer)

    def write(self, trainer: Trainer) -> None:
        """Write what the stage measured so far."""
        data = trainer.datamodule
        record = {
            "curve": self.points,
            "seconds": round(self.elapsed(), 1),
            "steps": int(trainer.global_step),
            "load_average": [self.load_before, os.getloadavg()[0]],
            "resumed": self.resumed,
            "train_set": data.train_set,
            "train_images": train_images(data),
        }
        save_json(record, self.path)

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {"seconds": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        self.seconds_before = float(state_dict.get("seconds", 0.0))
        self.resumed = True


def train_images(data: SemiSupervisedSyntheticDataModule) -> int:
    """How many training images the DataModule's current training set has (F + W for the mixed sets)."""
    split = data.semisup_split()
    sizes = {"full": len(split.full), "half_full": len(split.half_full)}
    return sizes.get(data.train_set, len(split.full) + len(split.weak))


def trainer_factory(regime: Regime, root: Path) -> Callable[..., Trainer]:
    """New Trainers for the stage runner, set as ``regime.fit``'s (steps, validation, precision), one record each."""

    def factory(stage: str, **overrides: Any) -> Trainer:
        kwargs = {  # no checkpointing of its own: the stage runner adds its ResumeCheckpoint
            **regime.trainer_kwargs(),
            "callbacks": [StageRecord(root / stage / "record.json")],
            "default_root_dir": str(root / stage),
        }
        return Trainer(**{**kwargs, **overrides})

    return factory


def evaluate(regime: Regime, module: LightningModule, data: LightningDataModule) -> dict[str, float]:
    """The val metrics of ``module`` (mIoU, aAcc, mAcc, per-class IoU, loss) in the regime's precision."""
    evaluator = Trainer(
        accelerator="cpu",
        devices=1,
        precision=regime.precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(WORK / "evaluate"),
    )
    scores = evaluator.validate(module, datamodule=data, verbose=False)[0]
    return {k.split("/", 1)[1]: float(v) for k, v in scores.items() if k.startswith("val/")}


def stage_records(root: Path, names: list[str]) -> dict[str, Any]:
    """The ``record.json`` of each stage (an empty record for a stage whose record was lost)."""
    return {name: load_json(root / name / "record.json") or {"curve": [], "seconds": None} for name in names}


def summary(regime: Regime, metrics: dict[str, float], stages: dict[str, Any]) -> dict[str, Any]:
    """A variant's result: final val metrics, its last stage's curve, total seconds and steps, every stage."""
    last = stages[list(stages)[-1]]
    seconds = [s["seconds"] for s in stages.values()]
    return {
        **metrics,
        "stage_order": list(stages),  # the file's keys are sorted
        "curve": last["curve"],
        "steps": sum(s.get("steps", regime.steps) for s in stages.values()),
        "seconds": None if None in seconds else round(sum(seconds), 1),
        "threads": regime.threads,
        "stages": stages,
    }


def run(stages: list[Stage], data: LightningDataModule, cell: Cell, name: str) -> RunResult:
    """Run (or resume, or skip when done) ``stages`` in the cell's folder ``name``.

    Raises:
        RuntimeError: If a stage was interrupted (its checkpoint is kept; re-running resumes it).

    """
    torch.set_num_threads(cell.regime.threads)
    root = cell.root / name
    result = run_stages(stages, data, root, trainer_factory(cell.regime, root), policy=RESUME)
    if not result.completed:
        raise RuntimeError(f"{name} of seed {cell.seed}, F = {cell.num_full} was interrupted; re-run to resume it.")
    return result


def trained(result: StageResult) -> LightningModule:
    """The stage's module holding its trained weights (loaded from ``final.ckpt`` for a stage done before)."""
    if result.status == "skipped":
        result.module.load_state_dict(read_weights(result.final_checkpoint, prefix="").state_dict)
    return result.module


# ------------------------------------------------------------------------------------------- the variants
def fullsup(cell: Cell) -> dict[str, Any]:
    """A plain ``SegmentationModule`` on F + W with W's masks (``regime.fit``: one fit, nothing to resume)."""
    regime, data = cell.regime, cell.data("fullsup")
    seed_everything(cell.seed, workers=True)
    outcome = fit(regime, regime.model(data.num_classes), data)
    record = {"curve": outcome.curve, "seconds": round(outcome.seconds, 1), "steps": outcome.steps}
    record |= {"load_average": list(outcome.load_average), "train_set": data.train_set}
    record["train_images"] = train_images(data)
    return summary(regime, outcome.metrics, {"fit": record})


def ancillary_full_stage(cell: Cell, data: SemiSupervisedSyntheticDataModule) -> StageResult:
    """The ancillary model trained on all of F: one stage ``ancillary`` of the runner, on training set ``full``.

    The stage runner would train the same ancillary for none and for linear (on all of F; half
    of F only for conv); trained once here and given to both as a ready ``ancillary_checkpoint``,
    it is shared, and their runs skip that stage.
    """
    seed_everything(cell.seed, workers=True)
    module = cell.regime.model(data.num_classes, AncillaryModule)
    stage = Stage("ancillary", module, lambda dm: dm.use_train_set(ANCILLARY_TRAIN_SET["ancillary_full"]))
    return run([stage], data, cell, "ancillary_full").stages[0]


def ancillary_full(cell: Cell) -> dict[str, Any]:
    """``ancillary_full``: its val metrics with the val images' boxes."""
    data = cell.data()
    result = ancillary_full_stage(cell, data)
    stages = stage_records(cell.root / "ancillary_full", ["ancillary"])
    return summary(cell.regime, evaluate(cell.regime, trained(result), data), stages)


def self_correction(cell: Cell, correction: str) -> tuple[SelfCorrectionModule, SemiSupervisedSyntheticDataModule]:
    """The primary model of ``correction`` with its ancillary (see ``ANCILLARY``), and the cell's data.

    none / linear get the checkpoint of ``ancillary_full`` (trained first if it is not done), so
    the runner plans only their main stage; conv gets none, so the runner trains its ancillary on
    half of F (``half_full``) as its stage 1.
    """
    data = cell.data()
    checkpoint = None
    if ANCILLARY[correction] == "ancillary_full":
        checkpoint = str(ancillary_full_stage(cell, data).final_checkpoint)
    seed_everything(cell.seed, workers=True)  # after the ancillary's training: the same primary as every variant
    options = {"correction": correction, "ancillary_checkpoint": checkpoint}
    return cell.regime.model(data.num_classes, SelfCorrectionModule, **options), data


def corrected(cell: Cell, correction: str) -> dict[str, Any]:
    """``none``, ``linear``, ``conv`` or ``em_fixed``: every stage the runner plans, then the primary's val metrics."""
    module, data = self_correction(cell, correction)
    stages = list(self_correction_stages(module, data))
    run(stages, data, cell, correction)
    records = stage_records(cell.root / correction, [stage.name for stage in stages])
    given = module.hparams.ancillary_checkpoint
    result = summary(cell.regime, evaluate(cell.regime, module, data), records)
    return {**result, "ancillary_checkpoint": str(Path(given).relative_to(cell.root)) if given else None}


def conv_stages(cell: Cell, last: str) -> dict[str, StageResult]:
    """conv's stages up to ``last`` (``"ancillary"`` or ``"pretrain"``), trained or found done, by name."""
    module, data = self_correction(cell, "conv")
    stages = list(self_correction_stages(module, data))
    names = [stage.name for stage in stages]
    done = run(stages[: names.index(last) + 1], data, cell, "conv")
    return {result.name: result for result in done.stages}


def ancillary_half(cell: Cell) -> dict[str, Any]:
    """``ancillary_half``: conv's stage 1 (the ancillary on half of F), scored with the val boxes."""
    result = conv_stages(cell, "ancillary")["ancillary"]
    data = cell.data()
    stages = stage_records(cell.root / "conv", ["ancillary"])
    return summary(cell.regime, evaluate(cell.regime, trained(result), data), stages)


def f_only(cell: Cell) -> dict[str, Any]:
    """``f_only``: the primary after conv's stage 2, which is cross-entropy on F alone for the regime's steps.

    Why that is the F-only baseline and not a second, equal run: stage 2 trains on training set
    ``full`` (F only) from the same initial primary weights as every variant (the primary net is
    the first thing a module draws after ``seed_everything``) and in the same order of F samples
    (the ``train`` loader stream, seeded only from the seed), and the primary's gradient there is
    that of the F cross-entropy alone: the conv self-correction net reads *detached* primary logits
    (``ConvSelfCorrection.forward``), so its loss term reaches only its own weights; AdamW updates
    each parameter from its own gradient, and the regime clips nothing. A plain
    ``SegmentationModule`` fitted on F with ``regime.fit`` takes the same steps, up to the order of
    float sums (mean vs sum / count; checked in tests/test_bench_selfcorr.py). Reusing it saves one
    of the nine fits of a (seed, F).
    """
    result = conv_stages(cell, "pretrain")["pretrain"]
    data, regime = cell.data("f_only"), cell.regime
    primary = regime.model(data.num_classes)  # a plain module holding stage 2's primary net
    primary.net.load_state_dict(trained(result).net.state_dict())
    stages = stage_records(cell.root / "conv", ["pretrain"])
    return summary(regime, evaluate(regime, primary, data), stages)


RUNNERS: dict[str, Callable[[Cell], dict[str, Any]]] = {
    "fullsup": fullsup,
    "ancillary_full": ancillary_full,
    "none": lambda cell: corrected(cell, "none"),
    "linear": lambda cell: corrected(cell, "linear"),
    "ancillary_half": ancillary_half,
    "f_only": f_only,
    "conv": lambda cell: corrected(cell, "conv"),
    "em_fixed": lambda cell: corrected(cell, "em_fixed"),
}


# ------------------------------------------------------------------------------------------- the sweep
def seed_file(seed: int) -> SeedResults:
    """The seed's results file (refused when it holds another regime's runs)."""
    return SeedResults(RUNS / f"seed{seed}.json", settings(), "bench/selfcorr.py", seed)


def plan(seed: int, num_full: int, variants: list[str]) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """``(key, run)`` of the chosen variants of one seed and F, in ``VARIANTS`` order."""
    cell = Cell(seed, num_full)
    return [(run_key(v, num_full), lambda v=v: RUNNERS[v](cell)) for v in VARIANTS if v in variants]


def run_sweep(seeds: list[int], fulls: list[int], variants: list[str]) -> None:
    """Every chosen variant for each F (in the order given) and seed; finished variants are skipped."""
    for num_full, seed in itertools.product(fulls, seeds):
        sweep(seed_file(seed), plan(seed, num_full, variants))


def check_fulls(fulls: list[int]) -> None:
    """Refuse sizes of F the data cannot split (half of F needs an image; W needs one).

    Raises:
        ValueError: Naming the size and the allowed range.

    """
    bad = [f for f in fulls if not 2 <= f < REGIME.num_train]
    if bad:
        raise ValueError(
            f"--fulls {bad}: F must be at least 2 (half of F trains conv's ancillary) and below the "
            f"{REGIME.num_train} training images of the regime (W needs at least one)."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fulls", type=int, nargs="+", default=list(default_fulls()), help="sizes of F, in order")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--threads", type=int, help="torch threads per run (default: the regime's)")
    parser.add_argument("--report-only", action="store_true", help="only render docs/results/selfcorr.md")
    args = parser.parse_args()
    THREADS[0] = args.threads or REGIME.threads
    if not args.report_only:
        try:
            check_fulls(args.fulls)
        except ValueError as error:
            parser.error(str(error))
        run_sweep(args.seeds, args.fulls, args.variants)
    from selfcorr_report import write_report  # the report reads only the JSON files

    write_report()


if __name__ == "__main__":
    main()
