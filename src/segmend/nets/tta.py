"""Multi-scale and flip test-time augmentation for any logits-producing network."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def resize_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly resize (B, C, h, w) logits to ``size`` if they differ."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _snap(length: int, scale: float, multiple: int) -> int:
    return max(multiple, int(round(length * scale / multiple)) * multiple)


def tta_probabilities(
    forward: Callable[[Tensor], Tensor],
    image: Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    size_multiple: int = 32,
) -> Tensor:
    """Average class probabilities over rescaled and flipped copies of the batch.

    Args:
        forward: Maps (B, 3, H, W) images to (B, C, h, w) logits.
        image: (B, 3, H, W) input batch.
        scales: Resize factors; each size is snapped to ``size_multiple`` so encoders with
            output stride 32 accept it.
        flip: Also run the horizontally flipped copy of each scale.
        size_multiple: Granularity of the rescaled sizes.

    Returns:
        (B, C, H, W) mean softmax probabilities at the input resolution.

    """
    height, width = image.shape[-2:]
    total: Tensor | None = None
    count = 0
    for scale in scales:
        size = (_snap(height, scale, size_multiple), _snap(width, scale, size_multiple))
        scaled = (
            image if size == (height, width) else F.interpolate(image, size=size, mode="bilinear", align_corners=False)
        )
        views = [(scaled, False)] + ([(torch.flip(scaled, dims=[-1]), True)] if flip else [])
        for view, flipped in views:
            logits = forward(view)  # (B, C, h, w)
            if flipped:
                logits = torch.flip(logits, dims=[-1])
            probs = resize_logits(logits, (height, width)).softmax(dim=1)
            total = probs if total is None else total + probs
            count += 1
    assert total is not None  # scales is non-empty (checked by the caller)
    return total / count
