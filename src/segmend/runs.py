"""The runner of fits: a resumable sequence of ``trainer.fit`` calls, one stage at a time.

Every training that needs more than one ``trainer.fit`` (self-correction's three stages,
error-pixel prediction's semantic -> error -> detail, MAD's rounds) is a sequence of
:class:`Stage` objects run by :func:`run_stages`:

* each stage is fitted on a **new** Trainer from a factory (a second ``fit`` on one Trainer trains
  nothing once ``max_epochs`` is reached);
* a stage is done when its weights-only ``<run_dir>/<stage>/final.ckpt`` exists; it is written
  atomically (temporary file, then rename on rank 0, then a barrier) when the stage's fit ends
  normally, and the stage's resume checkpoint ``checkpoints/last.ckpt`` is then replaced by a
  hard link to it (no second copy on disk);
* while a stage trains, :class:`ResumeCheckpoint` writes ``checkpoints/last.ckpt`` (atomically)
  often enough that a kill loses at most :attr:`ResumePolicy.interval` seconds or
  :attr:`ResumePolicy.every_n_steps` optimizer steps of training, also inside a long epoch, and
  once more when training ends, so a kill during the fit's end (``on_fit_end`` work such as MAD's
  mining) resumes at the last step without training again;
* a re-run skips the finished stages (calling their :attr:`Stage.restore`, so later stages get
  what they need) and resumes the first unfinished one from its ``last.ckpt``;
* a stage stopped by an exception, Ctrl-C or a Trainer that reports ``interrupted`` is never
  marked done; after Ctrl-C the "re-run the same command" hint is printed before Lightning exits.

Stages may be produced one at a time: :func:`run_stages` accepts any iterable of stages, and
when it is a generator it is sent each stage's :class:`StageResult`, so a round can depend on
the previous round's outcome::

    def training_stages(self, datamodule):
        result = yield Stage("round0", self)
        while result.metrics["val/mIoU"] < 0.5:
            result = yield Stage(f"round{len(...)}", self, prepare=mine_more_labels)

A LightningModule opts in by having a ``training_stages(datamodule)`` method (the
:class:`HasTrainingStages` protocol); ``segmend fit`` and :func:`fit` then run its stages
instead of a single ``trainer.fit``, whatever the class.

"Loses at most the interval" counts optimizer steps whose weights are lost. A resume in the middle
of an epoch continues at the saved step, but Lightning restarts a plain DataLoader at the epoch's
first batch, so the resumed epoch trains on its first batches again (docs/reproducibility.md):
the step count and schedule are right, the data order of that one epoch is not the uninterrupted
run's. A checkpoint written at an epoch end resumes exactly.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

RESUME_HINT = "re-run the same command to resume it"


class StopRun(Exception):  # noqa: N818 - a request, not an error
    """Raised from a stage (e.g. a callback's ``setup``) to stop the run cleanly, e.g. while waiting for people.

    :func:`run_stages` catches it, marks the stage ``"stopped"`` (not done: a re-run starts it
    again), logs the message (what to do and where) and returns; ``RunResult.stopped`` holds the message.
    """


@dataclass
class ResumePolicy:
    """How often a training stage writes the checkpoint a re-run resumes from (``last.ckpt``).

    Args:
        interval: Seconds of training a kill may lose at most: ``last.ckpt`` is written after the
            first optimizer step that ends this long after the previous save (checked after every
            step, so also inside a long epoch). The end of the first epoch is always saved.
            ``0`` saves after every step.
        every_n_steps: Also save after every ``every_n_steps`` optimizer steps (``None``: only by time).

    """

    interval: float = 300.0
    every_n_steps: int | None = None

    def __post_init__(self) -> None:  # noqa: D105
        if self.interval < 0:
            raise ValueError(f"resume.interval must be >= 0 seconds, got {self.interval}.")
        if self.every_n_steps is not None and self.every_n_steps < 1:
            raise ValueError(
                f"resume.every_n_steps must be a positive number of steps or null, got {self.every_n_steps}."
            )


class ResumeCheckpoint(Checkpoint):
    """Writes a stage's ``last.ckpt`` atomically, often enough to lose at most the policy's interval.

    A plain :class:`~lightning.pytorch.callbacks.Checkpoint` (Lightning runs it after the other
    callbacks, like ``ModelCheckpoint``) that saves with the public ``trainer.save_checkpoint`` into
    a temporary file renamed over ``last.ckpt``, so a kill while writing never leaves a truncated
    checkpoint behind. Time decisions are taken on rank 0 and broadcast. After Ctrl-C (or SIGTERM)
    it prints the resume hint (after Ctrl-C Lightning exits the process right after the
    ``on_exception`` hooks).

    Args:
        dirpath: Folder of ``last.ckpt``.
        policy: When to save.
        name: Stage name, part of the state key (never clashes with a user's ModelCheckpoint) and of the hint.

    """

    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, dirpath: str | Path, policy: ResumePolicy | None = None, name: str = "fit") -> None:
        self.dirpath = Path(dirpath)
        self.policy = policy or ResumePolicy()
        self.name = name
        self.last_save: float | None = None
        self.saved_step: int | None = None
        self.saves_in_this_fit = 0
        self.due_at_epoch_end = False

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return self.dirpath / "last.ckpt"

    @property
    def state_key(self) -> str:  # noqa: D102
        return f"ResumeCheckpoint[{self.name}]"

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self.last_save = self.clock()
        self.saves_in_this_fit = 0

    def on_train_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        every = self.policy.every_n_steps
        due = bool(every) and trainer.global_step % every == 0
        if not due:
            due = trainer.strategy.broadcast(self._time_is_up())
        if not due:
            return
        if batch_idx + 1 >= trainer.num_training_batches:
            self.due_at_epoch_end = True  # the epoch's last batch: saved at the epoch end, which resumes exactly
        else:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        due = self.due_at_epoch_end or trainer.strategy.broadcast(self.saves_in_this_fit == 0 or self._time_is_up())
        self.due_at_epoch_end = False
        if due:
            self.save(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save the trained weights before ``on_fit_end`` work (e.g. MAD's mining): a kill there resumes, not retrains.

        A re-run resumes the stage at its last step, so its fit trains nothing more and goes on to
        ``on_fit_end`` with the very weights the killed run had; retraining from an earlier
        checkpoint would give other weights wherever training is not bit-reproducible (GPUs).
        """
        self.save(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:  # noqa: D102
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            rank_zero_info(f"segmend: stage '{self.name}' was interrupted; {RESUME_HINT}.")

    def _time_is_up(self) -> bool:
        return self.last_save is not None and self.clock() - self.last_save >= self.policy.interval

    def save(self, trainer: Trainer) -> None:
        """Write ``last.ckpt`` atomically (not under ``fast_dev_run``, in sanity checks or for a saved step)."""
        if trainer.fast_dev_run or trainer.sanity_checking or self.saved_step == trainer.global_step:
            return
        self.saved_step = trainer.global_step
        self.last_save = self.clock()
        self.saves_in_this_fit += 1
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        save_atomically(trainer, self.path)

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {"saved_step": self.saved_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        self.saved_step = state_dict.get("saved_step")


@dataclass
class Stage:
    """One fit of a multi-fit training.

    Args:
        name: Folder name under the run folder (``<run_dir>/<name>/``); unique within a run.
        module: The LightningModule to fit.
        prepare: Called with the DataModule before the stage's fit (e.g. ``lambda dm: dm.use_train_set("full")``);
            not called for a stage that is already done.
        trainer_overrides: Trainer arguments of this stage (e.g. ``{"max_epochs": 5}``), passed to the factory.
        restore: Called with the stage's :class:`StageResult` once the stage is finished, whether it
            was trained now (``status="trained"``) or found done (``"skipped"``; its weights are in
            ``result.final_checkpoint``): load there what later stages need.
        takes_ckpt_path: Whether the runner's ``ckpt_path`` (the CLI's ``--ckpt_path``) resumes this
            stage when it has no ``last.ckpt`` of its own.
        description: Shown in the log line that starts the stage.

    """

    name: str
    module: LightningModule
    prepare: Callable[[LightningDataModule | None], None] | None = None
    trainer_overrides: dict[str, Any] = field(default_factory=dict)
    restore: Callable[[StageResult], None] | None = None
    takes_ckpt_path: bool = False
    description: str = ""


@dataclass
class StageResult:
    """What happened to one stage: ``"trained"``, ``"skipped"`` (already done) or ``"interrupted"``."""

    name: str
    status: str
    final_checkpoint: Path | None = None
    resumed_from: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    module: LightningModule | None = None


@dataclass
class RunResult:
    """Results of :func:`run_stages`: one entry per stage, and the last Trainer used."""

    stages: list[StageResult]
    trainer: Trainer | None
    stopped: str | None = None

    @property
    def completed(self) -> bool:
        """Whether every stage is done (none was interrupted and the run was not stopped)."""
        return self.stopped is None and all(stage.status != "interrupted" for stage in self.stages)


@runtime_checkable
class HasTrainingStages(Protocol):
    """A LightningModule whose training is a sequence of fits."""

    def training_stages(
        self, datamodule: LightningDataModule | None
    ) -> Iterable[Stage] | Generator[Stage, StageResult, None]:
        """The stages, in order; a generator is sent each stage's result and may yield the next from it."""


def has_training_stages(module: object) -> bool:
    """Whether ``module`` trains in stages (has a callable ``training_stages``)."""
    return callable(getattr(module, "training_stages", None))


@runtime_checkable
class HasCallbackStages(Protocol):
    """A callback that turns a fit into a sequence of fits (e.g. MAD's rounds)."""

    def training_stages(
        self, module: LightningModule, datamodule: LightningDataModule | None, run_dir: Path
    ) -> Iterable[Stage] | Generator[Stage, StageResult, None]:
        """The stages of ``module`` in the run folder ``run_dir``; a generator is sent each stage's result."""


def stage_callback(callbacks: object) -> Any | None:
    """The callback among ``callbacks`` (a list, one callback or ``None``) that has ``training_stages``.

    Raises:
        ValueError: If more than one has.

    """
    found = [c for c in (callbacks if isinstance(callbacks, list | tuple) else [callbacks]) if has_training_stages(c)]
    if len(found) > 1:
        names = ", ".join(type(c).__name__ for c in found)
        raise ValueError(f"Several callbacks make the fit a sequence of stages ({names}); keep one.")
    return found[0] if found else None


def stages_of(
    model: LightningModule, datamodule: LightningDataModule | None, run_dir: Path, callbacks: object = None
) -> Iterable[Stage] | None:
    """The stages of a fit: the module's own, a stage callback's, or ``None`` for a single plain fit.

    Raises:
        ValueError: If both the module and a callback have stages.

    """
    callback = stage_callback(callbacks)
    if callback is not None and has_training_stages(model):
        raise ValueError(
            f"{type(model).__name__} trains in stages and the callback {type(callback).__name__} makes stages "
            "of its own; use one of them."
        )
    if callback is not None:
        return callback.training_stages(model, datamodule, Path(run_dir))
    if has_training_stages(model):
        return model.training_stages(datamodule)
    return None


TrainerFactory = Callable[..., Trainer]
"""``factory(stage_name, **trainer_overrides) -> new Trainer`` (a factory of one argument is fine
for stages without overrides)."""


def default_trainer_factory(run_dir: str | Path, **trainer_kwargs: Any) -> TrainerFactory:
    """A factory of Trainers writing to ``<run_dir>/<stage>``, logging to a CSV logger named after the stage.

    Lightning's default ModelCheckpoint is off (each stage gets the runner's :class:`ResumeCheckpoint`).
    """
    from lightning.pytorch.loggers import CSVLogger

    def factory(stage: str, **overrides: Any) -> Trainer:
        kwargs = {**trainer_kwargs, **overrides}
        kwargs.setdefault("logger", CSVLogger(str(run_dir), name=stage))
        kwargs.setdefault("enable_checkpointing", False)
        return Trainer(default_root_dir=str(Path(run_dir) / stage), **kwargs)

    return factory


def save_atomically(trainer: Trainer, path: Path, weights_only: bool = False) -> None:
    """``trainer.save_checkpoint`` into a temporary file renamed to ``path`` on rank 0; all ranks wait."""
    tmp = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(tmp, weights_only=weights_only)
    if trainer.is_global_zero:
        os.replace(tmp, path)
    trainer.strategy.barrier("segmend_save_atomically")


def _mark_done(trainer: Trainer, final: Path, last: Path) -> None:
    """Write the weights-only final checkpoint; replace ``last.ckpt`` by a hard link to it."""
    save_atomically(trainer, final, weights_only=True)
    if trainer.is_global_zero and last.is_file():
        link = last.with_name(f".{last.name}.link")
        try:
            link.unlink(missing_ok=True)
            os.link(final, link)
            os.replace(link, last)
        except OSError:  # a file system without hard links: drop the full checkpoint
            last.unlink(missing_ok=True)
    trainer.strategy.barrier("segmend_stage_done")


def _finish_wandb() -> None:
    """End the W&B run of a stage so the next stage's WandbLogger starts its own run."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _build_trainer(factory: TrainerFactory, stage: Stage) -> Trainer:
    if not stage.trainer_overrides:
        return factory(stage.name)
    try:
        return factory(stage.name, **stage.trainer_overrides)
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        raise ValueError(
            f"stage '{stage.name}' sets Trainer arguments {stage.trainer_overrides}, but the trainer factory "
            "takes only the stage name. Give a factory `(name, **overrides) -> Trainer` that passes them on."
        ) from error


def _stages(source: Iterable[Stage]) -> Generator[Stage, StageResult | None, None]:
    """Iterate stages; forward results to ``source`` when it is a generator."""
    if isinstance(source, Generator):
        result = None
        try:
            stage = next(source)
            while True:
                result = yield stage
                stage = source.send(result)
        except StopIteration:
            return
    for stage in source:
        yield stage


def run_stages(
    stages: Iterable[Stage],
    datamodule: LightningDataModule | None,
    run_dir: str | Path,
    trainer_factory: TrainerFactory | None = None,
    ckpt_path: str | Path | None = None,
    policy: ResumePolicy | None = None,
    trainer_kwargs: dict[str, Any] | None = None,
) -> RunResult:
    """Fit each stage on a new Trainer, skipping finished stages and resuming an interrupted one.

    Args:
        stages: The stages, or a generator of stages that is sent each :class:`StageResult`.
        datamodule: Passed to every fit and to each stage's ``prepare``.
        run_dir: Run folder; stage ``s`` writes ``<run_dir>/<s>/final.ckpt`` and ``<run_dir>/<s>/checkpoints/``.
        trainer_factory: ``(stage name, **overrides) -> new Trainer``; ``None``: :func:`default_trainer_factory`
            with ``trainer_kwargs``. The runner adds a :class:`ResumeCheckpoint` to each Trainer.
        ckpt_path: Checkpoint resuming the stage marked ``takes_ckpt_path`` when it has no ``last.ckpt``.
        policy: How often ``last.ckpt`` is written.
        trainer_kwargs: Trainer arguments of the default factory (e.g. ``{"max_steps": 2000}``).

    Returns:
        The stages' results and the last Trainer. The run stops at the first interrupted stage.

    """
    run_dir = Path(run_dir)
    factory = trainer_factory or default_trainer_factory(run_dir, **(trainer_kwargs or {}))
    results: list[StageResult] = []
    trainer: Trainer | None = None
    produced = _stages(stages)
    result: StageResult | None = None
    ckpt_path_used = ckpt_path is None
    while True:
        try:
            stage = produced.send(result) if results else next(produced)
        except StopIteration:
            break
        if any(done.name == stage.name for done in results):
            raise ValueError(f"two stages are named '{stage.name}'; stage names must be unique within a run.")
        number = len(results) + 1
        stage_dir = run_dir / stage.name
        final = stage_dir / "final.ckpt"
        if final.is_file():
            rank_zero_info(f"segmend: stage {number} '{stage.name}' already done ({final}); skipped.")
            result = StageResult(stage.name, "skipped", final, module=stage.module)
            if stage.restore is not None:
                stage.restore(result)
            results.append(result)
            continue
        if stage.prepare is not None:
            stage.prepare(datamodule)
        trainer = _build_trainer(factory, stage)
        checkpoint = ResumeCheckpoint(stage_dir / "checkpoints", policy, name=stage.name)
        trainer.callbacks.append(checkpoint)
        last = checkpoint.path
        resume = None
        if last.is_file():
            resume = last
        elif ckpt_path is not None and stage.takes_ckpt_path:
            resume, ckpt_path_used = Path(ckpt_path), True
        about = f" ({stage.description})" if stage.description else ""
        rank_zero_info(
            f"segmend: stage {number} '{stage.name}'{about}" + (f", resuming from {resume}" if resume else "")
        )
        try:
            trainer.fit(stage.module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
        except StopRun as stop:
            _finish_wandb()
            rank_zero_info(f"segmend: stage '{stage.name}' stopped: {stop}")
            results.append(StageResult(stage.name, "stopped", None, resume, {}, stage.module))
            return RunResult(results, trainer, stopped=str(stop))
        _finish_wandb()
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if trainer.interrupted:
            rank_zero_info(f"segmend: stage '{stage.name}' was interrupted; {RESUME_HINT}.")
            results.append(StageResult(stage.name, "interrupted", None, resume, metrics, stage.module))
            return RunResult(results, trainer)
        if not trainer.fast_dev_run:
            _mark_done(trainer, final, last)
        result = StageResult(stage.name, "trained", final if final.is_file() else None, resume, metrics, stage.module)
        if stage.restore is not None:
            stage.restore(result)
        results.append(result)
    if not ckpt_path_used:
        rank_zero_warn(
            f"ckpt_path={ckpt_path} was not used: every stage that takes it was done or had its own last.ckpt."
        )
    return RunResult(results, trainer)


def fit(
    model: LightningModule,
    datamodule: LightningDataModule | None = None,
    run_dir: str | Path = "runs/fit",
    trainer_factory: TrainerFactory | None = None,
    ckpt_path: str | Path | None = None,
    policy: ResumePolicy | None = None,
    **trainer_kwargs: Any,
) -> RunResult:
    """The Python entry point: run ``model``'s stages when it has them, else one resumable stage ``fit``.

    Dispatches on protocols, never on a class: a module with ``training_stages(datamodule)``
    (:class:`HasTrainingStages`), or a callback in ``trainer_kwargs["callbacks"]`` with
    ``training_stages(module, datamodule, run_dir)`` (:class:`HasCallbackStages`, e.g.
    :class:`~segmend.callbacks.MADTroubleshooting`: ``fit(model, dm, "runs/mad", callbacks=[mad])``
    runs the whole troubleshooting loop). A re-run with the same ``run_dir`` resumes.

    Args:
        model: The module to train.
        datamodule: Its data.
        run_dir: Run folder.
        trainer_factory: See :func:`run_stages`.
        ckpt_path: See :func:`run_stages` (a module without stages: resumes its single stage).
        policy: See :func:`run_stages`.
        **trainer_kwargs: Trainer arguments of the default factory.

    Returns:
        The run's results.

    """
    stages = stages_of(model, datamodule, Path(run_dir), trainer_kwargs.get("callbacks"))
    if stages is None:
        stages = [Stage("fit", model, takes_ckpt_path=True)]
    return run_stages(stages, datamodule, run_dir, trainer_factory, ckpt_path, policy, trainer_kwargs)
