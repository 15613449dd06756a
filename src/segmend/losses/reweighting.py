"""Normalisation of pixel weight maps and the weighted loss sum of ARM."""

from __future__ import annotations

from torch import Tensor


def normalise_weights(weights: Tensor, valid: Tensor, p: float = 2.0) -> Tensor:
    """Divide a weight map by its p-norm, then by its detached L1 norm.

    The p-norm division (p > 1) is the constraint under which ARM converges (Hoelder's
    inequality); the second division keeps the weighted loss at the magnitude of a plain mean.
    It is detached, otherwise the two divisions cancel into a plain L1 normalisation, which
    diverges. Forward values sum to 1 over the valid pixels of the batch.

    Args:
        weights: (B, 1, H, W) or (B, H, W) non-negative weights.
        valid: Boolean mask of the same number of elements; pixels outside get weight 0.
        p: Norm of the first division.

    Returns:
        Normalised weights shaped like ``valid``.

    """
    if p <= 0:
        raise ValueError(f"norm p must be positive, got {p}.")
    w = weights.reshape(valid.shape) * valid
    w = w / w.norm(p=p).clamp_min(1e-12)
    return w / w.sum().detach().clamp_min(1e-12)


def weighted_sum(weights: Tensor, pixel_loss: Tensor) -> Tensor:
    """``sum_i w_i l_i`` over the batch."""
    return (weights * pixel_loss).sum()
