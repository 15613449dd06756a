"""Per-image measurements of predicted label maps: discrepancy, class areas, entropy.

These run during inference over the pool (a later callback keeps only the per-image numbers
they return, never the maps), so each takes a batch of maps and returns one value per image.

* ``d(f, g)`` (paper Eq. 1) is the per-image mIoU between two predicted maps, averaged over the
  classes present in either map, background included (the official code's definition, see
  DESIGN.md "Facts the papers leave out"). 1 means identical maps; the lowest value is the most
  controversial image.
* Class area fractions are the share of an image's (non-ignored) pixels predicted as each class;
  the content-aware partition bounds them.
* Mean pixel entropy is the ``entropy`` acquisition strategy's statistic.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

IGNORE_INDEX = 255


def _as_label_batch(pred: Tensor | np.ndarray, name: str) -> Tensor:
    """Return ``pred`` as a (B, H, W) long tensor; a single (H, W) map becomes a batch of one."""
    tensor = torch.as_tensor(pred)
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 3:
        raise ValueError(f"{name} must be a (H, W) or (B, H, W) label map; found shape {tuple(tensor.shape)}.")
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class labels; found dtype {tensor.dtype}. Take argmax first.")
    return tensor.long()


def _check_labels(labels: Tensor, valid: Tensor, num_classes: int, name: str) -> None:
    bad = valid & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        found = torch.unique(labels[bad]).tolist()[:10]
        raise ValueError(
            f"{name} holds labels {found} outside 0..{num_classes - 1} that are not the ignore index; "
            "check num_classes."
        )


def pair_confusion(
    pred_a: Tensor | np.ndarray,
    pred_b: Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int | None = IGNORE_INDEX,
) -> Tensor:
    """Per-image confusion matrices between two batches of label maps.

    Args:
        pred_a: (B, H, W) or (H, W) integer labels (rows of the result).
        pred_b: same shape as ``pred_a`` (columns of the result).
        num_classes: number of classes C, background included.
        ignore_index: label excluded from both maps (a pixel ignored in either map is left out);
            ``None`` keeps every pixel.

    Returns:
        (B, C, C) int64 pixel counts, ``[i, a, b]`` = pixels of image i labelled a in ``pred_a``
        and b in ``pred_b``.

    Raises:
        ValueError: If the shapes differ or a label is outside ``0..C-1`` and not ignored.

    """
    a = _as_label_batch(pred_a, "pred_a")
    b = _as_label_batch(pred_b, "pred_b").to(a.device)
    if a.shape != b.shape:
        raise ValueError(f"pred_a and pred_b must have the same shape; found {tuple(a.shape)} and {tuple(b.shape)}.")
    valid = torch.ones_like(a, dtype=torch.bool) if ignore_index is None else (a != ignore_index) & (b != ignore_index)
    _check_labels(a, valid, num_classes, "pred_a")
    _check_labels(b, valid, num_classes, "pred_b")
    batch = a.shape[0]
    image = torch.arange(batch, device=a.device).view(batch, 1, 1).expand_as(a)
    index = (image * num_classes + a) * num_classes + b  # (B, H, W)
    counts = torch.bincount(index[valid], minlength=batch * num_classes * num_classes)
    return counts.view(batch, num_classes, num_classes)


def batch_discrepancy(
    pred_a: Tensor | np.ndarray,
    pred_b: Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int | None = IGNORE_INDEX,
) -> Tensor:
    """The MAD discrepancy d(f, g) of every image in a batch: per-image mIoU between two maps.

    IoU_k = |a=k & b=k| / |a=k or b=k| over the classes present in either map (background
    included), averaged per image. Symmetric in its arguments.

    Args:
        pred_a: (B, H, W) integer labels, e.g. the target's argmax.
        pred_b: (B, H, W) integer labels, e.g. a competitor's argmax.
        num_classes: number of classes C, background included.
        ignore_index: label left out of both maps; ``None`` keeps every pixel.

    Returns:
        (B,) float64 mIoU in [0, 1]; lowest = most controversial. NaN for an image with no
        valid pixel.

    Raises:
        ValueError: See :func:`pair_confusion`.

    """
    confusion = pair_confusion(pred_a, pred_b, num_classes, ignore_index).double()  # (B, C, C)
    intersection = confusion.diagonal(dim1=1, dim2=2)  # (B, C)
    union = confusion.sum(dim=1) + confusion.sum(dim=2) - intersection  # (B, C)
    present = union > 0
    iou = torch.where(present, intersection / union.clamp_min(1), torch.zeros_like(union))
    return iou.sum(dim=1) / present.sum(dim=1)  # 0 / 0 = NaN where nothing is valid


def discrepancy(
    pred_a: Tensor | np.ndarray,
    pred_b: Tensor | np.ndarray,
    num_classes: int | None = None,
    ignore_index: int | None = IGNORE_INDEX,
) -> float:
    """The MAD discrepancy d(f, g) between two (H, W) predicted maps (see :func:`batch_discrepancy`).

    Args:
        pred_a: (H, W) integer labels.
        pred_b: (H, W) integer labels.
        num_classes: number of classes; ``None`` takes the largest non-ignored label + 1.
        ignore_index: label left out of both maps; ``None`` keeps every pixel.

    Returns:
        mIoU over the classes present in either map, in [0, 1] (NaN if no pixel is valid).

    Raises:
        ValueError: If a map is not (H, W) or the shapes differ.

    """
    a, b = torch.as_tensor(pred_a), torch.as_tensor(pred_b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(
            f"discrepancy takes two (H, W) maps; found shapes {tuple(a.shape)} and {tuple(b.shape)}. "
            "Use batch_discrepancy for batches."
        )
    if num_classes is None:
        labels = torch.cat([a.flatten(), b.flatten()]).long()
        labels = labels[labels != ignore_index] if ignore_index is not None else labels
        num_classes = int(labels.max()) + 1 if labels.numel() else 1
    return float(batch_discrepancy(a, b, num_classes, ignore_index)[0])


def class_fractions(
    pred: Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int | None = IGNORE_INDEX,
) -> Tensor:
    """Per-image area fraction of each class in label maps (predictions or training masks).

    Args:
        pred: (B, H, W) or (H, W) integer labels.
        num_classes: number of classes C, background included.
        ignore_index: label left out of numerator and denominator; ``None`` keeps every pixel.

    Returns:
        (B, C) float64 fractions of the image's valid pixels (rows sum to 1; all zeros for an
        image with no valid pixel). A (H, W) input gives (1, C).

    Raises:
        ValueError: If a label is outside ``0..C-1`` and not ignored.

    """
    labels = _as_label_batch(pred, "pred")
    valid = torch.ones_like(labels, dtype=torch.bool) if ignore_index is None else labels != ignore_index
    _check_labels(labels, valid, num_classes, "pred")
    batch = labels.shape[0]
    image = torch.arange(batch, device=labels.device).view(batch, 1, 1).expand_as(labels)
    counts = torch.bincount((image * num_classes + labels)[valid], minlength=batch * num_classes)
    counts = counts.view(batch, num_classes).double()  # (B, C)
    return counts / counts.sum(dim=1, keepdim=True).clamp_min(1)


def mean_pixel_entropy(probs: Tensor, eps: float = 1e-12) -> Tensor:
    """Mean over pixels of the Shannon entropy of the class probabilities (nats).

    Args:
        probs: (B, C, H, W) class probabilities (softmax output).
        eps: floor inside the logarithm.

    Returns:
        (B,) mean pixel entropy; higher = more uncertain.

    Raises:
        ValueError: If ``probs`` is not 4-D.

    """
    if probs.ndim != 4:
        raise ValueError(f"probs must be (B, C, H, W) probabilities; found shape {tuple(probs.shape)}.")
    entropy = -(probs * probs.clamp_min(eps).log()).sum(dim=1)  # (B, H, W)
    return entropy.flatten(1).mean(dim=1)
