"""Bounding-box attention: the ancillary model of self-correcting networks (Ibrahim et al., Sec. 3.1).

A segmentation-models-pytorch encoder-decoder gets a parallel *box encoder*: the (C, H, W) box
mask (channel c is 1 inside a box of class c, channel 0 is 1 where no box covers the pixel) is
resized to each encoder feature map the decoder consumes, passed through a 3x3 convolution and a
sigmoid, and the result multiplies that feature map. The smp model is run part by part
(:func:`~segmend.nets.features.smp_features`) with the attention as the gate between its encoder and
its decoder, so every smp decoder is used unchanged and nothing is kept between calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from segmend.nets.factory import build_smp_net
from segmend.nets.features import SegmentationFeatures, smp_features

# Which entries of the smp encoder's feature list each decoder reads (smp 0.4-0.6; index 0 is the
# input image itself). Attention is applied exactly to these, so no attention conv is left
# without a gradient (DDP's default refuses unused parameters).
_DECODER_STAGES: dict[str, tuple[int, ...] | str] = {
    "DeepLabV3Plus": (2, -1),  # low-level skip (stride 4) and the deep features fed to ASPP
    "DeepLabV3": (-1,),
    "PSPNet": (-1,),
    "FPN": (-4, -3, -2, -1),
    "PAN": "from2",
    "UPerNet": "from2",
}


def decoder_stages(arch: str, num_features: int, stages: Sequence[int] | None = None) -> tuple[int, ...]:
    """Non-negative indices of the encoder features that ``arch``'s decoder consumes.

    Args:
        arch: smp architecture name.
        num_features: Length of the encoder's feature list (``len(encoder.out_channels)``).
        stages: Explicit indices (negative allowed); ``None`` looks ``arch`` up, and for an
            architecture not in the table takes every feature but the input (index 0).

    Returns:
        Sorted unique indices in ``[1, num_features)``.

    Raises:
        ValueError: If an index is out of range or points at the input image (index 0).

    """
    if stages is None:
        known = _DECODER_STAGES.get(arch)
        if known == "from2":
            stages = range(2, num_features)
        elif known is None:
            stages = range(1, num_features)
        else:
            stages = known
    resolved = set()
    for index in stages:
        position = index + num_features if index < 0 else index
        if not 1 <= position < num_features:
            raise ValueError(
                f"attention stage {index} is out of range for an encoder with {num_features} feature maps "
                f"(index 0 is the input image); use indices 1..{num_features - 1} or negative ones."
            )
        resolved.add(position)
    return tuple(sorted(resolved))


def resize_box_mask(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a (B, C, H, W) box mask to ``size``.

    Downsampling averages (``area``): each output cell holds the fraction of its pixels covered by
    a box of each class, so a small box is not dropped by point sampling. Upsampling is nearest.
    """
    if tuple(boxes.shape[-2:]) == tuple(size):
        return boxes
    if boxes.shape[-2] >= size[0] and boxes.shape[-1] >= size[1]:
        return F.interpolate(boxes, size=size, mode="area")
    return F.interpolate(boxes, size=size, mode="nearest")


class BoxAttention(nn.Module):
    """One attention map: resize the box mask, 3x3 conv, sigmoid.

    Args:
        box_channels: Channels of the box mask (number of classes, background included).
        feature_channels: Channels of the feature map it multiplies.

    """

    def __init__(self, box_channels: int, feature_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(box_channels, feature_channels, kernel_size=3, padding=1)

    def forward(self, boxes: Tensor, size: tuple[int, int]) -> Tensor:
        """(B, C, H, W) box mask -> (B, feature_channels, *size) attention in (0, 1)."""
        return torch.sigmoid(self.conv(resize_box_mask(boxes, size)))


class BoxAttentionNet(nn.Module):
    """An smp encoder-decoder whose encoder features are gated by box attention maps.

    ``forward(image, boxes)`` returns (B, num_classes, H, W) logits. The smp model is ``self.net``
    (so its weights load from and into plain smp checkpoints with the prefix ``net.``) and the box
    encoder is ``self.box_encoder``, one :class:`BoxAttention` per consumed feature map.

    Args:
        num_classes: Output classes, background included; also the box mask's channels.
        arch: smp architecture, e.g. ``"DeepLabV3Plus"``.
        encoder_name: smp encoder, e.g. ``"resnet18"``.
        encoder_weights: Pretrained encoder weights (``None``: random, nothing downloaded).
        attention_stages: Indices into the encoder's feature list to gate; ``None`` takes the
            features ``arch``'s decoder consumes (DeepLabV3+: the stride-4 skip and the deep
            features).
        net: An smp model to wrap instead of building one.
        **net_kwargs: Further smp architecture arguments.

    Raises:
        ValueError: If the wrapped net is not a segmentation-models-pytorch model.

    """

    def __init__(
        self,
        num_classes: int,
        arch: str = "DeepLabV3Plus",
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        attention_stages: Sequence[int] | None = None,
        net: nn.Module | None = None,
        **net_kwargs: Any,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        if net is None:
            net = build_smp_net(arch, encoder_name, num_classes, encoder_weights, **net_kwargs)
        if not isinstance(net, smp.base.SegmentationModel):
            raise ValueError(
                f"BoxAttentionNet needs a segmentation-models-pytorch model to wrap; got {type(net).__name__}."
            )
        self.net = net
        channels = list(net.encoder.out_channels)
        stages = decoder_stages(type(self.net).__name__, len(channels), attention_stages)
        self.stages = tuple(i for i in stages if channels[i] > 0)
        self.box_encoder = nn.ModuleDict({str(i): BoxAttention(num_classes, channels[i]) for i in self.stages})

    @property
    def segmentation_model(self) -> nn.Module:
        """The wrapped smp model (its encoder and decoder widths are the features')."""
        return self.net

    def attend(self, features: list[Tensor], boxes: Tensor) -> list[Tensor]:
        """The encoder's feature list with the gated maps multiplied by their box attention.

        Args:
            features: The smp encoder's feature maps.
            boxes: (B, C, H, W) box masks.

        Returns:
            A new list; the maps not in :attr:`stages` are the same tensors.

        """
        features = list(features)
        for i in self.stages:
            feature = features[i]
            features[i] = feature * self.box_encoder[str(i)](boxes.to(feature.dtype), tuple(feature.shape[-2:]))
        return features

    def forward_features(self, image: Tensor, boxes: Tensor | None = None) -> SegmentationFeatures:
        """(B, 3, H, W) images and (B, C, H, W) box masks -> features; ``encoder`` holds the gated maps.

        Raises:
            ValueError: If the box mask is missing or its shape does not match the image or the classes.

        """
        if boxes is None or boxes.ndim != 4 or boxes.shape[1] != self.num_classes or boxes.shape[0] != image.shape[0]:
            found = "no box mask" if boxes is None else f"box mask of shape {tuple(boxes.shape)}"
            raise ValueError(
                f"{found} for images {tuple(image.shape)} and {self.num_classes} classes; expected "
                f"(B, {self.num_classes}, H, W) with channel 0 = 'no box covers this pixel' (set with_boxes: "
                "true in the DataModule)."
            )
        return smp_features(self.net, image, gate=lambda features: self.attend(features, boxes))

    def forward(self, image: Tensor, boxes: Tensor) -> Tensor:
        """(B, 3, H, W) image and (B, C, H, W) box mask -> (B, C, H', W') logits.

        Raises:
            ValueError: If the box mask's shape does not match the image or the classes.

        """
        return self.forward_features(image, boxes).logits  # (B, C, H', W')
