"""ARM's negative learning rate follows the network's under every schedule segmend accepts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch import nn
from torch.optim import lr_scheduler as sched

from segmend.modules import ARMModule
from segmend.optim import PolyLR, WarmupStepLR

MULTIPLIER = 2.0
EPOCHS = 3  # tiny_synthetic: 8 training images in batches of 4, so 6 optimizer steps

SCHEDULES: dict[str, Callable] = {
    "PolyLR": lambda opt: PolyLR(opt),
    "WarmupStepLR": lambda opt: WarmupStepLR(opt, warmup_fraction=0.5),
    "StepLR": lambda opt: sched.StepLR(opt, step_size=2, gamma=0.5),
    "MultiStepLR": lambda opt: sched.MultiStepLR(opt, milestones=[1, 3], gamma=0.5),
    "ExponentialLR": lambda opt: sched.ExponentialLR(opt, gamma=0.8),
    "LambdaLR": lambda opt: sched.LambdaLR(opt, lambda step: 1.0 / (1 + step)),
    "LinearLR": lambda opt: sched.LinearLR(opt, start_factor=0.1, total_iters=3),
    "PolynomialLR": lambda opt: sched.PolynomialLR(opt, total_iters=6, power=2.0),
    "CosineAnnealingLR": lambda opt: sched.CosineAnnealingLR(opt, T_max=6, eta_min=1e-4),
    "CosineAnnealingWarmRestarts": lambda opt: sched.CosineAnnealingWarmRestarts(opt, T_0=2, eta_min=1e-4),
    "OneCycleLR": lambda opt: sched.OneCycleLR(opt, max_lr=0.05, total_steps=2 * EPOCHS),
    "CyclicLR": lambda opt: sched.CyclicLR(opt, base_lr=1e-3, max_lr=1e-2, step_size_up=2),
    "SequentialLR": lambda opt: sched.SequentialLR(
        opt, [sched.LinearLR(opt, start_factor=0.1, total_iters=2), sched.ExponentialLR(opt, 0.7)], milestones=[2]
    ),
    # threshold 1 (absolute) on mIoU: no epoch after the first counts as an improvement
    "ReduceLROnPlateau": lambda opt: sched.ReduceLROnPlateau(
        opt, mode="max", factor=0.5, patience=0, threshold=1.0, threshold_mode="abs"
    ),
}


class LrTrace(Callback):
    """Both groups' lr wherever Lightning may have changed them, and right before each optimizer step."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, float, float]] = []

    def _record(self, trainer: Trainer, where: str) -> None:
        lrs = {group["name"]: group["lr"] for group in trainer.optimizers[0].param_groups}
        self.rows.append((where, trainer.global_step, lrs["net"], lrs["arm"]))

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001, D102
        self._record(trainer, "train start")

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001, D102
        self._record(trainer, "epoch start")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001, D102
        self._record(trainer, "optimizer step")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001, D102
        self._record(trainer, "after the schedule's step")

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001, D102
        self._record(trainer, "train end")


def fit_with(schedule: Callable, datamodule, tmp_path: Path) -> list[tuple[str, int, float, float]]:
    torch.manual_seed(0)
    module = ARMModule(
        num_classes=6,
        net=nn.Conv2d(3, 6, 3, padding=1),
        arm_lr_multiplier=MULTIPLIER,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4),
        lr_scheduler=schedule,
    )
    trace = LrTrace()
    trainer = Trainer(
        max_epochs=EPOCHS,
        logger=False,
        callbacks=[trace],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 2 * EPOCHS
    return trace.rows


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_arm_lr_is_minus_multiplier_times_net_lr_at_every_step(name: str, tiny_synthetic, tmp_path: Path):
    rows = fit_with(SCHEDULES[name], tiny_synthetic, tmp_path)
    assert sum(where == "optimizer step" for where, *_ in rows) == 2 * EPOCHS
    for where, step, net_lr, arm_lr in rows:
        assert net_lr >= 0, (where, step, net_lr)  # PolyLR reaches 0 after the last step
        assert arm_lr == pytest.approx(-MULTIPLIER * net_lr, rel=1e-9, abs=0.0), (where, step, net_lr, arm_lr)
    assert len({round(net_lr, 12) for *_, net_lr, _ in rows}) > 1, f"{name} never changed the lr in this fit"


def test_reduce_on_plateau_decays_arm_lr_too(tiny_synthetic, tmp_path: Path):
    rows = fit_with(SCHEDULES["ReduceLROnPlateau"], tiny_synthetic, tmp_path)
    (_, _, first_net, first_arm), (_, _, last_net, last_arm) = rows[0], rows[-1]
    assert (first_net, last_net) == pytest.approx((0.01, 0.0025))  # halved after epochs 2 and 3
    assert (first_arm, last_arm) == pytest.approx((-0.02, -0.005))


def test_reduce_on_plateau_must_maximise_miou(tiny_synthetic, tmp_path: Path):
    module = ARMModule(
        num_classes=6,
        net=nn.Conv2d(3, 6, 3, padding=1),
        lr_scheduler=lambda opt: sched.ReduceLROnPlateau(opt),  # mode="min" by default
    )
    trainer = Trainer(max_epochs=1, logger=False, enable_checkpointing=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="mode: max"):
        trainer.fit(module, datamodule=tiny_synthetic)
