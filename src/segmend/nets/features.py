"""The features of a segmentation network, computed explicitly: no forward hooks, no hidden state.

:func:`forward_features` runs a network and returns what other parts need besides its logits (an
auxiliary head, an uncertainty head, error-pixel prediction's branches reading a frozen semantic
net) in a :class:`SegmentationFeatures`. A segmentation-models-pytorch model is run part by part
(encoder -> optional gate on the encoder features -> decoder -> segmentation head), so nothing has
to be intercepted; its logits are exactly those of ``net(image)``. Any other network is called
as it is and gives its logits only, unless it has a ``forward_features`` method of its own that
returns :class:`SegmentationFeatures` (see :class:`FeatureNet`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Protocol, runtime_checkable

import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn

FeatureGate = Callable[[list[Tensor]], list[Tensor]]
"""Maps the encoder's feature list to the list the decoder reads (e.g. box attention)."""


@dataclass
class SegmentationFeatures:
    """What a segmentation network computed for a batch, each at the net's resolution and compute dtype.

    Attributes:
        logits: (B, C, h, w) class logits, what the net's ``forward`` returns.
        encoder: The smp encoder's feature maps, shallow to deep (index 0 is the input image, index
            ``i`` has stride ``2**i`` for CNN encoders), after any gate: exactly what the decoder
            read. Empty for a net without an smp encoder.
        decoder: (B, D, h', w') the input of the segmentation head (the decoder's output);
            ``None`` for a net that is not an smp model.
        context: High-level features: the ASPP output for DeepLabV3+ (smp's ``decoder.aspp``: ASPP,
            then a 3x3 separable conv, BN, ReLU; stride 16 by default) and DeepLabV3 (its whole
            decoder: ASPP, then a 3x3 conv, BN, ReLU, so also equal to ``decoder``), the pyramid
            pooling output for PSPNet (the deepest features concatenated with their four pooled
            branches, before the decoder's 1x1 conv). ``None`` for every other architecture.

    """

    logits: Tensor
    encoder: list[Tensor] = field(default_factory=list)
    decoder: Tensor | None = None
    context: Tensor | None = None


@runtime_checkable
class FeatureNet(Protocol):
    """A network that computes its own features (e.g. :class:`~segmend.nets.box_attention.BoxAttentionNet`).

    ``segmentation_model`` is the smp model inside it, whose encoder and decoder widths the
    features have (``None`` if there is none).
    """

    segmentation_model: nn.Module | None

    def forward_features(self, image: Tensor, boxes: Tensor | None = None) -> SegmentationFeatures:
        """(B, 3, H, W) images (and box masks, if the net reads them) -> features."""
        ...


def segmentation_model(net: nn.Module) -> smp.base.SegmentationModel | None:
    """The smp model ``net`` is or wraps (as a :class:`FeatureNet`), or ``None``."""
    if isinstance(net, smp.base.SegmentationModel):
        return net
    inner = net.segmentation_model if isinstance(net, FeatureNet) else None
    return inner if isinstance(inner, smp.base.SegmentationModel) else None


def encoder_channels(net: nn.Module) -> tuple[int, ...] | None:
    """Channels of each entry of :attr:`SegmentationFeatures.encoder` for ``net``, or ``None`` (no smp model)."""
    model = segmentation_model(net)
    return tuple(model.encoder.out_channels) if model is not None else None


