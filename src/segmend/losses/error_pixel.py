"""Losses of erroneous pixel prediction (Gong et al., 2021): error target, balanced error loss, detail loss.

* :func:`error_target` (Eq. 1): a pixel is erroneous where the semantic label differs from the
  ground truth; unlabeled pixels keep the ignore index.
* :func:`balanced_error_loss` (Eq. 2): binary cross-entropy of the error-prediction branch with
  weight ``w1`` on easy errors, ``w2`` on hard errors (semantic max probability above ``rho``) and
  ``w3`` on correct pixels, ``w3`` being each image's error proportion (:func:`error_pixel_weights`).
* :func:`detail_loss` (Eqs. 3-4): cross-entropy of the detail branch on the pixels whose predicted
  error probability exceeds ``t``.

Everything is computed in fp32: fp16/bf16 inputs (mixed precision) are cast first.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from segmend.losses.pixel import cross_entropy_map
from segmend.nets.error_pixel import ERROR_THRESHOLD, as_error_map, check_threshold, error_mask
from segmend.precision import fp32

#: ``rho``: an erroneous pixel whose semantic max probability exceeds it is "hard" (the paper, after LC).
HARD_CONFIDENCE = 0.95
#: ``w1``: the weight of easy erroneous pixels in Eq. 2.
EASY_WEIGHT = 1.0
#: ``w2``: the weight of hard erroneous pixels in Eq. 2.
HARD_WEIGHT = 1.5

Reduction = Literal["mean", "sum", "none"]


def check_same_size(name: str, tensor: Tensor, target: Tensor) -> None:
    """Raise unless ``tensor``'s batch and (H, W) equal those of the (B, H, W) labels.

    Raises:
        ValueError: If they differ.

    """
    found = (tensor.shape[0], *tensor.shape[-2:])
    if tensor.ndim < 3 or found != tuple(target.shape):
        raise ValueError(
            f"Shape mismatch: {name} {tuple(tensor.shape)} against labels {tuple(target.shape)}; resize {name} "
            "to the labels' (H, W) first."
        )


def error_target(semantic: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """The ground-truth error map ``M_err`` of Eq. 1.

    Args:
        semantic: (B, C, H, W) semantic scores (probabilities or logits; their argmax is the label)
            or (B, H, W) semantic labels.
        target: (B, H, W) ground-truth labels, ``ignore_index`` where unlabeled.
        ignore_index: Label of unlabeled pixels.

    Returns:
        (B, H, W) int64: 1 where the semantic label differs from the ground truth, 0 where it agrees,
        ``ignore_index`` where the pixel is unlabeled.

    Raises:
        ValueError: If the shapes disagree.

    """
    check_same_size("the semantic prediction", semantic, target)
    labels = semantic.argmax(dim=1) if semantic.ndim == 4 else semantic  # (B, H, W)
    wrong = (labels != target).long()
    return torch.where(target == ignore_index, torch.full_like(wrong, ignore_index), wrong)


def semantic_confidence(semantic_probs: Tensor) -> Tensor:
    """(B, C, H, W) class probabilities -> (B, H, W) fp32 max probability, the classification score."""
    if semantic_probs.ndim != 4:
        raise ValueError(f"Semantic probabilities should be (B, C, H, W); got shape {tuple(semantic_probs.shape)}.")
    return fp32(semantic_probs).amax(dim=1)


def hard_error_mask(error: Tensor, confidence: Tensor, rho: float = HARD_CONFIDENCE) -> Tensor:
    """Hard erroneous pixels: erroneous, with a semantic max probability above ``rho``.

    Args:
        error: (B, H, W) error target from :func:`error_target`.
        confidence: (B, H, W) semantic max probability.
        rho: The confidence above which an error is hard.

    Returns:
        (B, H, W) bool mask.

    Raises:
        ValueError: If ``rho`` is outside [0, 1) or the shapes differ.

    """
    check_threshold(rho, "hard confidence rho")
    if confidence.shape != error.shape:
        raise ValueError(
            f"The confidence map has shape {tuple(confidence.shape)} but the error target {tuple(error.shape)}."
        )
    return (error == 1) & (fp32(confidence) > rho)


def error_proportion(error: Tensor, ignore_index: int = 255) -> Tensor:
    """Each image's proportion of erroneous pixels among its labelled pixels, ``w3`` of Eq. 2.

    Args:
        error: (B, H, W) error target from :func:`error_target`.
        ignore_index: Label of unlabeled pixels.

    Returns:
        (B,) fp32 proportions; 0 for an image without labelled pixels.

    """
    labelled = (error != ignore_index).sum(dim=(1, 2))
    errors = (error == 1).sum(dim=(1, 2))
    return errors.float() / labelled.clamp_min(1).float()


def error_pixel_weights(
    error: Tensor,
    confidence: Tensor,
    rho: float = HARD_CONFIDENCE,
    easy_weight: float = EASY_WEIGHT,
    hard_weight: float = HARD_WEIGHT,
    ignore_index: int = 255,
) -> Tensor:
    """The per-pixel weights of Eq. 2.

    * easy errors (semantic max probability ``<= rho``): ``w1 = easy_weight``;
    * hard errors (``> rho``): ``w2 = hard_weight``;
    * correct pixels: ``w3`` = the image's error proportion (:func:`error_proportion`), the
      class-balancing weight of HED's balanced cross-entropy (Xie & Tu, 2015) where the negative
      class is weighted by the positive class's share; about 0.04 on Cityscapes, where DeepLabV3+
      labels about 4% of the pixels wrongly. An image without errors gets ``w3 = 0``;
    * unlabeled pixels: 0.

    Args:
        error: (B, H, W) error target from :func:`error_target`.
        confidence: (B, H, W) semantic max probability.
        rho: The confidence above which an error is hard.
        easy_weight: ``w1``.
        hard_weight: ``w2``.
        ignore_index: Label of unlabeled pixels.

    Returns:
        (B, H, W) fp32 weights, constants (no gradient).

    Raises:
        ValueError: On a negative weight, ``rho`` outside [0, 1) or mismatched shapes.

    """
    if easy_weight < 0 or hard_weight < 0:
        raise ValueError(f"Error-pixel weights must be >= 0; got easy {easy_weight}, hard {hard_weight}.")
    hard = hard_error_mask(error, confidence, rho)
    negative = error_proportion(error, ignore_index)[:, None, None].expand(error.shape)  # (B, H, W)
    weights = torch.where(error == 0, negative, torch.zeros_like(negative))
    weights = torch.where(error == 1, torch.full_like(negative, easy_weight), weights)
    return torch.where(hard, torch.full_like(negative, hard_weight), weights)


def reduce_loss(loss: Tensor, counted: Tensor, reduction: Reduction) -> Tensor:
    """Reduce a (B, H, W) loss map that is 0 outside ``counted``.

    Args:
        loss: (B, H, W) per-pixel loss, 0 where ``counted`` is off.
        counted: (B, H, W) bool, the pixels the mean is over.
        reduction: ``"mean"`` (sum over the counted pixels; 0 with a graph when none), ``"sum"``,
            or ``"none"`` (the map).

    Returns:
        A scalar, or the map for ``"none"``.

    Raises:
        ValueError: On an unknown reduction.

    """
    if reduction not in get_args(Reduction):
        raise ValueError(f"reduction must be one of {get_args(Reduction)}, got {reduction!r}.")
    if reduction == "none":
        return loss
    total = loss.sum()
    return total if reduction == "sum" else total / counted.sum().clamp_min(1)


def balanced_error_loss(
    error_logits: Tensor,
    semantic_probs: Tensor,
    target: Tensor,
    rho: float = HARD_CONFIDENCE,
    easy_weight: float = EASY_WEIGHT,
    hard_weight: float = HARD_WEIGHT,
    ignore_index: int = 255,
    reduction: Reduction = "mean",
) -> Tensor:
    """The balanced cross-entropy of the error-prediction branch (Eq. 2).

    ``-w1 sum_easy log P_ep - w2 sum_hard log P_ep - w3 sum_correct log(1 - P_ep)`` with the weights
    of :func:`error_pixel_weights`, computed from logits (``-log sigmoid(x) = softplus(-x)``) in fp32.
    The mean divides Eq. 2's sum by the number of labelled pixels, so the loss's scale does not
    depend on the batch or crop size.

    Args:
        error_logits: (B, 1, H, W) or (B, H, W) error logits of the error-prediction branch.
        semantic_probs: (B, C, H, W) class probabilities of the (frozen) semantic branch.
        target: (B, H, W) ground-truth labels, ``ignore_index`` where unlabeled.
        rho: The confidence above which an error is hard.
        easy_weight: ``w1``.
        hard_weight: ``w2``.
        ignore_index: Label of unlabeled pixels.
        reduction: ``"mean"`` over labelled pixels, ``"sum"`` (Eq. 2 as written) or ``"none"``.

    Returns:
        The fp32 loss (a scalar, or (B, H, W) for ``"none"``; 0 at unlabeled pixels).

    Raises:
        ValueError: On mismatched shapes or bad weights.

    """
    logits = as_error_map(error_logits)  # (B, H, W)
    check_same_size("the error logits", logits, target)
    error = error_target(semantic_probs, target, ignore_index)  # (B, H, W)
    weights = error_pixel_weights(
        error, semantic_confidence(semantic_probs), rho, easy_weight, hard_weight, ignore_index
    )
    bce = torch.where(error == 1, F.softplus(-logits), F.softplus(logits))  # (B, H, W) -log p or -log(1 - p)
    labelled = error != ignore_index
    loss = torch.where(labelled, weights * bce, torch.zeros_like(bce))
    return reduce_loss(loss, labelled, reduction)


def detail_loss(
    detail_logits: Tensor,
    target: Tensor,
    error_prob: Tensor | None = None,
    threshold: float = ERROR_THRESHOLD,
    ignore_index: int = 255,
    reduction: Reduction = "mean",
) -> Tensor:
    """The detail branch's cross-entropy on the predicted erroneous pixels (Eqs. 3-4).

    Only labelled pixels with ``P_ep > t`` (the binary map ``E_ep``) count. The mean is over those
    pixels; when there are none it is a zero that stays connected to ``detail_logits`` (its
    gradient is zero), so a backward pass and DDP's gradient reduction run as on any other batch.

    Args:
        detail_logits: (B, C, H, W) class logits of the detail branch.
        target: (B, H, W) ground-truth labels, ``ignore_index`` where unlabeled.
        error_prob: (B, 1, H, W) or (B, H, W) predicted error probabilities; ``None`` counts every
            labelled pixel (the bagging baseline, every pixel taken as erroneous).
        threshold: The binarisation threshold ``t``.
        ignore_index: Label of unlabeled pixels.
        reduction: ``"mean"`` over the counted pixels, ``"sum"`` (Eq. 3 as written) or ``"none"``.

    Returns:
        The fp32 loss (a scalar, or (B, H, W) for ``"none"``; 0 at pixels not counted).

    Raises:
        ValueError: On mismatched shapes or a threshold outside [0, 1).

    """
    check_same_size("the detail logits", detail_logits, target)
    counted = target != ignore_index  # (B, H, W)
    if error_prob is not None:
        mask = error_mask(error_prob, threshold)  # (B, H, W)
        check_same_size("the error map", mask, target)
        counted = counted & mask
    ce = cross_entropy_map(detail_logits, target, ignore_index)  # (B, H, W) fp32
    return reduce_loss(torch.where(counted, ce, torch.zeros_like(ce)), counted, reduction)
