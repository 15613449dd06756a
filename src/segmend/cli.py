"""The ``segmend`` / ``lightning`` command: a LightningCLI over segmend's modules and data."""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import segmend.callbacks  # noqa: F401  (registers short class names for YAML)
import segmend.datamodules  # noqa: F401
import segmend.modules  # noqa: F401


class SegmendCLI(LightningCLI):
    """LightningCLI with segmend's conventions.

    * ``model`` and ``data`` accept any LightningModule / LightningDataModule, by short name
      (``class_path: SegmentationModule``) for segmend's own classes.
    * ``num_classes`` and ``class_names`` are linked from the DataModule to the model.
    * The optimizer and schedule are constructor arguments of the model (no top-level
      ``--optimizer``), so methods that need several parameter groups keep them.
    * The saved ``config.yaml`` records the seed and is overwritten when a run directory is
      reused; the final validation scores are printed after ``fit``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(LightningModule, LightningDataModule, *args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:  # noqa: D102
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")

    def after_fit(self) -> None:
        """Print the final validation scores."""
        metrics = self.trainer.callback_metrics
        if self.trainer.is_global_zero and "val/mIoU" in metrics:
            scores = ", ".join(
                f"{key} {float(metrics[key]):.4f}" for key in ("val/mIoU", "val/aAcc", "val/mAcc")
                if key in metrics
            )
            print(f"Final validation: {scores}")


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``segmend`` and ``lightning`` console scripts."""
    SegmendCLI(args=args if args is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
