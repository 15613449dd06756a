"""A per-pixel uncertainty head for the KL (aleatoric uncertainty) loss of Kendall et al.

The head predicts ``log s`` for every pixel, where ``s`` is the uncertainty that divides the
cross-entropy in ``KL = CE / s + 0.5 * log s`` (ARM paper, Eq. 1). Predicting the logarithm keeps
``s`` positive without a clamp and makes ``exp(-log s)`` numerically safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from segmend.nets.features import SegmentationFeatures, segmentation_model
from segmend.precision import fp32, no_autocast


class UncertaintyHead(nn.Sequential):
    """3x3 conv -> BN -> ReLU -> 1x1 conv to one channel, ``log s``.

    The last convolution starts at zero, so training starts from ``s = 1`` everywhere (the KL
    loss then equals cross-entropy). The head runs in fp32 with autocast off, also under mixed
    precision: ``log s`` enters the loss as the weight ``exp(-log s)`` of a pixel's cross-entropy,
    which rounding ``log s`` to bf16 (8 significant bits) would change by up to ``0.2% * |log s|``.

    Args:
        in_channels: Channels of the features it reads (decoder features or class logits).
        hidden: Channels of the 3x3 convolution.

    """

    def __init__(self, in_channels: int, hidden: int = 32) -> None:
        if in_channels < 1 or hidden < 1:
            raise ValueError(f"UncertaintyHead needs in_channels, hidden >= 1; got {in_channels}, {hidden}.")
        super().__init__(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )
        nn.init.zeros_(self[-1].weight)
        nn.init.zeros_(self[-1].bias)

    def forward(self, features: Tensor) -> Tensor:
        """(B, in_channels, h, w) features -> (B, 1, h, w) fp32 ``log s`` (autocast off)."""
        with no_autocast(features):
            return super().forward(fp32(features))


@dataclass
class HeadInput:
    """What an uncertainty head reads from a forward: one named field of its features.

    The module that runs the net hands every forward's features to :meth:`keep` (an explicit call,
    no hook), so a loss given only the logits can still read the decoder features behind them.

    Attributes:
        field: ``"decoder"`` (the segmentation head's input, for smp nets) or ``"logits"``.
        features: The selected tensor of the latest forward; ``None`` before the first.

    """

    field: Literal["decoder", "logits"]
    features: Tensor | None = None

    def keep(self, features: SegmentationFeatures) -> None:
        """Keep the selected field of ``features``.

        Raises:
            ValueError: If the field is ``None`` in ``features`` (a net without decoder features).

        """
        selected = getattr(features, self.field)
        if selected is None:
            raise ValueError(f"the uncertainty head reads the {self.field} features, which this net does not give.")
        self.features = selected


def head_input_channels(net: nn.Module) -> int | None:
    """Channels of :attr:`SegmentationFeatures.decoder` for ``net`` (the smp segmentation head's input).

    Args:
        net: The segmentation network.

    Returns:
        ``in_channels`` of the first convolution of the smp model's ``segmentation_head`` (the
        decoder's output width), or ``None`` when ``net`` is not an smp model and does not wrap
        one (:func:`~segmend.nets.features.segmentation_model`): its features are its logits only.

    """
    model = segmentation_model(net)
    head = getattr(model, "segmentation_head", None)
    if not isinstance(head, nn.Module):
        return None
    for layer in head.modules():
        if isinstance(layer, nn.Conv2d):
            return layer.in_channels
    return None
