"""Per-pixel losses (reduction left to the caller); ignored pixels get loss 0."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cross_entropy_map(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """(B, C, H, W) logits, (B, H, W) labels -> (B, H, W) cross-entropy."""
    return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")


def gce_map(logits: Tensor, target: Tensor, q: float = 0.1, ignore_index: int = 255) -> Tensor:
    """Generalised cross-entropy ``(1 - p_gt^q) / q`` per pixel (Zhang & Sabuncu, 2018).

    q -> 0 gives cross-entropy, q = 1 the mean absolute error.
    """
    if not 0 < q <= 1:
        raise ValueError(f"GCE q must be in (0, 1], got {q}.")
    valid = target != ignore_index
    safe = target.masked_fill(~valid, 0)
    p_gt = logits.softmax(dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    return ((1.0 - p_gt.clamp_min(1e-12).pow(q)) / q) * valid
