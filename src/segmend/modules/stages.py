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

1. ``ancillary``: an :class:`AncillaryModule` on all of F (``full``) for ``none`` and ``linear``
   (Eq. 3 of the paper), on half of F (``half_full``) for ``conv``, whose stage 2 needs the other
   half held out (Sec. 3.4). Skipped when the model was given ``ancillary_checkpoint`` and for
   ``correction="em_fixed"`` (no ancillary model).
2. ``pretrain`` (``full``), ``conv`` only: the primary model and the conv self-correction net on F
   (first and last terms of Eq. 6).
3. ``main`` (``full+weak``): the primary model on F + W with the configured correction (for ``conv``
   it fine-tunes the stage-2 model).

The stages run on :func:`segmend.runs.run_stages` (the module opts in through
:meth:`SelfCorrectionModule.training_stages`), which fixes the run directory layout:
``<run_dir>/<stage>/checkpoints/last.ckpt`` (written atomically while the stage trains, so that a
kill loses at most ``checkpoint_interval`` seconds of training, also inside an epoch) and
``<run_dir>/<stage>/final.ckpt`` (weights only, written atomically when the stage's fit ends
normally; its presence marks the stage as done, and ``last.ckpt`` becomes a hard link to it). A
re-run skips finished stages (loading what later stages need from their ``final.ckpt``) and
resumes the first unfinished one from its ``last.ckpt``. Runs with ``fast_dev_run`` mark nothing
as done. A stage stopped by an exception or Ctrl-C is never marked done.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule

from segmend.checkpoints import read_weights
from segmend.modules.selfcorr import SelfCorrectionModule
from segmend.runs import (
    ResumePolicy,
    RunResult,
    Stage,
    StageResult,
    TrainerFactory,
    default_trainer_factory,
    run_stages,
)

TRAIN_SETS = {"ancillary": "full", "pretrain": "full", "main": "full+weak"}
CONV_ANCILLARY_TRAIN_SET = "half_full"  # conv's ancillary: the other half of F teaches the conv SC net to combine
SelfCorrectionRun = RunResult  # the results of run_self_correction (one entry per stage, the last Trainer)

__all__ = [
    "CONV_ANCILLARY_TRAIN_SET",
    "TRAIN_SETS",
    "SelfCorrectionRun",
    "StageResult",
    "check_datamodule",
    "default_trainer_factory",
    "plan_stages",
    "run_self_correction",
    "self_correction_stages",
]


def plan_stages(model: SelfCorrectionModule) -> tuple[str, ...]:
    """The stages ``model`` needs, in order."""
    stages = []
    if model.needs_ancillary and model.hparams.ancillary_checkpoint is None:
        stages.append("ancillary")
    if model.is_conv:
        stages.append("pretrain")
    stages.append("main")
    return tuple(stages)


def stage_train_set(model: SelfCorrectionModule, stage: str) -> str:
    """The training set of ``stage`` for ``model``: :data:`TRAIN_SETS`, but half of F for conv's ancillary."""
    if stage == "ancillary" and model.is_conv:
        return CONV_ANCILLARY_TRAIN_SET
    return TRAIN_SETS[stage]


def check_datamodule(datamodule: LightningDataModule | None) -> None:
    """Raise unless ``datamodule`` can switch training sets (``use_train_set``).

    Raises:
        ValueError: If it cannot.

    """
    if datamodule is None or not callable(getattr(datamodule, "use_train_set", None)):
        name = type(datamodule).__name__ if datamodule is not None else "no DataModule"
        raise ValueError(
            f"Self-correction training switches the training set between stages with "
            f"datamodule.use_train_set(...), which {name} does not have. Use a semi-supervised "
            "DataModule (SemiSupervisedSyntheticDataModule, SemiSupervisedVOCDataModule, "
            "SemiSupervisedCityscapesDataModule)."
        )


def _use(train_set: str):  # noqa: ANN202
    def prepare(datamodule: LightningDataModule) -> None:
        datamodule.use_train_set(train_set)

    return prepare


