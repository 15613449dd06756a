"""The adversarial reweighting module (ARM) and its fixed linear counterpart.

Both map a per-pixel confidence map ``v`` in [-1, 1] (B, 1, H, W) to weights in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ARM(nn.Module):
    """Learnable weight mapping ``W(v)``: four 1x1 convolutions 1 -> 4 -> 4 -> 4 -> 1.

    Swish between the layers and a sigmoid at the end give weights in [0, 1]; the module has
    exactly 53 parameters. It is trained with a negative learning rate (it maximises the weighted
    loss the segmentation net minimises).

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
        """(B, 1, H, W) confidence in [-1, 1] -> (B, 1, H, W) weights in [0, 1]."""
        return self.layers(confidence)


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
        return (self.k * confidence + self.b).clamp(0.0, 1.0)


def evaluate_by_table(mapping: nn.Module, confidence: Tensor, grid_size: int = 1025) -> Tensor:
    """Evaluate a 1-D weight mapping through a table on a fine grid, interpolated linearly per pixel.

    ``W(v)`` depends on the pixel only through the scalar ``v``, so evaluating the mapping on
    ``grid_size`` points of [-1, 1] and interpolating gives the same weights (to the
    interpolation error of a smooth curve) at a fraction of the per-pixel cost. Gradients reach
    the mapping's parameters through the table and the confidence through the interpolation.

    Args:
        mapping: Module taking (1, 1, 1, K) confidences to (1, 1, 1, K) weights.
        confidence: (B, 1, H, W) confidence in [-1, 1].
        grid_size: Number of table points.

    Returns:
        (B, 1, H, W) weights.

    """
    grid = torch.linspace(-1.0, 1.0, grid_size, device=confidence.device, dtype=confidence.dtype)
    table = mapping(grid.view(1, 1, 1, -1)).flatten()  # (K,)
    position = (confidence.clamp(-1.0, 1.0) + 1.0) * (0.5 * (grid_size - 1))
    low = position.detach().floor().clamp(max=grid_size - 2).long()
    fraction = position - low
    return table[low] * (1.0 - fraction) + table[low + 1] * fraction
