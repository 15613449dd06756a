"""An auxiliary FCN head on an intermediate encoder stage (PSPNet-style deep supervision).

It reads ``SegmentationFeatures.encoder[AUX_STAGE]`` (:mod:`segmend.nets.features`), handed to it
by the module that ran the net.
"""

from __future__ import annotations

from torch import nn

AUX_STAGE = -2
"""The encoder feature map the head reads: the stage before the last (stride 16 for CNN encoders)."""


class FCNHead(nn.Sequential):
    """3x3 conv -> BN -> ReLU -> dropout -> 1x1 conv to class logits.

    Args:
        in_channels: Channels of the encoder stage it reads.
        num_classes: Output classes.
        hidden: Channels of the 3x3 convolution.
        dropout: Dropout before the classifier.

    """

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(hidden, num_classes, 1),
        )
