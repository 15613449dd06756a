"""Build segmentation networks by name from segmentation-models-pytorch."""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
from torch import nn


def available_architectures() -> tuple[str, ...]:
    """Names accepted for ``arch`` (segmentation-models-pytorch class names)."""
    return tuple(sorted(cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()))


def build_smp_net(
    arch: str,
    encoder_name: str,
    num_classes: int,
    encoder_weights: str | None = None,
    in_channels: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """Create an encoder-decoder network from segmentation-models-pytorch.

    Args:
        arch: Architecture class name, e.g. ``"DeepLabV3Plus"``, ``"Unet"``, ``"FPN"``.
        encoder_name: Encoder name, e.g. ``"resnet18"``, ``"mobilenet_v2"``.
        num_classes: Number of output channels (classes, background included).
        encoder_weights: Pretrained weights name, or ``None`` for random initialisation.
            Anything but ``None`` makes smp download weights, which segmend never does
            implicitly, so the caller must have them cached.
        in_channels: Number of image channels.
        **kwargs: Further arguments of the architecture (e.g. ``decoder_channels``).

    Returns:
        The network; ``forward`` maps (B, in_channels, H, W) to (B, num_classes, H, W) logits.

    Raises:
        ValueError: If the architecture or encoder name is unknown.

    """
    arch_cls = {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}.get(arch)
    if arch_cls is None:
        raise ValueError(
            f"Unknown segmentation-models-pytorch architecture arch={arch!r}; "
            f"expected one of {', '.join(available_architectures())}."
        )
    if not encoder_name.startswith("tu-") and encoder_name not in smp.encoders.get_encoder_names():
        raise ValueError(
            f"Unknown encoder_name={encoder_name!r}; see "
            "segmentation_models_pytorch.encoders.get_encoder_names() for the accepted names "
            "(for example 'resnet18', 'resnet50', 'mobilenet_v2'), or 'tu-<timm model name>'."
        )
    return arch_cls(
        encoder_name=encoder_name,
        encoder_weights=encoder_weights,
        in_channels=in_channels,
        classes=num_classes,
        **kwargs,
    )
