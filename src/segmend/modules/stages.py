"""The three training stages of self-correcting networks, as one resumable run.

:func:`run_self_correction` is pure orchestration: it builds nothing but a checkpoint callback and
calls ``trainer.fit`` once per stage, each on a **new** Trainer obtained from a factory (a second
``fit`` on one Trainer trains nothing once ``max_epochs`` is reached). ``segmend fit`` /
``lightning fit`` call it when the model is a :class:`SelfCorrectionModule`; from Python, pass a
factory building your own Trainers::

    from lightning.pytorch import Trainer
    from segmend.modules.stages import run_self_correction

    run_self_correction(
        model,
        datamodule,
        run_dir="runs/selfcorr",
        trainer_factory=lambda stage: Trainer(max_epochs=30, default_root_dir=f"runs/selfcorr/{stage}"),
    )

Stages (Sec. 3.4 of the paper), each with its training set served by
``datamodule.use_train_set(...)``:

1. ``ancillary`` (``half_full``): an :class:`AncillaryModule` on half of F. Skipped when the model
   was given ``ancillary_checkpoint`` and for ``correction="em_fixed"`` (no ancillary model).
2. ``pretrain`` (``full``), ``conv`` only: the primary model and the conv self-correction net on F
   (first and last terms of Eq. 6).
3. ``main`` (``full+weak``): the primary model on F + W with the configured correction (for ``conv``
   it fine-tunes the stage-2 model).

Run directory layout: ``<run_dir>/<stage>/checkpoints/last.ckpt`` (written at the end of a
training epoch, at most every ``checkpoint_interval`` seconds, so a killed stage resumes from it)
and ``<run_dir>/<stage>/final.ckpt`` (written atomically when the stage's fit ends normally; its
presence marks the stage as done). A re-run skips finished stages (loading what later stages need
from their ``final.ckpt``) and resumes the first unfinished one from its ``last.ckpt``. Runs with
``fast_dev_run`` mark nothing as done. A stage stopped by an exception or Ctrl-C (Lightning 2.6
exits the process) is never marked done; a Trainer that reports ``interrupted`` after ``fit``
returns stops the run the same way.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from segmend.modules.selfcorr import SelfCorrectionModule

TRAIN_SETS = {"ancillary": "half_full", "pretrain": "full", "main": "full+weak"}
TrainerFactory = Callable[[str], Trainer]


class StageCheckpoint(ModelCheckpoint):
    """``last.ckpt`` of one stage in a fixed folder, with a state key of its own.

    Written at the end of a training epoch, but at most once per ``min_interval`` seconds (the first
    epoch always saves): short epochs (half of F is small) would otherwise write the whole model
    and optimizer state every few steps. A killed stage loses at most ``min_interval`` of training.

    Args:
        stage: Stage name (part of the state key, so it never clashes with a user's ModelCheckpoint).
        dirpath: Folder of ``last.ckpt``.
        min_interval: Seconds between two saves.

    """

    def __init__(self, stage: str, dirpath: str | Path, min_interval: float = 300.0) -> None:
        # the latest checkpoint (monitor None, top-1) named "last" without version suffixes, so a
        # re-run finds it under the same name
        super().__init__(
            dirpath=str(dirpath),
            filename="last",
            monitor=None,
            save_top_k=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )
        self.stage = stage
        self.min_interval = min_interval
        self._last_save: float | None = None

    @property
    def state_key(self) -> str:  # noqa: D102
        return f"StageCheckpoint[{self.stage}]"

    def _save_topk_checkpoint(self, trainer: Trainer, monitor_candidates: dict[str, Any]) -> None:
        now = time.monotonic()
        if self._last_save is not None and now - self._last_save < self.min_interval:
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        self._last_save = now


@dataclass
class StageResult:
    """What happened to one stage: ``"trained"``, ``"skipped"`` (already done) or ``"interrupted"``."""

    name: str
    status: str
    final_checkpoint: Path | None = None
    resumed_from: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class SelfCorrectionRun:
    """Results of :func:`run_self_correction`: one entry per stage, and the last Trainer used."""

    stages: list[StageResult]
    trainer: Trainer | None

    @property
    def completed(self) -> bool:
        """Whether every stage is done."""
        return all(stage.status != "interrupted" for stage in self.stages)


def plan_stages(model: SelfCorrectionModule) -> tuple[str, ...]:
    """The stages ``model`` needs, in order."""
    stages = []
    if model.needs_ancillary and model.hparams.ancillary_checkpoint is None:
        stages.append("ancillary")
    if model.is_conv:
        stages.append("pretrain")
    stages.append("main")
    return tuple(stages)


def default_trainer_factory(run_dir: str | Path, **trainer_kwargs: Any) -> TrainerFactory:
    """A factory of Trainers writing to ``<run_dir>/<stage>``, logging to a CSV logger named after the stage.

    Lightning's default ModelCheckpoint is off (each stage gets the runner's :class:`StageCheckpoint`).
    """
    from lightning.pytorch.loggers import CSVLogger

    def factory(stage: str) -> Trainer:
        kwargs = dict(trainer_kwargs)
        kwargs.setdefault("logger", CSVLogger(str(run_dir), name=stage))
        kwargs.setdefault("enable_checkpointing", False)  # the runner adds a StageCheckpoint
        return Trainer(default_root_dir=str(Path(run_dir) / stage), **kwargs)

    return factory


def _check_datamodule(datamodule: LightningDataModule | None) -> None:
    if datamodule is None or not callable(getattr(datamodule, "use_train_set", None)):
        name = type(datamodule).__name__ if datamodule is not None else "no DataModule"
        raise ValueError(
            f"Self-correction training switches the training set between stages with "
            f"datamodule.use_train_set(...), which {name} does not have. Use a semi-supervised "
            "DataModule (SemiSupervisedSyntheticDataModule, SemiSupervisedVOCDataModule, "
            "SemiSupervisedCityscapesDataModule)."
        )


def _save_atomically(trainer: Trainer, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(tmp)
    if trainer.is_global_zero:
        os.replace(tmp, path)
    trainer.strategy.barrier("segmend_stage_final")


def _finish_wandb() -> None:
    """End the W&B run of a stage so the next stage's WandbLogger starts its own run."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _restore(model: SelfCorrectionModule, stage: str, final: Path) -> None:
    """Load what later stages need from a finished stage's checkpoint."""
    if stage == "ancillary":
        model.load_ancillary(final)
    else:
        state = torch.load(final, map_location="cpu", weights_only=False)["state_dict"]
        model.load_state_dict(state)