def _restore_ancillary(model: SelfCorrectionModule):  # noqa: ANN202
    def restore(result: StageResult) -> None:
        if result.status == "trained":
            model.set_ancillary(result.module)
        else:
            model.load_ancillary(result.final_checkpoint)

    return restore


def _restore_primary(model: SelfCorrectionModule):  # noqa: ANN202
    def restore(result: StageResult) -> None:
        if result.status == "skipped":
            model.load_state_dict(read_weights(result.final_checkpoint, prefix="").state_dict)

    return restore


def self_correction_stages(model: SelfCorrectionModule, datamodule: LightningDataModule | None) -> Iterator[Stage]:
    """The stages of :func:`plan_stages` as :class:`~segmend.runs.Stage` objects (what ``training_stages`` returns).

    Raises:
        ValueError: If the DataModule cannot switch training sets.

    """
    check_datamodule(datamodule)
    epochs = {"ancillary": model.hparams.ancillary_epochs, "pretrain": model.hparams.pretrain_epochs}
    stages = []
    for name in plan_stages(model):
        overrides = {"max_epochs": epochs[name]} if epochs.get(name) is not None else {}
        train_set = stage_train_set(model, name)
        if name == "ancillary":
            stage = Stage(
                name,
                model.build_ancillary_module(),
                _use(train_set),
                overrides,
                _restore_ancillary(model),
                description=f"train set '{train_set}'",
            )
        else:
            stage = Stage(
                name,
                model,
                _use(train_set),
                overrides,
                _restore_primary(model),
                takes_ckpt_path=name == "main",
                description=f"train set '{train_set}'",
            )
        stages.append(stage)
    return iter(stages)


def run_self_correction(
    model: SelfCorrectionModule,
    datamodule: LightningDataModule,
    run_dir: str | Path,
    trainer_factory: TrainerFactory | None = None,
    ckpt_path: str | Path | None = None,
    checkpoint_interval: float = 300.0,
    trainer_kwargs: dict[str, Any] | None = None,
    checkpoint_every_n_steps: int | None = None,
) -> RunResult:
    """Train ``model`` through its stages, skipping finished ones and resuming a killed one.

    A thin wrapper of :func:`segmend.runs.run_stages` over :meth:`SelfCorrectionModule.training_stages`.

    Args:
        model: The primary model; it receives the trained ancillary weights and, at the end, holds
            the trained primary model.
        datamodule: A semi-supervised DataModule with ``use_train_set(name)``.
        run_dir: Folder of the stages' checkpoints (``<run_dir>/<stage>/...``).
        trainer_factory: ``(stage name, **overrides) -> new Trainer``; ``None`` uses
            :func:`~segmend.runs.default_trainer_factory` with ``trainer_kwargs``. Set
            ``default_root_dir`` and the logger's name per stage there; the runner adds a
            :class:`~segmend.runs.ResumeCheckpoint`. Where the model asks (``ancillary_epochs``,
            ``pretrain_epochs``) the factory is called with ``max_epochs=...``.
        ckpt_path: Checkpoint to resume the **main** stage from when it has no ``last.ckpt`` of its own.
        checkpoint_interval: Seconds of training a kill may lose at most (see :class:`~segmend.runs.ResumePolicy`).
        trainer_kwargs: Trainer arguments of the default factory (when no factory is given),
            e.g. ``{"max_steps": 2000}``.
        checkpoint_every_n_steps: Also write ``last.ckpt`` every this many optimizer steps.

    Returns:
        The stages' results and the last Trainer.

    Raises:
        ValueError: If the DataModule cannot switch training sets.

    """
    policy = ResumePolicy(checkpoint_interval, checkpoint_every_n_steps)
    stages = self_correction_stages(model, datamodule)
    return run_stages(stages, datamodule, run_dir, trainer_factory, ckpt_path, policy, trainer_kwargs)
