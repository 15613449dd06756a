"""A toy module trained in two stages (not self-correction), and a callback that kills a run mid-stage."""

from __future__ import annotations

import os
import signal
from collections.abc import Generator, Sequence
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.nn import functional as F

from segmend.runs import Stage, StageResult


class TwoStageToy(LightningModule):
    """A 3x3 conv segmenter fitted twice: ``warmup`` (``warmup_epochs``), then ``finetune`` (the trainer's epochs).

    ``finetune`` is produced after ``warmup``'s outcome is known (a generator), with a lower learning
    rate; a skipped ``warmup`` restores its weights from its final checkpoint.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        warmup_epochs: int = 1,
        lr: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Conv2d(3, num_classes or 2, 3, padding=1)
        self.lr = lr
        self.outcomes: list[tuple[str, str]] = []

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net(image)

    def _loss(self, batch: dict) -> torch.Tensor:
        return F.cross_entropy(self(batch["image"]), batch["mask"], ignore_index=255)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:  # noqa: D102
        loss = self._loss(batch)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:  # noqa: D102
        self.log("val/loss", self._loss(batch), sync_dist=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:  # noqa: D102
        self.log("test/loss", self._loss(batch), sync_dist=True)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:  # noqa: D102
        return {"labels": self(batch["image"]).argmax(1), "id": batch["id"]}

    def configure_optimizers(self) -> torch.optim.Optimizer:  # noqa: D102
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def _restore(self, result: StageResult) -> None:
        self.outcomes.append((result.name, result.status))
        if result.status == "skipped":
            state = torch.load(result.final_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
            self.load_state_dict(state)

    def training_stages(self, datamodule: object) -> Generator[Stage, StageResult, None]:
        """``warmup``, then ``finetune`` at a tenth of the learning rate once ``warmup`` is finished."""
        warmup = yield Stage(
            "warmup", self, trainer_overrides={"max_epochs": self.hparams.warmup_epochs}, restore=self._restore
        )
        self.lr = self.hparams.lr / 10
        yield Stage(
            "finetune", self, restore=self._restore, takes_ckpt_path=True, description=f"after {warmup.status} warmup"
        )


class KillAt(Callback):
    """Kill this process with ``signal`` (default SIGKILL) when ``stage`` has done ``step`` optimizer steps."""

    def __init__(self, stage: str, step: int, signal_name: str = "SIGKILL") -> None:
        self.stage, self.step, self.signal_name = stage, step, signal_name

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int) -> None:  # noqa: D102
        if Path(trainer.default_root_dir).name == self.stage and trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal_name))
