"""The adversarial reweighting module (ARM) and its fixed linear counterpart.

Both map a per-pixel confidence map ``v`` in [-1, 1] (B, 1, H, W) to weights in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from segmend.precision import fp32, no_autocast


class ARM(nn.Module):
    """Learnable weight mapping ``W(v)``: four 1x1 convolutions 1 -> 4 -> 4 -> 4 -> 1.

    Swish between the layers and a sigmoid at the end give weights in [0, 1]; the module has
    exactly 53 parameters. It is trained with a negative learning rate (it maximises the weighted
    loss the segmentation net minimises). It always runs in fp32, also under autocast: in bf16 its
    input would keep 8 significant bits (confidences within 0.002 of -1, i.e. variances near 0, would
    all be -1), and so would its output.

    Args:
        hidden: Width of the hidden layers (4 in the paper).

    """

    def __init__(self, hidden: int = 4) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, hidden, 1),
            nn.SiLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.SiLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.SiLU(),
            nn.Conv2d(hidden, 1, 1),
            nn.Sigmoid(),
        )

    def forward(self, confidence: Tensor) -> Tensor:
        """(B, 1, H, W) confidence in [-1, 1] -> (B, 1, H, W) fp32 weights in [0, 1] (autocast off)."""
        with no_autocast(confidence):
            return self.layers(fp32(confidence))


class LinearARM(nn.Module):
    """Fixed linear mapping ``W(v) = k * v + b`` clipped to [0, 1].

    ``k = -0.5, b = 0.5`` suppresses confident (high-variance) pixels; ``k = 0.5, b = 0.5``
    focuses on them.

    Args:
        k: Slope.
        b: Intercept.

    """

    def __init__(self, k: float = -0.5, b: float = 0.5) -> None:
        super().__init__()
        self.k = k
        self.b = b

    def forward(self, confidence: Tensor) -> Tensor:
        """(B, 1, H, W) confidence in [-1, 1] -> (B, 1, H, W) weights in [0, 1]."""
        return (self.k * fp32(confidence) + self.b).clamp(0.0, 1.0)


def evaluate_by_table(mapping: nn.Module, confidence: Tensor, grid_size: int = 1025) -> Tensor:
    """Evaluate a 1-D weight mapping through a table on a fine grid, interpolated linearly per pixel.

    ``W(v)`` depends on the pixel only through the scalar ``v``, so evaluating the mapping on
    ``grid_size`` points of [-1, 1] and interpolating gives the same weights (to the
    interpolation error of a smooth curve) at a fraction of the per-pixel cost. Gradients reach
    the mapping's parameters through the table and the confidence through the interpolation.

    The grid, the table and the interpolation are fp32 (fp64 for fp64 confidences), with
    autocast off, whatever precision the caller trains in.

    Args:
        mapping: Module taking (1, 1, 1, K) confidences to (1, 1, 1, K) weights.
        confidence: (B, 1, H, W) confidence in [-1, 1].
        grid_size: Number of table points.

    Returns:
        (B, 1, H, W) weights.

    """
    confidence = fp32(confidence)
    with no_autocast(confidence):
        grid = torch.linspace(-1.0, 1.0, grid_size, device=confidence.device, dtype=confidence.dtype)
        table = fp32(mapping(grid.view(1, 1, 1, -1))).flatten()  # (K,)
    position = (confidence.clamp(-1.0, 1.0) + 1.0) * (0.5 * (grid_size - 1))
    low = position.detach().floor().clamp(max=grid_size - 2).long()
    fraction = position - low
    return table[low] * (1.0 - fraction) + table[low + 1] * fraction
