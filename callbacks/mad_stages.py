"""The MAD loop's fits as the runner's stages, and where a fit sits in the loop.

:class:`MADStages` is the part of :class:`~segmend.callbacks.MADTroubleshooting` that the runner
(:mod:`segmend.runs`) sees: the stage folders (``mad_competitor_<j>_<arch>``, ``mad_target``,
``mad_round_<k>``, ``mad_complete_<rounds>``), the competitors' checkpoints, the target's starting
weights and the fine-tuning optimizer.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from segmend.checkpoints import load_weights, read_weights
from segmend.mad.state import MADState
from segmend.optim import default_lr_scheduler, default_optimizer
from segmend.runs import Stage, StageResult

STAGE_NAME = re.compile(r"mad_(?P<role>target|round|complete|competitor)(?:_(?P<index>\d+))?(?:_.*)?")
NO_TRAINING = {"limit_train_batches": 0, "limit_val_batches": 0, "num_sanity_val_steps": 0}


def _slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", spec).strip("-")


def _is_checkpoint(spec: str) -> bool:
    return spec.endswith(".ckpt") or Path(spec).is_file()


def _checkpoint_name(spec: str, given: list[str]) -> str:
    """A competitor checkpoint's name: its file's stem, with as many parent folders as make it unique.

    ``runs/voc_fpn/fit/final.ckpt`` beside ``runs/voc_psp/fit/final.ckpt`` is ``voc-fpn-fit-final``.
    """

    def name(path: str, parts: int) -> str:
        return _slug("-".join(Path(path).with_suffix("").parts[-parts:]))

    for parts in range(1, len(Path(spec).parts) + 1):
        if sum(name(other, parts) == name(spec, parts) for other in given) == 1:
            return name(spec, parts)
    return name(spec, len(Path(spec).parts))


class MADStages:
    """The runner's view of the loop (mixed into ``MADTroubleshooting``, whose arguments it reads).

    Attributes read: ``competitors``, ``target_checkpoint``, ``rounds``, ``finetune_steps``,
    ``finetune_lr``, ``run_dir``.
    """

    competitors: list[str]
    target_checkpoint: str | None
    rounds: int
    finetune_steps: int
    finetune_lr: float
    run_dir: Path | None

    def competitor_stage_name(self, index: int, spec: str) -> str:
        """Stage folder of a competitor trained from an ``"Arch:encoder"`` spec."""
        return f"mad_competitor_{index}_{_slug(spec)}"

    def competitor_checkpoints(self, run_dir: Path) -> list[tuple[str, Path]]:
        """``(name, checkpoint)`` of every competitor (trained ones: the stage's ``final.ckpt`` or ``weights.ckpt``)."""
        found = []
        given = [spec for spec in self.competitors if _is_checkpoint(spec)]
        for j, spec in enumerate(self.competitors):
            if _is_checkpoint(spec):
                found.append((_checkpoint_name(spec, given), Path(spec)))
                continue
            folder = run_dir / self.competitor_stage_name(j, spec)
            final = folder / "final.ckpt"
            found.append((_slug(spec), final if final.is_file() else folder / "weights.ckpt"))
        return found

    def training_stages(
        self, module: LightningModule, datamodule: LightningDataModule | None, run_dir: Path
    ) -> Generator[Stage, StageResult, None]:
        """The loop's fits: competitors where missing, the target, ``rounds`` fine-tuning rounds (module doc)."""
        from segmend.modules import SegmentationModule

        run_dir = Path(self.run_dir or run_dir)
        for j, spec in enumerate(self.competitors):
            if _is_checkpoint(spec):
                if not Path(spec).is_file():
                    raise ValueError(f"competitor checkpoint {spec} does not exist; give the path of a .ckpt file.")
                continue
            arch, _, encoder = spec.partition(":")
            shared = module.stage_module_arguments() if hasattr(module, "stage_module_arguments") else {}
            competitor = SegmentationModule(arch=arch, encoder_name=encoder or "resnet18", **shared)
            name = self.competitor_stage_name(j, spec)
            yield Stage(
                name, competitor, restore=partial(_keep_weights, run_dir / name), description=f"competitor {spec}"
            )
        if self.target_checkpoint is None:
            yield Stage("mad_target", module, takes_ckpt_path=True, restore=_load_if_skipped, description="target")
        else:  # a trained target: its weights, no training; the stage's end mines round 0
            load_target_weights(module, self.target_checkpoint)
            yield Stage("mad_target", module, trainer_overrides=NO_TRAINING, restore=_load_if_skipped,
                        description=f"target from {self.target_checkpoint} (no training)")  # fmt: skip
        for k in range(1, self.rounds + 1):
            yield Stage(
                f"mad_round_{k}",
                module,
                trainer_overrides={"max_steps": self.finetune_steps, "max_epochs": -1},
                restore=_load_if_skipped,
                description=f"MAD round {k}: fine-tuning on S",
            )
        if not MADState(run_dir).reached(self.rounds, "evaluated"):
            yield Stage(f"mad_complete_{self.rounds}", module, trainer_overrides=NO_TRAINING,
                        description=f"MAD round {self.rounds}: the steps people were not done with")  # fmt: skip

    def use_finetune_optimizer(self, module: LightningModule) -> None:
        """Fine-tune with SGD (momentum 0.9, weight decay 5e-4, ``finetune_lr``) and poly decay (the paper's)."""
        if not hasattr(module, "optimizer_factory"):
            rank_zero_warn(f"{type(module).__name__} has no optimizer_factory; fine-tuning keeps its optimizer.")
            return
        module.optimizer_factory = partial(default_optimizer, lr=self.finetune_lr)
        module.lr_scheduler_factory = default_lr_scheduler

    def stage_role(self, trainer: Trainer) -> tuple[str, int | None, Path]:
        """``(role, index, run_dir)`` of a fit from its stage folder (``"user"`` outside ``mad_*`` folders)."""
        folder = Path(trainer.default_root_dir)
        found = STAGE_NAME.fullmatch(folder.name)
        if found is None:
            return "user", None, Path(self.run_dir or folder)
        index = found["index"]
        return found["role"], None if index is None else int(index), Path(self.run_dir or folder.parent)


def _load_if_skipped(result: StageResult) -> None:
    """A stage found done: load its final weights into its module (later stages continue from them)."""
    if result.status == "skipped" and result.final_checkpoint is not None and result.module is not None:
        weights = read_weights(result.final_checkpoint, prefix="")
        result.module.load_state_dict(weights.state_dict)


def _keep_weights(folder: Path, result: StageResult) -> None:
    """A competitor trained without a ``final.ckpt`` (``fast_dev_run``): keep its weights as ``weights.ckpt``."""
    if result.final_checkpoint is not None or result.module is None or rank_zero_only.rank != 0:
        return
    folder.mkdir(parents=True, exist_ok=True)
    hparams = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(result.module.hparams).items()}
    torch.save({"state_dict": result.module.state_dict(), "hyper_parameters": hparams}, folder / "weights.ckpt")


def load_target_weights(module: LightningModule, checkpoint: str | Path) -> None:
    """Load a trained target's net from a SegmentationModule checkpoint (the config's model must match it).

    Raises:
        ValueError: If the file is missing or holds another architecture's weights.

    """
    if not Path(checkpoint).is_file():
        raise ValueError(f"target_checkpoint {checkpoint} does not exist; give the path of the trained target's .ckpt.")
    net = getattr(module, "net", None)
    if not isinstance(net, torch.nn.Module):
        raise ValueError(f"{type(module).__name__} has no net to load target_checkpoint {checkpoint} into.")
    hint = "Set the config's model (arch, encoder_name, net_kwargs) to the target checkpoint's architecture."
    load_weights(net, read_weights(checkpoint, prefix="net."), expected="the configured target", hint=hint)
