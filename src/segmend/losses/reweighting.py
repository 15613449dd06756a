"""Normalisation of pixel weight maps and the weighted loss sum of ARM."""

from __future__ import annotations

import torch
from torch import Tensor

from segmend.precision import fp32


def normalise_weights(weights: Tensor, valid: Tensor, p: float = 2.0) -> Tensor:
    """Divide a weight map by its p-norm, then by its detached L1 norm.

    The p-norm division (p > 1) is the constraint under which ARM converges (Hoelder's
    inequality); the second division keeps the weighted loss at the magnitude of a plain mean.
    It is detached, otherwise the two divisions cancel into a plain L1 normalisation, which
    diverges. Forward values sum to 1 over the valid pixels of the batch. Computed in fp32
    (bf16/fp16 weights are cast first).

    Args:
        weights: (B, 1, H, W) or (B, H, W) non-negative weights.
        valid: Boolean mask of the same number of elements; pixels outside get weight 0.
        p: Norm of the first division.

    Returns:
        Normalised weights shaped like ``valid``.

    """
    if p <= 0:
        raise ValueError(f"norm p must be positive, got {p}.")
    w = fp32(weights).reshape(valid.shape) * valid
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


class LossByConfidence:
    """Running histogram of pixel loss over confidence bins in [-1, 1].

    Args:
        num_bins: Number of equal-width bins.

    """

    def __init__(self, num_bins: int = 20) -> None:
        self.edges = torch.linspace(-1.0, 1.0, num_bins + 1)
        self.loss_sum = torch.zeros(num_bins, dtype=torch.float64)
        self.count = torch.zeros(num_bins, dtype=torch.float64)

    @property
    def centres(self) -> Tensor:
        """(K,) bin centres."""
        return (self.edges[:-1] + self.edges[1:]) / 2

    def update(self, confidence: Tensor, loss: Tensor, valid: Tensor) -> None:
        """Add the valid pixels of a batch (all tensors with the same number of elements)."""
        conf = confidence.detach().reshape(-1)[valid.reshape(-1)].float().cpu()
        values = loss.detach().reshape(-1)[valid.reshape(-1)].double().cpu()
        index = torch.bucketize(conf.clamp(-1, 1), self.edges[1:-1])
        self.loss_sum.index_add_(0, index, values)
        self.count.index_add_(0, index, torch.ones_like(values))

    def mean_loss(self) -> Tensor:
        """(K,) mean loss per bin (0 for empty bins)."""
        return self.loss_sum / self.count.clamp_min(1)

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.loss_sum.zero_()
        self.count.zero_()
