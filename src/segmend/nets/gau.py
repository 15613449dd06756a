"""Global attention upsample (GAU), the decoder block of the Pyramid Attention Network (Li et al., 2018).

A GAU merges coarse high-level features into finer low-level ones: the high-level features,
averaged over the whole image, choose which low-level channels matter (channel attention), and
are then upsampled and added. Error-pixel prediction (Gong et al., 2021) builds its
error-prediction branch on one GAU and its detail branch on three (:mod:`segmend.nets.error_pixel`).

Every normalisation here is GroupNorm (32 groups by default), as the error-pixel paper uses in both
of its branches: their batches are small, and a GroupNorm does not depend on the batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """A GroupNorm over ``channels`` in ``groups`` groups.

    Args:
        channels: Channels normalised.
        groups: Number of groups; must divide ``channels``.

    Returns:
        The normalisation layer (affine).

    Raises:
        ValueError: If ``groups`` is not a positive divisor of ``channels``.

    """
    if groups < 1 or channels < 1 or channels % groups:
        raise ValueError(
            f"GroupNorm needs a number of groups that divides the channels; got {channels} channels and "
            f"{groups} groups. Pick widths that are multiples of the group count (or change `groups`)."
        )
    return nn.GroupNorm(groups, channels)


class ConvNormAct(nn.Sequential):
    """``kernel_size`` x ``kernel_size`` convolution (no bias) -> GroupNorm -> ReLU.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (a multiple of ``groups``).
        kernel_size: Odd kernel size; the padding keeps the size (``stride`` 1).
        stride: Convolution stride.
        groups: GroupNorm groups.

    Raises:
        ValueError: If a channel count is below 1, the kernel size is even, or ``groups`` does not
            divide ``out_channels``.

    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 32
    ) -> None:
        if in_channels < 1:
            raise ValueError(f"ConvNormAct needs in_channels >= 1, got {in_channels}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ConvNormAct needs an odd kernel_size, got {kernel_size}.")
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            group_norm(out_channels, groups),
            nn.ReLU(inplace=True),
        )


def resize(features: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (B, C, h, w) maps to ``size``: area averaging when shrinking both sides, else bilinear.

    Args:
        features: (B, C, h, w) maps.
        size: Target (height, width).

    Returns:
        (B, C, *size) maps (``features`` itself when the size already matches).

    """
    size = (int(size[0]), int(size[1]))
    if tuple(features.shape[-2:]) == size:
        return features
    if features.shape[-2] >= size[0] and features.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(features, size)
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)


def check_channels(name: str, features: Tensor, expected: int) -> None:
    """Raise a clear error unless ``features`` is (B, ``expected``, h, w).

    Args:
        name: What the tensor is, for the message.
        features: The tensor checked.
        expected: The channel count the module was built for.

    Raises:
        ValueError: On a wrong number of dimensions or channels.

    """
    if features.ndim != 4 or features.shape[1] != expected:
        raise ValueError(
            f"{name} should be (B, {expected}, h, w) but has shape {tuple(features.shape)}; build the "
            "module with the channel counts of the features you feed it."
        )


class GAU(nn.Module):
    """Global attention upsample: ``up(high') + low' * sigmoid(W * avgpool(high))``.

    * ``low'``: 3x3 conv -> GroupNorm -> ReLU of the low-level features, to ``out_channels``.
    * attention: the high-level features averaged over the image -> 1x1 conv (with bias) ->
      sigmoid, one weight in (0, 1) per output channel and image.
    * ``high'``: 1x1 conv -> GroupNorm -> ReLU of the high-level features, to ``out_channels``,
      bilinearly upsampled to the low-level size, then added.

    The variant chosen among the published ones (the PAN paper's text, and public code that
    differs from it and from each other): the PAN paper puts BatchNorm + ReLU after the
    attention's 1x1 conv; here the attention is a sigmoid of the 1x1 conv alone (squeeze-and-
    excitation style), because a BatchNorm over one pooled vector per image fails on a batch of
    one and a GroupNorm over it normalises each group of channels to a fixed mean (with one channel
    per group its output is constant), and a sigmoid bounds the attention to (0, 1), where a ReLU
    would let it scale channels without bound. The high-level path is projected with a 1x1 conv
    so any widths can be added (the PAN paper leaves it implicit) and upsampled bilinearly by any
    factor (public code uses a stride-2 transposed conv, which fixes the factor to 2).

    Args:
        high_channels: Channels of the high-level (coarse) input.
        low_channels: Channels of the low-level (fine) input.
        out_channels: Output channels (a multiple of ``groups``).
        groups: GroupNorm groups.

    """

    def __init__(self, high_channels: int, low_channels: int, out_channels: int, groups: int = 32) -> None:
        super().__init__()
        if high_channels < 1:
            raise ValueError(f"GAU needs high_channels >= 1, got {high_channels}.")
        self.high_channels = high_channels
        self.low_channels = low_channels
        self.out_channels = out_channels
        self.low = ConvNormAct(low_channels, out_channels, 3, groups=groups)
        self.high = ConvNormAct(high_channels, out_channels, 1, groups=groups)
        self.attention = nn.Conv2d(high_channels, out_channels, 1)

    def forward(self, high: Tensor, low: Tensor) -> Tensor:
        """Merge coarse ``high`` into fine ``low``.

        Args:
            high: (B, high_channels, h, w) high-level features.
            low: (B, low_channels, H, W) low-level features (usually H >= h, W >= w).

        Returns:
            (B, out_channels, H, W) merged features.

        Raises:
            ValueError: If the channel counts differ from the ones the block was built for.

        """
        check_channels("GAU high-level input", high, self.high_channels)
        check_channels("GAU low-level input", low, self.low_channels)
        weights = torch.sigmoid(self.attention(F.adaptive_avg_pool2d(high, 1)))  # (B, out, 1, 1)
        upsampled = resize(self.high(high), tuple(low.shape[-2:]))  # (B, out, H, W)
        return upsampled + self.low(low) * weights  # (B, out, H, W)


class GAUBlock(nn.Module):
    """A decoder stage of the error-pixel paper's Fig. 2: a :class:`GAU`, then ``convs`` 3x3 ConvNormAct.

    Args:
        high_channels: Channels of the high-level input.
        low_channels: Channels of the low-level (skip) input.
        out_channels: Width of the stage (a multiple of ``groups``).
        convs: 3x3 convolutions after the GAU (2 in the paper's figure, "Repeat x 2").
        groups: GroupNorm groups.

    Raises:
        ValueError: If ``convs`` is negative or a width does not suit ``groups``.

    """

    def __init__(
        self, high_channels: int, low_channels: int, out_channels: int, convs: int = 2, groups: int = 32
    ) -> None:
        super().__init__()
        if convs < 0:
            raise ValueError(f"GAUBlock needs convs >= 0, got {convs}.")
        self.out_channels = out_channels
        self.gau = GAU(high_channels, low_channels, out_channels, groups)
        self.convs = nn.Sequential(*(ConvNormAct(out_channels, out_channels, 3, groups=groups) for _ in range(convs)))

    def forward(self, high: Tensor, low: Tensor) -> Tensor:
        """(B, high_channels, h, w), (B, low_channels, H, W) -> (B, out_channels, H, W)."""
        return self.convs(self.gau(high, low))
