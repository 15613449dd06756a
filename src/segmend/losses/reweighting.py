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


def holder_optimal_weights(mean_loss: Tensor, counts: Tensor, p: float = 2.0) -> Tensor:
    """Closed-form maximiser of ``sum_i w(v_i) l_i`` under ``||w||_p = 1`` over binned confidences.

    With bins k holding ``n_k`` pixels of mean loss ``L_k``, the objective is
    ``sum_k n_k w_k L_k`` and the constraint ``sum_k n_k w_k^p = 1``; Hoelder's inequality gives
    ``w_k = L_k^(1/(p-1)) / (sum_j n_j L_j^(p/(p-1)))^(1/p)``.

    Args:
        mean_loss: (K,) mean loss per confidence bin.
        counts: (K,) pixels per bin; empty bins get weight 0.
        p: The norm (> 1).

    Returns:
        (K,) optimal weight per bin.

    """
    if p <= 1:
        raise ValueError(f"Hoelder's closed form needs p > 1, got {p}.")
    occupied = counts > 0
    shape = mean_loss.clamp_min(0).pow(1.0 / (p - 1)) * occupied
    norm = (counts * shape.pow(p)).sum().pow(1.0 / p).clamp_min(1e-12)
    return shape / norm
