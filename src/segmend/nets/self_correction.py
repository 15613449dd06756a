"""Self-correction of the weak set's labels (Ibrahim et al., Secs. 3.2-3.4) and the EM-fixed baseline.

All functions take logits of shape (B, C, H, W) and return soft targets ``q`` of the same shape
(a distribution over C classes per pixel). Callers compute them under ``torch.no_grad()`` (q is a
target, Eqs. 2, 5, 6); these functions also detach their inputs so no gradient can leak through q.
Soft targets and the cross-entropy against them are computed in fp32 (bf16/fp16 logits from mixed
precision are cast first: CPU autocast would run ``softmax`` and ``log_softmax`` in bf16).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from segmend.precision import fp32

AlphaShape = Literal["geometric", "linear", "constant"]


def linear_self_correction(logits: Tensor, ancillary_logits: Tensor, alpha: float) -> Tensor:
    """Linear self-correction (Eq. 4): ``q = softmax((l + alpha * l_anc) / (alpha + 1))``.

    The global minimiser of ``KL(q || p) + alpha KL(q || p_anc)``. ``alpha = 0`` gives the primary
    model's distribution, ``alpha = inf`` the ancillary model's (no self-correction, Eq. 2).

    Args:
        logits: (B, C, H, W) primary logits ``l``.
        ancillary_logits: (B, C, H, W) ancillary logits ``l_anc``.
        alpha: Weight of the ancillary model, ``>= 0`` (``math.inf`` allowed).

    Returns:
        (B, C, H, W) probabilities (fp32 for bf16/fp16 logits), detached.

    Raises:
        ValueError: If ``alpha`` is negative or NaN.

    """
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0 (or inf), got {alpha}.")
    logits, ancillary_logits = fp32(logits.detach()), fp32(ancillary_logits.detach())
    if math.isinf(alpha):
        return ancillary_logits.softmax(dim=1)
    return ((logits + alpha * ancillary_logits) / (alpha + 1.0)).softmax(dim=1)


def alpha_schedule(progress: float, start: float = 30.0, end: float = 0.5, shape: AlphaShape = "geometric") -> float:
    """Alpha of linear self-correction at ``progress`` in [0, 1] of the main training.

    ``geometric``: ``start * (end / start) ** progress`` (the paper's exponential decay 30 -> 0.5);
    ``linear``: ``start + (end - start) * progress``; ``constant``: ``start``.

    Args:
        progress: Fraction of the training done (clipped to [0, 1]).
        start: Alpha at the first step.
        end: Alpha at the last step.
        shape: Shape of the decay.

    Returns:
        Alpha.

    Raises:
        ValueError: If ``start`` or ``end`` is not positive, or ``shape`` is unknown.

    """
    if start <= 0 or end <= 0:
        raise ValueError(f"alpha start and end must be positive, got start={start}, end={end}.")
    progress = min(max(float(progress), 0.0), 1.0)
    if shape == "geometric":
        return start * (end / start) ** progress
    if shape == "linear":
        return start + (end - start) * progress
    if shape == "constant":
        return start
    raise ValueError(f"alpha shape must be 'geometric', 'linear' or 'constant', got {shape!r}.")


class ConvSelfCorrection(nn.Module):
    """Convolutional self-correction (Sec. 3.4, Fig. 3): a two-layer CNN over both models' logits.

    ``concat(l, l_anc)`` (2C channels) -> 3x3 conv, ``hidden`` channels, ReLU -> 3x3 conv, C
    channels = the logits of ``q_conv``. (The paper's text puts a ReLU after both layers; a ReLU on
    the output logits would forbid negative logits, so the second layer is linear, as in the design
    notes.) The primary logits enter detached: the net learns to combine the two models and is
    trained only by the last term of Eq. 6, on F.

    Args:
        num_classes: C, background included.
        hidden: Channels of the first convolution (128 in the paper).

    """

    def __init__(self, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(2 * num_classes, hidden, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_classes, kernel_size=3, padding=1),
        )

    def forward(self, logits: Tensor, ancillary_logits: Tensor) -> Tensor:
        """(B, C, H, W) primary and ancillary logits -> (B, C, H, W) logits of q_conv."""
        return self.net(torch.cat([logits.detach(), ancillary_logits.detach()], dim=1))


def em_fixed_labels(
    logits: Tensor,
    boxes: Tensor,
    fg_bias: float = 5.0,
    bg_bias: float = 3.0,
    ignore_index: int = 255,
) -> Tensor:
    """Box-constrained hard labels from the model's own predictions (EM-fixed of Papandreou et al.).

    E-step of "Bbox-EM-Fixed": the log-probabilities of the current model get a bias ``fg_bias``
    for the classes whose boxes cover the pixel and ``bg_bias`` for background; classes without a
    box at the pixel are excluded, and the label is the argmax. Outside every box the label is
    background. Pixels no channel covers (crop padding) get ``ignore_index``.

    Args:
        logits: (B, C, H, W) primary logits.
        boxes: (B, C, H, W) box mask, channel 0 = no box covers the pixel.
        fg_bias: Bias added to the log-probability of the foreground classes present at the pixel.
        bg_bias: Bias added to background's log-probability.
        ignore_index: Label of pixels without any box-mask channel set.

    Returns:
        (B, H, W) long labels.

    """
    scores = F.log_softmax(logits.detach().float(), dim=1)
    allowed = boxes > 0.5  # (B, C, H, W)
    allowed[:, 0] = True  # background is always possible (objects do not fill their boxes)
    bias = torch.full_like(scores, fg_bias)
    bias[:, 0] = bg_bias
    scores = torch.where(allowed, scores + bias, torch.full_like(scores, -math.inf))
    labels = scores.argmax(dim=1)
    return labels.masked_fill(boxes.sum(dim=1) <= 0, ignore_index)


def soft_cross_entropy(logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Per-pixel ``-sum_c q_c log p_c`` summed over ``valid`` pixels.

    Args:
        logits: (B, C, H, W) logits of p.
        target: (B, C, H, W) soft target q (detached inside).
        valid: (B, H, W) bool, the pixels that count.

    Returns:
        Scalar sum over the valid pixels.

    """
    per_pixel = -(fp32(target.detach()) * F.log_softmax(fp32(logits), dim=1)).sum(dim=1)  # (B, H, W)
    return per_pixel[valid].sum()
