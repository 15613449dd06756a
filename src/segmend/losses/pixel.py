"""Per-pixel losses (reduction left to the caller); ignored pixels get loss 0.

The exception is :func:`loss_rank_cross_entropy`, whose pixel selection is its reduction.

All are computed in fp32: bf16/fp16 inputs (mixed precision) are cast first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from segmend.precision import fp32


def cross_entropy_map(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """(B, C, H, W) logits, (B, H, W) labels -> (B, H, W) cross-entropy."""
    return F.cross_entropy(fp32(logits), target, ignore_index=ignore_index, reduction="none")


def gce_map(logits: Tensor, target: Tensor, q: float = 0.1, ignore_index: int = 255) -> Tensor:
    """Generalised cross-entropy ``(1 - p_gt^q) / q`` per pixel (Zhang & Sabuncu, 2018).

    q -> 0 gives cross-entropy, q = 1 the mean absolute error.
    """
    if not 0 < q <= 1:
        raise ValueError(f"GCE q must be in (0, 1], got {q}.")
    valid = target != ignore_index
    safe = target.masked_fill(~valid, 0)
    p_gt = fp32(logits).softmax(dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    return ((1.0 - p_gt.clamp_min(1e-12).pow(q)) / q) * valid


def kl_uncertainty_map(logits: Tensor, log_s: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """KL (aleatoric uncertainty) loss ``CE / s + 0.5 * log s`` per pixel (Kendall et al., 2018).

    For a fixed cross-entropy the loss is smallest at ``s = 2 CE``, so ``s`` learns to predict
    ``-2 log p_gt``: a confident, correct pixel gets a small ``s`` and hence a large weight ``1/s``
    on its cross-entropy (ARM paper, Sec. 3.1). Values can be negative (``log s < 0``).

    Args:
        logits: (B, C, H, W) class logits.
        log_s: (B, 1, H, W) or (B, H, W) predicted ``log s``.
        target: (B, H, W) labels.
        ignore_index: Label of unlabeled pixels (loss 0 there).

    Returns:
        (B, H, W) loss per pixel.

    Raises:
        ValueError: If ``log_s`` does not match the labels' shape.

    """
    if log_s.ndim == 4:
        log_s = log_s.squeeze(1)
    if log_s.shape != target.shape:
        raise ValueError(
            f"log s has shape {tuple(log_s.shape)} but the labels have {tuple(target.shape)}; resize the "
            "uncertainty map to the label resolution first."
        )
    log_s = fp32(log_s)
    valid = target != ignore_index
    ce = cross_entropy_map(logits, target, ignore_index)
    return (torch.exp(-log_s) * ce + 0.5 * log_s) * valid


def loss_rank_cross_entropy(logits: Tensor, target: Tensor, fraction: float = 0.2, ignore_index: int = 255) -> Tensor:
    """Cross-entropy of the hardest pixels only: loss-rank mining (Yu et al., 2018), a scalar.

    The per-pixel cross-entropy of every labelled pixel of the batch is ranked; the ``fraction``
    share with the highest loss (``round(fraction * n)`` of ``n`` labelled pixels, at least one)
    counts, and the loss is their mean. Which pixels count is decided without gradient; ties are
    broken arbitrarily (they do not change the value). ``fraction=1`` is the plain mean
    cross-entropy over the labelled pixels. The error-pixel paper trains its "Hard-mining" baseline
    with ``fraction=0.2`` (Sec. 5.2). The ranking is over the tensors given, i.e. the batch of one
    process under DDP.

    Args:
        logits: (B, C, H, W) class logits.
        target: (B, H, W) labels, ``ignore_index`` where unlabeled.
        fraction: Share of the labelled pixels that counts, in (0, 1].
        ignore_index: Label of unlabeled pixels.

    Returns:
        The fp32 loss; 0 (connected to ``logits``, zero gradient) when no pixel is labelled.

    Raises:
        ValueError: If ``fraction`` is outside (0, 1].

    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"The loss-rank fraction must be in (0, 1] (0.2 in the paper), got {fraction}.")
    ce = cross_entropy_map(logits, target, ignore_index)  # (B, H, W) fp32, 0 where ignored
    losses = ce[target != ignore_index]  # (n,)
    if losses.numel() == 0:
        return ce.sum() * 0.0
    kept = max(1, round(fraction * losses.numel()))
    return losses.topk(kept, sorted=False).values.mean()
