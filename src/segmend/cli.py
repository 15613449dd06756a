"""The ``segmend`` / ``lightning`` command: a LightningCLI over segmend's modules and data."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import re
import sys
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, Checkpoint, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

import segmend.callbacks
import segmend.datamodules
import segmend.modules
from segmend.callbacks.prediction_writer import SegmentationPredictionWriter
from segmend.cli_hints import hint_for
from segmend.commands import COMMANDS, run_command
from segmend.precision import auto_precision
from segmend.runs import ResumePolicy, run_stages, stages_of

SHORT_NAMES = tuple(
    sorted(
        name
        for package in (segmend.modules, segmend.datamodules, segmend.callbacks)
        for name in package.__all__
        if isinstance(getattr(package, name), type)
        and issubclass(getattr(package, name), (LightningModule, LightningDataModule, Callback))
        and not inspect.isabstract(getattr(package, name))
    )
)
MAX_LISTED_SUBCLASSES = 12
KNOWN_SUBCLASSES = re.compile(r"(?P<head>known\s+subclasses:)(?P<names>[^)]*)\)")  # wrapped help text


def segmend_version() -> str:
    """The installed version of segmend."""
    try:
        return version("segmend")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


class UserInputError(ValueError):
    """A mistake in the configuration or the data, found before training starts; shown without a traceback."""


def shorten_subclass_lists(help_text: str, limit: int = MAX_LISTED_SUBCLASSES) -> str:
    """Cut each "known subclasses: ..." list of a formatted help text after ``limit`` names.

    It works on the text as argparse wrapped it (a name may be split over two lines): the kept lines
    stay as they are and the number of names left out goes on a line of its own, with the list's indent.

    Args:
        help_text: The formatted help.
        limit: How many names of a list to keep.

    Returns:
        The help text with the long lists cut.

    """

    def shorten(found: re.Match) -> str:
        listed = found["names"]
        count = len(re.sub(r"\s+", "", listed).split(","))
        if count <= limit:
            return found.group(0)
        cut = [comma.end() for comma in re.finditer(",", listed)][limit - 1]
        indent = re.search(r"\n([ \t]*)", listed)
        separator = "\n" + indent.group(1) if indent else " "
        return f"{found['head']}{listed[:cut]}{separator}and {count - limit} more (any import path works))"

    return KNOWN_SUBCLASSES.sub(shorten, help_text)


class SegmendArgumentParser(LightningArgumentParser):
    """Argument parser whose errors about unknown classes say which short names exist, with a shorter help.

    jsonargparse lists every known subclass of a class-typed option in its help (``net`` would list
    every ``torch.nn`` class); :meth:`format_help` cuts those lists. jsonargparse builds the parser of
    ``--model.help CLASS`` with the parser's own class, so that help is cut too.
    """

    def format_help(self, *args: Any, **kwargs: Any) -> str:
        """The help text, with lists of known subclasses cut after ``MAX_LISTED_SUBCLASSES`` names."""
        return shorten_subclass_lists(super().format_help(*args, **kwargs))

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Report a parse error, with hints: the closest class or option name, where an option lives."""
        super().error(message + hint_for(message, self, SHORT_NAMES), ex)


