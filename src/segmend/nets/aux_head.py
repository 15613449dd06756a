"""An auxiliary FCN head on an intermediate encoder stage (PSPNet-style deep supervision)."""

from __future__ import annotations

from torch import Tensor, nn


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


class EncoderTap:
    """Keep the latest output of a segmentation-models-pytorch encoder stage (a forward hook).

    Args:
        encoder: The smp encoder (``net.encoder``), whose forward returns a list of features.
        stage: Index into that list (-2: the stage before the last, stride 16).

    """

    def __init__(self, encoder: nn.Module, stage: int = -2) -> None:
        self.stage = stage
        self.features: Tensor | None = None
        self.handle = encoder.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: object, output: list[Tensor]) -> None:
        self.features = output[self.stage]