def run_self_correction(
    model: SelfCorrectionModule,
    datamodule: LightningDataModule,
    run_dir: str | Path,
    trainer_factory: TrainerFactory | None = None,
    ckpt_path: str | Path | None = None,
    checkpoint_interval: float = 300.0,
    trainer_kwargs: dict[str, Any] | None = None,
) -> SelfCorrectionRun:
    """Train ``model`` through its stages, skipping finished ones and resuming a killed one.

    Args:
        model: The primary model; it receives the trained ancillary weights and, at the end, holds
            the trained primary model.
        datamodule: A semi-supervised DataModule with ``use_train_set(name)``.
        run_dir: Folder of the stages' checkpoints (``<run_dir>/<stage>/...``).
        trainer_factory: ``stage name -> new Trainer``; ``None`` uses :func:`default_trainer_factory`
            with ``trainer_kwargs``.
            Set ``default_root_dir`` and the logger's name per stage there; the runner adds a
            :class:`StageCheckpoint` and, where the model asks (``ancillary_epochs``,
            ``pretrain_epochs``), overrides ``max_epochs``.
        ckpt_path: Checkpoint to resume the **main** stage from when it has no ``last.ckpt`` of its own.
        checkpoint_interval: Minimum seconds between two writes of a stage's ``last.ckpt``.
        trainer_kwargs: Trainer arguments of :func:`default_trainer_factory` (when no factory is given),
            e.g. ``{"max_steps": 2000}``.

    Returns:
        The stages' results and the last Trainer.

    Raises:
        ValueError: If the DataModule cannot switch training sets.

    """
    _check_datamodule(datamodule)
    run_dir = Path(run_dir)
    factory = trainer_factory or default_trainer_factory(run_dir, **(trainer_kwargs or {}))
    stages = plan_stages(model)
    results: list[StageResult] = []
    trainer: Trainer | None = None
    for number, stage in enumerate(stages, start=1):
        stage_dir = run_dir / stage
        final = stage_dir / "final.ckpt"
        if final.is_file():
            _restore(model, stage, final)
            rank_zero_info(f"segmend: stage {number}/{len(stages)} '{stage}' already done ({final}); skipped.")
            results.append(StageResult(stage, "skipped", final))
            continue
        module: LightningModule = model.build_ancillary_module() if stage == "ancillary" else model
        datamodule.use_train_set(TRAIN_SETS[stage])
        trainer = factory(stage)
        epochs = {"ancillary": model.hparams.ancillary_epochs, "pretrain": model.hparams.pretrain_epochs}.get(stage)
        if epochs is not None:
            trainer.fit_loop.max_epochs = epochs
        trainer.callbacks.append(StageCheckpoint(stage, stage_dir / "checkpoints", checkpoint_interval))
        last = stage_dir / "checkpoints" / "last.ckpt"
        resume = last if last.is_file() else (Path(ckpt_path) if ckpt_path and stage == "main" else None)
        rank_zero_info(
            f"segmend: stage {number}/{len(stages)} '{stage}' on train set '{TRAIN_SETS[stage]}'"
            + (f", resuming from {resume}" if resume else "")
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
        _finish_wandb()
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if trainer.interrupted:
            rank_zero_info(f"segmend: stage '{stage}' was interrupted; re-run the same command to resume it.")
            results.append(StageResult(stage, "interrupted", None, resume, metrics))
            return SelfCorrectionRun(results, trainer)
        if stage == "ancillary":
            model.set_ancillary(module)
        if not trainer.fast_dev_run:
            _save_atomically(trainer, final)
        results.append(StageResult(stage, "trained", final if final.is_file() else None, resume, metrics))
    return SelfCorrectionRun(results, trainer)