class SegmendCLI(LightningCLI):
    """LightningCLI with segmend's conventions.

    * ``model`` and ``data`` accept any LightningModule / LightningDataModule, by short name
      (``class_path: SegmentationModule``) for segmend's own classes.
    * ``num_classes`` and ``class_names`` are linked from the DataModule to the model; a
      ``model.init_args.num_classes`` that contradicts the data stops the run.
    * The optimizer and schedule are constructor arguments of the model (no top-level
      ``--optimizer``), so methods that need several parameter groups keep them.
    * ``trainer.precision`` left unset (in the config and on the command line) is chosen by the
      hardware (:func:`~segmend.precision.auto_precision`: ``bf16-mixed`` on bf16 GPUs and on CPUs
      with AMX / AVX512-BF16, ``16-mixed`` on other GPUs, else ``32-true``) and written into the
      config, so ``config.yaml`` and every stage's Trainer get it; one log line says which and why.
      An explicit ``trainer.precision`` always wins.
    * The run folder is ``trainer.default_root_dir`` (``runs/<config name>`` when unset). Loggers
      without a ``save_dir`` write there (the shipped configs set none), so do
      ``ModelCheckpoint`` callbacks without a ``dirpath`` (``<run>/checkpoints``). ``fit`` saves the
      resolved config as ``config.yaml`` (with the seed); ``validate`` / ``test`` / ``predict``
      save theirs as ``<subcommand>-config.yaml`` and never overwrite the fit's. The final
      validation scores are printed after ``fit``.
    * ``fit`` of a module with training stages (a ``training_stages`` method,
      :class:`~segmend.runs.HasTrainingStages`) runs them with :func:`~segmend.runs.run_stages`
      in the run folder, each on a new Trainer built from the same trainer config with
      ``default_root_dir`` set to ``<run>/<stage>`` and the logger's ``name`` suffixed with
      ``-<stage>``; ``--resume.interval`` / ``--resume.every_n_steps`` say how much training a
      kill may lose. A re-run of the same command resumes.
    * ``predict`` writes label maps with a :class:`~segmend.callbacks.SegmentationPredictionWriter`
      (added when no prediction writer is configured) and keeps no predictions in memory
      (``return_predictions`` defaults to false).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_class", SegmendArgumentParser)
        kwargs.setdefault("save_config_callback", LoggedSaveConfigCallback)
        super().__init__(LightningModule, LightningDataModule, *args, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """The main parser, with ``--version``."""
        parser = super().init_parser(**kwargs)
        parser.add_argument("--version", action="version", version=f"segmend {segmend_version()}")
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:  # noqa: D102
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Check the accelerator, choose the precision; remember a config's ``num_classes`` to compare with the data.

        Raises:
            UserInputError: If the config asks for a GPU and none is available.

        """
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        self._configured_num_classes = config.get("model", {}).get("init_args", {}).get("num_classes")
        check_accelerator(config.get("trainer", Namespace()))
        if "trainer" in config:
            choose_precision(config.trainer)

    def instantiate_classes(self) -> None:
        """Instantiate; an error raised by a class's constructor becomes a :class:`UserInputError`.

        Raises:
            UserInputError: If a constructor rejected its arguments, or if the config's
                ``num_classes`` contradicts the data.

        """
        with user_errors():
            super().instantiate_classes()
        data_classes = getattr(self.datamodule, "num_classes", None)
        requested = self._configured_num_classes
        if requested is not None and data_classes is not None and requested != data_classes:
            raise UserInputError(
                f"num_classes mismatch: the config sets model.init_args.num_classes={requested} "
                f"but the data ({type(self.datamodule).__name__}) has {data_classes} classes. "
                "Remove model.init_args.num_classes (segmend takes it from the data) or use data "
                "with that many classes."
            )

    def check_before_running(self, stage: str) -> None:
        """Build the stage's datasets and check the model against the data, before any logger starts a run.

        Lightning starts the loggers' runs (a W&B run) before it sets the data up, so without this a
        missing dataset or a crop size the net cannot take would surface after a run was created,
        inside a long traceback.

        Raises:
            UserInputError: With the message of the check that failed.

        """
        with user_errors():
            if self.datamodule is not None:
                self.datamodule.setup(stage)
                check = getattr(self.model, "check_datamodule", None)
                if callable(check):
                    check(self.datamodule, stage=stage)

    def before_fit(self) -> None:  # noqa: D102
        self.check_before_running("fit")

    def before_validate(self) -> None:  # noqa: D102
        self.check_before_running("validate")

    def before_test(self) -> None:  # noqa: D102
        self.check_before_running("test")

    def before_predict(self) -> None:  # noqa: D102
        self.check_before_running("predict")

    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Lightning's defaults, and ``resume`` (:class:`~segmend.runs.ResumePolicy`) for staged fits."""
        super().add_default_arguments_to_parser(parser)
        parser.add_class_arguments(ResumePolicy, "resume", fail_untyped=True)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse; then place every output in the run folder and keep the fit's ``config.yaml``.

        The run folder is ``trainer.default_root_dir``, or ``runs/<config name>`` when unset. A
        logger's unset ``save_dir`` (``None``, or Lightning's default ``.``) becomes the run folder.
        ``validate`` / ``test`` / ``predict`` write ``<subcommand>-config.yaml``.
        """
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        if "trainer" not in config:
            return
        trainer_config = config.trainer
        if trainer_config.get("default_root_dir") is None:
            files = config.get("config") or []
            name = Path(str(files[-1])).stem if files else subcommand or "fit"
            trainer_config.default_root_dir = str(Path("runs") / name)
        for init_args in _logger_init_args(trainer_config):
            if "save_dir" in init_args and init_args.save_dir in (None, "."):  # "." is Lightning's default
                init_args.save_dir = trainer_config.default_root_dir
        if subcommand not in (None, "fit"):
            self.save_config_kwargs = {**self.save_config_kwargs, "config_filename": f"{subcommand}-config.yaml"}

    def after_instantiate_classes(self) -> None:
        """``ModelCheckpoint`` callbacks without a ``dirpath`` write to ``<run>/checkpoints``."""
        super().after_instantiate_classes()
        if getattr(self, "trainer", None) is not None:
            checkpoints_into(self.trainer, Path(self.trainer.default_root_dir) / "checkpoints")

    def fit(self, model: LightningModule, datamodule: LightningDataModule | None = None, **kwargs: Any) -> None:
        """``trainer.fit``, or the stage runner for a module with training stages.

        Dispatches on protocols, never on a class: a module with ``training_stages(datamodule)``
        (:class:`~segmend.runs.HasTrainingStages`) or a trainer callback with
        ``training_stages(module, datamodule, run_dir)`` (:class:`~segmend.runs.HasCallbackStages`,
        e.g. :class:`~segmend.callbacks.MADTroubleshooting`).

        Raises:
            SystemExit: With status 1 when a stage's Trainer returned from ``fit`` as interrupted;
                a run stopped on purpose (:class:`~segmend.runs.StopRun`, e.g. MAD waiting for
                people) returns normally after printing what to do.

        """
        run_dir = Path(self.trainer.default_root_dir)
        with user_errors():
            stages = stages_of(model, datamodule, run_dir, self.trainer.callbacks)
        if stages is None:
            self.trainer.fit(model, datamodule=datamodule, **kwargs)
            return
        self.save_run_config(run_dir / "config.yaml")
        config_init = self.config_init.get(self.subcommand, self.config_init)
        run = run_stages(
            stages,
            datamodule,
            run_dir=run_dir,
            trainer_factory=self.stage_trainer,
            ckpt_path=kwargs.get("ckpt_path"),
            policy=config_init.get("resume"),
        )
        if run.trainer is not None:
            self.trainer = run.trainer  # after_fit reports the last stage's scores
        if run.stopped is not None:
            if rank_zero_only.rank == 0:
                print(f"segmend: the run stopped: {run.stopped}")
            return
        if not run.completed:  # the runner printed which stage and how to resume; a script must not go on
            raise SystemExit(1)

    def save_run_config(self, path: Path) -> None:
        """Write the resolved config of this command (rank 0), as ``SaveConfigCallback`` does for one fit."""
        # rank_zero_only.rank comes from the launcher's environment: the Trainer's rank is only known once it runs
        if rank_zero_only.rank != 0 or self.trainer.fast_dev_run:
            return
        dumped = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        if self.subcommand:
            dumped = dumped[self.subcommand]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump(dumped, sort_keys=False))
        os.replace(tmp, path)

    def stage_trainer(self, stage: str, **overrides: Any) -> Trainer:
        """A new Trainer from the trainer config: root ``<run>/<stage>``, logger name ``<name>-<stage>``.

        Only the trainer's part of the config is instantiated again, by jsonargparse (fresh logger and
        callbacks, so no state leaks from one stage into the next); the model and data are not
        rebuilt. A W&B logger gets the run's group (``<name>-<hash of the run folder>``) unless one
        is configured, and, when the config sets ``resume`` (e.g. ``allow``), a fixed run ``id`` per
        stage so that a re-run continues the stage's W&B run. Without a configured checkpoint
        callback, Lightning's default ``ModelCheckpoint`` is left out: the runner writes the
        stage's ``last.ckpt`` and ``final.ckpt``.

        Args:
            stage: Stage name.
            **overrides: Trainer arguments of this stage (e.g. ``max_epochs``).

        """
        config = (self.config.get(self.subcommand) if self.subcommand else self.config).clone()
        trainer_config = config.trainer
        run_dir = Path(trainer_config.default_root_dir or ".")
        trainer_config.default_root_dir = str(run_dir / stage)
        run_tag = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]
        for init_args in _logger_init_args(trainer_config):
            base = init_args.get("name") or (Path(str(config.config[-1])).stem if config.get("config") else "run")
            if "name" in init_args:
                init_args.name = f"{init_args.name}-{stage}" if init_args.name else stage
            if "group" in init_args and init_args.group is None:
                init_args.group = f"{base}-{run_tag}"
            if init_args.get("resume") and "id" in init_args and init_args.id is None:
                init_args.id = f"{run_tag}-{stage}"
        parser = LightningArgumentParser()
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        fresh = parser.instantiate_classes(Namespace(trainer=trainer_config)).trainer
        kwargs = {key: value.as_dict() if isinstance(value, Namespace) else value for key, value in vars(fresh).items()}
        callbacks = kwargs.get("callbacks") or []
        if not any(isinstance(c, Checkpoint) for c in (callbacks if isinstance(callbacks, list) else [callbacks])):
            kwargs["enable_checkpointing"] = False  # the runner's last.ckpt / final.ckpt, not one more full copy
        kwargs.update(overrides)
        trainer = self.instantiate_trainer(**kwargs)
        checkpoints_into(trainer, run_dir / stage / "checkpoints")
        return trainer

    def after_fit(self) -> None:
        """Print the final validation scores."""
        metrics = self.trainer.callback_metrics
        if self.trainer.is_global_zero and "val/mIoU" in metrics:
            scores = ", ".join(
                f"{key} {float(metrics[key]):.4f}" for key in ("val/mIoU", "val/aAcc", "val/mAcc") if key in metrics
            )
            print(f"Final validation: {scores}")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer; for ``predict``, with a prediction writer when the config has none."""
        trainer = drop_logger_callbacks_without_logger(super().instantiate_trainer(**kwargs))
        if self.subcommand == "predict":
            self.add_default_prediction_writer(trainer)
        return trainer

    @staticmethod
    def add_default_prediction_writer(trainer: Trainer) -> None:
        """Add a :class:`~segmend.callbacks.SegmentationPredictionWriter` unless a writer is configured.

        With its defaults it writes label maps under ``<default_root_dir>/predictions/<split>``.
        """
        if not any(isinstance(callback, BasePredictionWriter) for callback in trainer.callbacks):
            trainer.callbacks.append(SegmentationPredictionWriter())

    def predict(
        self,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        return_predictions: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """``trainer.predict`` that keeps no predictions in memory unless ``--return_predictions=true``.

        The prediction writer saves them as batches finish; returning them too would hold every
        image's probabilities until the end.
        """
        return self.trainer.predict(model, datamodule=datamodule, return_predictions=bool(return_predictions), **kwargs)


def _logger_init_args(trainer_config: Namespace) -> list[Namespace]:
    """The ``init_args`` of the loggers given by ``class_path`` in a trainer config."""
    loggers = trainer_config.get("logger")
    loggers = loggers if isinstance(loggers, list) else [loggers]
    return [logger.init_args for logger in loggers if isinstance(logger, Namespace) and "init_args" in logger]


def checkpoints_into(trainer: Trainer, folder: Path) -> None:
    """Point the Trainer's ``ModelCheckpoint`` callbacks that have no ``dirpath`` at ``folder``.

    Lightning would otherwise put them under ``<logger save_dir>/<project>/<random W&B id>/``.
    """
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
            callback.dirpath = str(folder)


class LoggedSaveConfigCallback(SaveConfigCallback):
    """Writes ``config.yaml`` and logs the full resolved config (what ``--print_config`` prints) to every logger."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:  # noqa: D102
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams(config)


def drop_logger_callbacks_without_logger(trainer: Trainer) -> Trainer:
    """Leave out a config's ``LearningRateMonitor`` when the run has no logger (``--trainer.logger=false``).

    Lightning's monitor refuses to start without a logger, so a shipped config run with its logger
    switched off would stop at the first step.
    """
    monitors = [callback for callback in trainer.callbacks if isinstance(callback, LearningRateMonitor)]
    if monitors and not trainer.loggers:
        for monitor in monitors:
            trainer.callbacks.remove(monitor)
        rank_zero_info("LearningRateMonitor left out: this run has no logger to write learning rates to.")
    return trainer


GPU_ACCELERATORS = ("gpu", "cuda")
CPU_OVERRIDES = "--trainer.accelerator=cpu --trainer.devices=1 --trainer.strategy=auto --trainer.sync_batchnorm=false"


def choose_precision(trainer_config: Namespace) -> str:
    """Set ``trainer.precision`` from the hardware when the config leaves it unset (``None``); log the choice.

    Args:
        trainer_config: The ``trainer`` part of the parsed config; changed in place.

    Returns:
        The precision the Trainer will use.

    """
    configured = trainer_config.get("precision")
    if configured is not None:
        rank_zero_info(f"Precision: {configured}, set by the config (trainer.precision).")
        return str(configured)
    accelerator = trainer_config.get("accelerator") or "auto"
    if isinstance(accelerator, Namespace):  # an Accelerator given by class_path
        accelerator = accelerator.get("class_path", "custom")
    choice = auto_precision(accelerator)
    trainer_config.precision = choice.precision
    rank_zero_info(
        f"Precision: {choice.precision}, chosen by the hardware: {choice.reason} "
        "(set trainer.precision to choose another)."
    )
    return choice.precision


def check_accelerator(trainer_config: Namespace) -> None:
    """Stop with the overrides that run a GPU config here, when it asks for a GPU that this machine lacks.

    Raises:
        UserInputError: If ``trainer.accelerator`` is ``gpu``/``cuda`` and CUDA is not available.

    """
    accelerator = trainer_config.get("accelerator")
    if isinstance(accelerator, str) and accelerator.lower() in GPU_ACCELERATORS and not torch.cuda.is_available():
        raise UserInputError(
            f"this config asks for trainer.accelerator={accelerator} (devices={trainer_config.get('devices')}), "
            "but this machine has no CUDA GPU. To run it on the CPU (slowly: the shipped GPU configs carry the "
            f"papers' full budgets), add: {CPU_OVERRIDES}"
        )


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a ``ValueError`` / ``OSError`` raised while building or checking the run into a :class:`UserInputError`.

    The message is that of the innermost cause, so the user reads segmend's own message rather
    than jsonargparse's wrapper around it.
    """
    try:
        yield
    except UserInputError:
        raise
    except (ValueError, OSError) as error:
        cause: BaseException = error
        while isinstance(cause.__cause__, (ValueError, OSError)):
            cause = cause.__cause__
        raise UserInputError(str(cause)) from error


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``segmend`` and ``lightning`` console scripts.

    Mistakes in the configuration or the data found before training starts are printed as one
    message (exit code 2); set ``SEGMEND_TRACEBACK=1`` to see the traceback as well. The commands
    of :mod:`segmend.commands` (``rate``, ``export-labels``, ``import-labels``, ``status``) run
    without Lightning's parser.
    """
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in COMMANDS:
        raise SystemExit(run_command(argv))
    try:
        SegmendCLI(args=args)
    except UserInputError as error:
        if os.environ.get("SEGMEND_TRACEBACK"):
            raise
        print(f"segmend: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