def forward_features(net: nn.Module, image: Tensor, boxes: Tensor | None = None) -> SegmentationFeatures:
    """Run ``net`` on (B, 3, H, W) images and return its features.

    Args:
        net: An smp model, a :class:`FeatureNet`, or any network returning logits (or a dict
            with key ``"out"``).
        image: (B, 3, H, W) images.
        boxes: (B, C, H, W) box masks, for a :class:`FeatureNet` that reads them.

    Returns:
        The features; ``logits`` equal ``net(image)`` (``net(image, boxes)``) exactly.

    Raises:
        ValueError: If ``boxes`` are given to a net that cannot read them, or a ``forward_features``
            of the net returns something else than :class:`SegmentationFeatures`.

    """
    is_smp = isinstance(net, smp.base.SegmentationModel)
    if not is_smp and isinstance(net, FeatureNet):
        features = net.forward_features(image) if boxes is None else net.forward_features(image, boxes)
        if not isinstance(features, SegmentationFeatures):
            raise ValueError(
                f"{type(net).__name__}.forward_features returned {type(features).__name__}; expected "
                "segmend.nets.features.SegmentationFeatures."
            )
        return features
    if boxes is not None:
        raise ValueError(
            f"{type(net).__name__} does not read box masks; give boxes only to a net with box attention "
            "(segmend.nets.box_attention.BoxAttentionNet)."
        )
    if is_smp:
        return smp_features(net, image)
    out = net(image)
    return SegmentationFeatures(logits=out["out"] if isinstance(out, dict) else out)


def smp_features(
    net: smp.base.SegmentationModel, image: Tensor, gate: FeatureGate | None = None
) -> SegmentationFeatures:
    """Run an smp model part by part: encoder, ``gate``, decoder, segmentation head.

    The same calls as smp's ``SegmentationModel.forward`` (its classification head, if any, is
    not run), with ``gate`` between the encoder and the decoder.

    Args:
        net: The smp model.
        image: (B, in_channels, H, W) images; H and W must suit the encoder (smp's own check).
        gate: Applied to the encoder's feature list before the decoder reads it.

    Returns:
        The features.

    """
    if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
        net.check_input_shape(image)  # smp's own check, which its forward skips when tracing or compiling too
    encoded = net.encoder(image)
    features, extra = _split_encoder_output(encoded)
    if gate is not None:
        features = gate(features)
    decoder, context = _decode(net, features, extra)
    return SegmentationFeatures(
        logits=net.segmentation_head(decoder), encoder=features, decoder=decoder, context=context
    )


def _split_encoder_output(encoded: object) -> tuple[list[Tensor], tuple[Tensor, ...]]:
    """The feature list, and what else the encoder returned for the decoder (DPT's prefix tokens)."""
    if isinstance(encoded, tuple) and len(encoded) == 2 and isinstance(encoded[0], (list, tuple)):
        return list(encoded[0]), (encoded[1],)
    return list(encoded), ()


@cache
def _takes_unpacked_features(decoder_type: type) -> bool:
    """Whether a decoder's ``forward`` takes the features as positional arguments (smp 0.4) or as one list."""
    parameters = inspect.signature(decoder_type.forward).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)


def _decode(
    net: smp.base.SegmentationModel, features: list[Tensor], extra: tuple[Tensor, ...]
) -> tuple[Tensor, Tensor | None]:
    """The decoder's output, and the high-level context of DeepLabV3+ / DeepLabV3 / PSPNet.

    The only place that depends on smp's internals (read in smp 0.4.0, 0.5.0 and 0.6.0, where they
    are the same; tests compare the logits with ``net(image)`` for every architecture):

    * a decoder takes the encoder's features as one list (0.5+) or unpacked (0.4: ``decoder(*features)``);
    * ``DeepLabV3PlusDecoder.forward``: ``aspp`` on the deepest features, ``up``-sampled,
      concatenated with ``block1`` of the stride-4 features (``features[2]``), then ``block2``;
    * ``PSPDecoder.forward``: ``psp`` (the pyramid pooling module) on the deepest features, then
      ``conv`` and ``dropout``.

    Those two decoders are run submodule by submodule to reach the context inside them; every
    other decoder is called whole.
    """
    decoder = net.decoder
    if isinstance(net, smp.DeepLabV3Plus):
        context = decoder.aspp(features[-1])
        skip = decoder.block1(features[2])
        return decoder.block2(torch.cat([decoder.up(context), skip], dim=1)), context
    if isinstance(net, smp.PSPNet):
        context = decoder.psp(features[-1])
        return decoder.dropout(decoder.conv(context)), context
    output = decoder(*features, *extra) if _takes_unpacked_features(type(decoder)) else decoder(features, *extra)
    return output, output if isinstance(net, smp.DeepLabV3) else None
