"""Optimizer and learning-rate schedule defaults shared by every segmend module."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def default_optimizer(params: Iterable[Any], **overrides: Any) -> Optimizer:
    """Build the default optimizer: SGD, lr 0.01, momentum 0.9, weight decay 5e-4.

    Args:
        params: Parameters or parameter-group dicts.
        **overrides: Further arguments for ``torch.optim.SGD`` (for example ``fused=True``).

    Returns:
        The optimizer.

    """
    return torch.optim.SGD(params, **{"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, **overrides})


def build_fused_if_supported(
    factory: Callable[..., Optimizer], params: Iterable[Any], gradient_scaling: bool = False
) -> Optimizer:
    """Build an optimizer with its fused kernel when the user chose no kernel and the device has one.

    torch's ``Adam``, ``AdamW`` and ``SGD`` (among others) update every parameter in one fused
    kernel when built with ``fused=True``; on CPU, torch's default is the slower ``foreach``
    kernel. ``bench/optimizer.py`` times both on the baseline net's parameters
    (``docs/results/optimizer.md``): the fused step is several times faster for AdamW and SGD,
    and the parameters agree to float rounding.

    A choice the user made is kept: an optimizer built with ``fused`` or ``foreach`` set (either
    value) is returned as built. So is one whose class has no fused kernel, or whose parameters
    are on a device the kernel does not support (the second build raises and is dropped), and
    one on CPU under a gradient scaler (``16-mixed``), which torch's CPU fused kernels refuse at
    the first step.

    Args:
        factory: Builds the optimizer from parameters; extra keyword arguments go to the
            optimizer's constructor (as with a ``class_path`` optimizer from a config, or
            :func:`default_optimizer`).
        params: Parameters or parameter-group dicts.
        gradient_scaling: Whether a gradient scaler will step the optimizer (``16-mixed``).

    Returns:
        The optimizer, fused when possible.

    """
    params = list(params)
    optimizer = factory(params)
    chosen = {key: optimizer.defaults.get(key) for key in ("fused", "foreach")}
    if "fused" not in optimizer.defaults or any(value is not None for value in chosen.values()):
        return optimizer
    on_cpu = all(p.device.type == "cpu" for group in optimizer.param_groups for p in group["params"])
    if gradient_scaling and on_cpu:
        return optimizer
    try:
        return factory(params, fused=True)
    except (TypeError, RuntimeError, ValueError):  # no such argument, or an unsupported device / dtype
        return optimizer


class TotalStepsAware:
    """Mixin for schedules whose shape depends on the total number of optimizer steps.

    A module that builds such a schedule calls :meth:`bind_total_steps` with the trainer's
    ``estimated_stepping_batches`` when the schedule was configured without ``total_steps``.
    """

    total_steps: int | None

    def bind_total_steps(self, total_steps: int) -> None:
        """Set the total number of steps if the user did not give one.

        Args:
            total_steps: Number of optimizer steps of the whole fit.

        """
        if self.total_steps is None:
            self.total_steps = max(1, int(total_steps))


class PolyLR(TotalStepsAware, LambdaLR):
    """Polynomial decay ``lr = base_lr * (1 - step / total_steps) ** power``, stepped per batch.

    Args:
        optimizer: The wrapped optimizer.
        total_steps: Steps over which lr decays to ``min_lr_ratio * base_lr``; ``None`` takes
            the trainer's estimate of the whole fit.
        power: Exponent of the decay (0.9 as in DeepLab).
        min_lr_ratio: Floor of the multiplier.

    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        power: float = 0.9,
        min_lr_ratio: float = 0.0,
    ) -> None:
        if total_steps is not None and total_steps < 1:
            raise ValueError(f"PolyLR total_steps must be >= 1 or null, got {total_steps}.")
        self.total_steps = total_steps
        self.power = power
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, self._multiplier)

    def _multiplier(self, step: int) -> float:
        total = self.total_steps or 1
        progress = min(step, total) / total
        return max(self.min_lr_ratio, (1.0 - progress) ** self.power)


def default_lr_scheduler(optimizer: Optimizer) -> PolyLR:
    """Build the default schedule: polynomial decay with power 0.9 over the whole fit.

    Args:
        optimizer: The optimizer to schedule.

    Returns:
        The schedule; its total steps are bound by the module once the trainer is known.

    """
    return PolyLR(optimizer)


class WarmupStepLR(TotalStepsAware, LambdaLR):
    """Linear warm-up then step decay at fractions of the fit (the ARM paper's policy).

    The multiplier rises linearly from ``warmup_start`` to 1 over the first ``warmup_fraction``
    of the steps, then is multiplied by ``gamma`` at each fraction in ``milestones``
    (defaults: from lr/100 over 5%, x0.1 at 60%, x0.01 at 90%). Negative learning rates (ARM's
    group) are scaled the same way.

    Args:
        optimizer: The wrapped optimizer.
        total_steps: Steps of the whole fit; ``None`` takes the trainer's estimate.
        warmup_fraction: Fraction of the steps spent warming up.
        warmup_start: Multiplier at step 0.
        milestones: Fractions of the steps at which the multiplier drops.
        gamma: Factor applied at each milestone.

    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        warmup_fraction: float = 0.05,
        warmup_start: float = 0.01,
        milestones: tuple[float, ...] = (0.6, 0.9),
        gamma: float = 0.1,
    ) -> None:
        if not 0 <= warmup_fraction < 1 or any(not 0 < m <= 1 for m in milestones):
            raise ValueError(
                f"warmup_fraction must be in [0, 1) and milestones in (0, 1]; got {warmup_fraction}, {milestones}."
            )
        self.total_steps = total_steps
        self.warmup_fraction = warmup_fraction
        self.warmup_start = warmup_start
        self.milestones = tuple(sorted(milestones))
        self.gamma = gamma
        super().__init__(optimizer, self._multiplier)

    def _multiplier(self, step: int) -> float:
        total = self.total_steps or 1
        warmup_steps = self.warmup_fraction * total
        if step < warmup_steps:
            return self.warmup_start + (1.0 - self.warmup_start) * step / warmup_steps
        drops = sum(step >= m * total for m in self.milestones)
        return self.gamma**drops


def describe_optimization(optimizer: Optimizer, scheduler: Any) -> str:
    """One line naming the optimizer, each parameter group's lr and weight decay, and the schedule.

    Printed when a fit starts, so that the lr in use is never a surprise (changing only the
    optimizer's class on the command line keeps the config's ``init_args``, its lr included).

    Args:
        optimizer: The built optimizer.
        scheduler: The built schedule.

    Returns:
        For example ``"Optimizer: AdamW, lr 0.003, weight_decay 0.0001; schedule: PolyLR; fused kernel"``.

    """
    groups = []
    for index, group in enumerate(optimizer.param_groups):
        name = group.get("name", f"group {index}") if len(optimizer.param_groups) > 1 else ""
        settings = f"lr {group['lr']:g}, weight_decay {group.get('weight_decay', 0.0):g}"
        groups.append(f"{name}: {settings}" if name else settings)
    kernel = "; fused kernel" if optimizer.defaults.get("fused") else ""
    return f"Optimizer: {type(optimizer).__name__}, {'; '.join(groups)}; schedule: {type(scheduler).__name__}{kernel}"
