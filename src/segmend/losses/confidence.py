"""Per-pixel confidence indicators computed from class probabilities, scaled to [-1, 1]."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from segmend.precision import fp32

ConfidenceKind = Literal["var", "std", "logvar", "entropy"]
LOGVAR_FLOOR = 1e-6


def confidence_map(probs: Tensor, kind: ConfidenceKind = "var", detach: bool = True) -> Tensor:
    """Confidence of each pixel's prediction, 1 = one class certain, -1 = all classes equal.

    ``var`` is the variance of the C class probabilities, ``mean_c (p_c - 1/C)^2`` in
    ``[0, (C-1)/C^2]``, mapped linearly to [-1, 1] by ``2C^2/(C-1) * var - 1`` (ARM, Eq. 3 and
    Fig. 5). ``std`` and ``logvar`` map the square root and the logarithm (floored at 1e-6) of
    the same variance linearly onto [-1, 1]; ``entropy`` maps ``-sum p log p`` from
    ``[0, log C]`` to ``[1, -1]`` so that high values still mean confident.

    Computed in fp32 (bf16/fp16 probabilities are cast first): bf16 keeps 8 significant bits, so
    it rounds away deviations from ``1/C`` below about 0.3% of it, and maps every confidence within
    0.002 of -1 to -1; small variances would be lost.

    Args:
        probs: (B, C, H, W) class probabilities.
        kind: Which statistic to use.
        detach: Compute on detached probabilities (the default; not detaching lets the network
            lower its weights by changing its confidence, which collapses training).

    Returns:
        (B, 1, H, W) confidence in [-1, 1].

    """
    if detach:
        probs = probs.detach()
    probs = fp32(probs)
    num_classes = probs.shape[1]
    if num_classes < 2:
        raise ValueError(f"confidence needs at least 2 classes, got {num_classes}.")
    max_var = (num_classes - 1) / num_classes**2
    if kind == "entropy":
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1, keepdim=True)
        return 1.0 - 2.0 * entropy / math.log(num_classes)
    var = (probs - 1.0 / num_classes).pow(2).mean(dim=1, keepdim=True)
    if kind == "var":
        return 2.0 * var / max_var - 1.0
    if kind == "std":
        return 2.0 * var.clamp_min(0).sqrt() / math.sqrt(max_var) - 1.0
    if kind == "logvar":
        low, high = math.log(LOGVAR_FLOOR), math.log(max_var)
        return 2.0 * (torch.log(var.clamp_min(LOGVAR_FLOOR)) - low) / (high - low) - 1.0
    raise ValueError(f"Unknown confidence kind {kind!r}; expected var, std, logvar or entropy.")


def uncertainty_confidence(log_s: Tensor, detach: bool = True) -> Tensor:
    """Confidence in [-1, 1] from the KL loss's predicted uncertainty ``s`` (``log s`` given).

    The KL loss is minimised at ``s = -2 log p_gt``, so ``exp(-s / 2)`` is the head's estimate of
    the true-class probability, in (0, 1]. It is mapped linearly to ``2 exp(-s / 2) - 1``:
    1 for ``s -> 0`` (certain and right), -1 for ``s -> inf`` (the head expects a large loss).

    Args:
        log_s: (B, 1, H, W) predicted ``log s``.
        detach: Compute on the detached uncertainty (the default, as for the other indicators).

    Returns:
        (B, 1, H, W) confidence in [-1, 1].

    """
    if detach:
        log_s = log_s.detach()
    return 2.0 * torch.exp(-0.5 * fp32(log_s).exp()) - 1.0
