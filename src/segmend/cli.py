"""The ``segmend`` / ``lightning`` command: a LightningCLI over segmend's modules and data."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, NoReturn

from jsonargparse import Namespace
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import segmend.callbacks
import segmend.datamodules
import segmend.modules
from segmend.callbacks.prediction_writer import SegmentationPredictionWriter
from segmend.modules.selfcorr import SelfCorrectionModule
from segmend.modules.stages import run_self_correction

SHORT_NAMES = tuple(
    sorted(
        name
        for package in (segmend.modules, segmend.datamodules, segmend.callbacks)
        for name in package.__all__
        if isinstance(getattr(package, name), type)
        and issubclass(getattr(package, name), (LightningModule, LightningDataModule, Callback))
    )
)


class SegmendArgumentParser(LightningArgumentParser):
    """Argument parser whose errors about unknown classes say which short names exist."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Report a parse error, with a hint when a class path could not be resolved."""
        if "import path" in message or "class_path" in message:
            message += (
                "\nhint: a class_path is one of segmend's short names ("
                + ", ".join(SHORT_NAMES)
                + ") or a full import path such as lightning.pytorch.callbacks.ModelCheckpoint;"
                " check its spelling and that the package defining it is installed."
            )
        super().error(message, ex)


class SegmendCLI(LightningCLI):
    """LightningCLI with segmend's conventions.

    * ``model`` and ``data`` accept any LightningModule / LightningDataModule, by short name
      (``class_path: SegmentationModule``) for segmend's own classes.
    * ``num_classes`` and ``class_names`` are linked from the DataModule to the model; a
      ``model.init_args.num_classes`` that contradicts the data stops the run.
    * The optimizer and schedule are constructor arguments of the model (no top-level
      ``--optimizer``), so methods that need several parameter groups keep them.
    * The saved ``config.yaml`` records the seed and is overwritten when a run directory is
      reused; the final validation scores are printed after ``fit``.
    * ``fit`` of a :class:`~segmend.modules.SelfCorrectionModule` runs its training stages
      (:func:`~segmend.modules.stages.run_self_correction`) under ``trainer.default_root_dir``, each
      on a new Trainer built from the same trainer config with ``default_root_dir`` set to
      ``<root>/<stage>`` and the logger's ``name`` suffixed with ``-<stage>``.
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
        super().__init__(LightningModule, LightningDataModule, *args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:  # noqa: D102
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Remember a ``num_classes`` written in the config, to compare it with the data."""
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        self._configured_num_classes = config.get("model", {}).get("init_args", {}).get("num_classes")

    def instantiate_classes(self) -> None:
        """Instantiate, then stop if the config's ``num_classes`` contradicts the data.

        Raises:
            ValueError: If ``model.init_args.num_classes`` differs from the DataModule's.

        """
        super().instantiate_classes()
        data_classes = getattr(self.datamodule, "num_classes", None)
        requested = self._configured_num_classes
        if requested is not None and data_classes is not None and requested != data_classes:
            raise ValueError(
                f"num_classes mismatch: the config sets model.init_args.num_classes={requested} "
                f"but the data ({type(self.datamodule).__name__}) has {data_classes} classes. "
                "Remove model.init_args.num_classes (segmend takes it from the data) or use data "
                "with that many classes."
            )

    def fit(self, model: LightningModule, datamodule: LightningDataModule | None = None, **kwargs: Any) -> None:
        """``trainer.fit``, or the stage runner for a :class:`~segmend.modules.SelfCorrectionModule`."""
        if not isinstance(model, SelfCorrectionModule):
            self.trainer.fit(model, datamodule=datamodule, **kwargs)
            return
        run = run_self_correction(
            model,
            datamodule,
            run_dir=self.trainer.default_root_dir,
            trainer_factory=self.stage_trainer,
            ckpt_path=kwargs.get("ckpt_path"),
        )
        if run.trainer is not None:
            self.trainer = run.trainer  # after_fit reports the last stage's scores

    def stage_trainer(self, stage: str) -> Trainer:
        """A new Trainer from the trainer config: root ``<root>/<stage>``, logger name ``<name>-<stage>``.

        Only the trainer's part of the config is instantiated again (fresh logger and callbacks, so
        no state leaks from one stage into the next); the model and data are not rebuilt.
        """
        parser = self._parser(self.subcommand)
        config = (self.config.get(self.subcommand) if self.subcommand else self.config).clone()
        trainer_config = config.trainer
        root = Path(trainer_config.default_root_dir or ".")
        trainer_config.default_root_dir = str(root / stage)
        loggers = trainer_config.logger if isinstance(trainer_config.logger, list) else [trainer_config.logger]
        for logger in loggers:
            init_args = getattr(logger, "init_args", None)
            if init_args is not None and "name" in init_args:
                init_args.name = f"{init_args.name}-{stage}" if init_args.name else stage
        kwargs = {key: _instantiate(value) for key, value in vars(trainer_config).items()}
        callbacks = [_instantiate(config.get(key)) for key in parser.callback_keys]
        return self._instantiate_trainer(kwargs, [c for c in callbacks if c is not None])

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
        trainer = super().instantiate_trainer(**kwargs)
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


def _instantiate(value: Any) -> Any:
    """Instantiate ``class_path`` / ``init_args`` namespaces (recursively, also inside lists)."""
    if isinstance(value, list):
        return [_instantiate(item) for item in value]
    if isinstance(value, Namespace) and "class_path" in value:
        module_name, _, class_name = value.class_path.rpartition(".")
        cls = getattr(importlib.import_module(module_name), class_name)
        init_args = value.get("init_args") or Namespace()
        return cls(**{key: _instantiate(item) for key, item in vars(init_args).items()})
    if isinstance(value, Namespace):
        return {key: _instantiate(item) for key, item in vars(value).items()}
    return value


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``segmend`` and ``lightning`` console scripts."""
    SegmendCLI(args=args)


if __name__ == "__main__":
    main()
