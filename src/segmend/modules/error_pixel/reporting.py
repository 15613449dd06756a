"""What erroneous-pixel prediction logs at each validation and test: branch metrics and the threshold sweep."""

from __future__ import annotations

import math
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from segmend.metrics import segmentation_metrics
from segmend.metrics.error_pixel import SWEEP_THRESHOLDS, ErrorThresholdSweep, write_sweep


class ErrorPixelReporting:
    """The metrics and threshold sweep of :class:`~segmend.modules.error_pixel.ErrorPixelModule` (a mixin of it)."""

    def configure_metrics(self) -> None:
        """The fused prediction's metrics (``val/``, ``test/``), the semantic branch's, and the threshold sweep."""
        super().configure_metrics()
        hp = self.hparams
        metrics = segmentation_metrics(self.num_classes, self.ignore_index, self.class_names)
        self.val_semantic_metrics = metrics.clone(prefix="val/semantic_")
        self.test_semantic_metrics = metrics.clone(prefix="test/semantic_")
        thresholds = tuple(sorted({*SWEEP_THRESHOLDS, float(hp.threshold)}))
        self.val_error_sweep = ErrorThresholdSweep(thresholds, hp.rho, self.ignore_index)
        self.test_error_sweep = ErrorThresholdSweep(thresholds, hp.rho, self.ignore_index)

    def semantic_metrics(self, stage: str):  # noqa: ANN201
        """The semantic branch's metric collection of ``"val"`` or ``"test"``."""
        return self.val_semantic_metrics if stage == "val" else self.test_semantic_metrics

    def error_sweep(self, stage: str) -> ErrorThresholdSweep:
        """The threshold sweep of ``"val"`` or ``"test"``."""
        return self.val_error_sweep if stage == "val" else self.test_error_sweep

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        super().on_validation_epoch_end()
        self.log_branch_metrics("val")

    def on_test_epoch_end(self) -> None:  # noqa: D102
        super().on_test_epoch_end()
        self.log_branch_metrics("test")

    def log_branch_metrics(self, stage: str) -> None:
        """Log the semantic branch's metrics and the error metrics at ``t``; report the threshold sweep.

        Every value comes from torchmetrics states summed across ranks (computed on every rank);
        rank 0 writes the sweep (not during the sanity check).
        """
        self.log_collection(self.semantic_metrics(stage))
        sweep = self.error_sweep(stage).compute()
        self.error_sweep(stage).reset()
        thresholds = sweep["threshold"].tolist()
        at = min(range(len(thresholds)), key=lambda i: abs(thresholds[i] - self.hparams.threshold))
        values = {f"{stage}/error_{key}": sweep[key][at] for key in ("precision", "recall")}
        values[f"{stage}/error_IoU"] = sweep["iou"][at]
        values[f"{stage}/error_hard_recall"] = sweep["hard_recall"][at]
        values[f"{stage}/error_fraction"] = sweep["error_fraction"]
        self.log_computed({key: value.float() for key, value in values.items()})
        if not self.trainer.sanity_checking and self.trainer.is_global_zero:
            self.report_sweep(stage, sweep)

    def report_sweep(self, stage: str, sweep: dict[str, Tensor]) -> None:
        """Write the threshold sweep (Tab. 1) as markdown and PNG; log both to W&B when a WandbLogger is attached.

        Files: ``<trainer.default_root_dir>/error_sweep/<stage>.md`` and ``.png`` (the stage's folder
        under ``segmend fit``), replaced at each validation.
        """
        folder = Path(self.trainer.default_root_dir) / "error_sweep"
        _, image = write_sweep(sweep, folder, stem=stage, operating_threshold=self.hparams.threshold)
        columns = ["threshold", "error_pixel_IoU", "hard_recall", "precision", "recall"]
        keys = ("threshold", "iou", "hard_recall", "precision", "recall")
        rows = [[_finite(sweep[key][row]) for key in keys] for row in range(len(sweep["threshold"]))]
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"{stage}/error_sweep", images=[str(image)], step=self.global_step)
                logger.log_table(key=f"{stage}/error_sweep_table", columns=columns, data=rows, step=self.global_step)


def _finite(value: Tensor) -> float | None:
    """A float for a table cell, ``None`` for NaN (an empty denominator)."""
    number = float(value)
    return None if math.isnan(number) else number
