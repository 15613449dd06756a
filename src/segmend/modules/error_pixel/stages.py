"""The stages of erroneous-pixel prediction: semantic, error, detail (run by :func:`segmend.runs.fit`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args

from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from segmend.checkpoints import read_weights
from segmend.modules.segmentation import SegmentationModule
from segmend.runs import Stage as RunStage
from segmend.runs import StageResult

Phase = Literal["error", "detail"]
TrainingStage = Literal["semantic", "error", "detail"]


class ErrorPixelStages:
    """The stages and phases of :class:`~segmend.modules.error_pixel.ErrorPixelModule` (a mixin of it)."""

    def build_semantic_module(self) -> SegmentationModule:
        """The ``semantic`` stage's :class:`SegmentationModule`: this architecture, classes, optimizer, schedule."""
        hp = self.hparams
        return SegmentationModule(
            **self.stage_module_arguments(),
            arch=hp.arch,
            encoder_name=hp.encoder_name,
            encoder_weights=hp.encoder_weights,
            net_kwargs=hp.net_kwargs,
        )

    def load_semantic(self, path: str | Path) -> None:
        """Load the semantic branch's weights from a :class:`SegmentationModule` checkpoint (tensors only).

        Raises:
            ValueError: If the file is missing or refused, or its net is not this semantic architecture.

        """
        hp = self.hparams
        self.net.load_checkpoint(
            path,
            prefix="net.",
            expected=f"this semantic net ({self.semantic_architecture}, {hp.encoder_name}, {self.num_classes} classes)",
            hint="Give semantic_checkpoint to build the net from the checkpoint's own hyper-parameters.",
        )
        self.semantic_ready.fill_(True)

    def set_semantic(self, module: SegmentationModule) -> None:
        """Copy a trained :class:`SegmentationModule`'s net into the semantic branch."""
        self.net.module.load_state_dict(module.net.state_dict())
        self.semantic_ready.fill_(True)

    def set_phase(self, phase: Phase) -> None:
        """Train the ``"error"`` or the ``"detail"`` branch; the other one gets no gradient and no optimizer.

        ``"detail"`` also switches the prediction to the fused one (``detail_active``).

        Raises:
            ValueError: For another phase.

        """
        if phase not in get_args(Phase):
            raise ValueError(f"phase must be one of {get_args(Phase)}, got {phase!r}.")
        self.phase = phase
        self.error_branch.requires_grad_(phase == "error")
        self.detail_branch.requires_grad_(phase == "detail")
        if phase == "detail":
            self.detail_active.fill_(True)

    def trainable_branch(self) -> nn.Module:
        """The branch of the current phase."""
        return self.error_branch if self.phase == "error" else self.detail_branch

    def stage_overrides(self, stage: TrainingStage) -> dict[str, int]:
        """Trainer arguments of a stage: ``max_steps`` or ``max_epochs`` from ``<stage>_steps`` / ``<stage>_epochs``."""
        steps, epochs = self.hparams[f"{stage}_steps"], self.hparams[f"{stage}_epochs"]
        if steps is not None:
            return {"max_steps": int(steps), "max_epochs": -1}
        if epochs is not None:
            return {"max_epochs": int(epochs), "max_steps": -1}
        return {}

    def training_stages(self, datamodule: Any) -> Iterator[RunStage]:
        """The stages for :func:`segmend.runs.run_stages`: ``semantic`` (without a checkpoint), ``error``, ``detail``.

        ``segmend fit`` runs them because this method exists (:class:`segmend.runs.HasTrainingStages`).
        A finished ``semantic`` stage hands its net to the frozen semantic branch through its final
        checkpoint; a finished ``error`` or ``detail`` stage found by a re-run restores this module's
        weights from its final checkpoint.
        """
        hp = self.hparams
        stages = []
        if hp.semantic_checkpoint is None:
            stages.append(
                RunStage(
                    "semantic",
                    self.build_semantic_module(),
                    trainer_overrides=self.stage_overrides("semantic"),
                    restore=self.restore_semantic,
                    description=f"supervised {hp.arch} / {hp.encoder_name}, the semantic branch",
                )
            )
        for phase, about in (("error", "error branch, Eq. 2"), ("detail", "detail branch, Eqs. 3-4")):
            stages.append(
                RunStage(
                    phase,
                    self,
                    prepare=self.phase_preparation(phase),
                    trainer_overrides=self.stage_overrides(phase),
                    restore=self.restore_branches,
                    description=f"{about}; semantic branch frozen",
                )
            )
        return iter(stages)

    def phase_preparation(self, phase: Phase):  # noqa: ANN201
        """The ``prepare`` of a stage: set the phase before its fit."""

        def prepare(datamodule: Any) -> None:
            self.set_phase(phase)

        return prepare

    def restore_semantic(self, result: StageResult) -> None:
        """After the ``semantic`` stage: load its final checkpoint into the frozen semantic branch.

        A ``fast_dev_run`` writes no final checkpoint; the trained module's net is copied then.
        """
        final = result.final_checkpoint
        if final is not None and Path(final).is_file():
            self.load_semantic(final)
        elif result.module is not None:
            self.set_semantic(result.module)

    def restore_branches(self, result: StageResult) -> None:
        """After the ``error`` / ``detail`` stage: restore a finished stage's weights; mark the error branch trained."""
        if result.status == "skipped" and result.final_checkpoint is not None:
            self.load_state_dict(read_weights(result.final_checkpoint, prefix="").state_dict)
        if result.name == "error":
            self.error_ready.fill_(True)

    def on_train_end(self) -> None:
        """After the error phase's training: mark the error branch trained, so the stage's final checkpoint says so."""
        if self.phase == "error" and not self.trainer.interrupted:
            self.error_ready.fill_(True)

    def on_train_start(self) -> None:
        """Check that the branches this phase reads are trained.

        Raises:
            ValueError: Without a trained semantic branch, or in the detail phase without a trained error branch.

        """
        if not bool(self.semantic_ready):
            raise ValueError(
                "ErrorPixelModule has no trained semantic branch: set semantic_checkpoint to a SegmentationModule "
                "checkpoint, or train with `segmend fit` / segmend.runs.fit, which train it first."
            )
        if self.phase == "detail" and not bool(self.error_ready):
            raise ValueError(
                "The detail phase reads the error branch's predictions, but the error branch is not trained: "
                "train the 'error' stage first (`segmend fit` runs every stage)."
            )
        rank_zero_info(
            f"ErrorPixelModule: training the {self.phase} branch "
            f"({sum(p.numel() for p in self.trainable_branch().parameters())} parameters); the semantic "
            f"{self.semantic_architecture} is frozen."
        )
