"""The error-prediction and detail branches of erroneous pixel prediction (Gong et al., 2021), and fusion.

A frozen *semantic* network labels an image; the error-prediction branch (:class:`ErrorBranch`)
predicts, per pixel, the probability that this label is wrong; the detail branch
(:class:`DetailBranch`) re-labels the image from the semantic network's features; :func:`fuse`
keeps the detail label where the binarised error map is on (Eq. 5). :func:`error_mass` condenses an
error map to per-image scores (an acquisition score for troubleshooting).

The branches are plain modules: every input is an explicit tensor argument (the semantic
probabilities, its high-level features such as DeepLabV3+'s ASPP or PSPNet's pyramid pooling
output, its encoder features, the image), so any source can feed them, e.g.
:class:`segmend.nets.features.SegmentationFeatures`. Widths are given as channel counts; use
:func:`select_skips` on the shapes of one forward to pick the detail branch's skip features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from segmend.nets.gau import ConvNormAct, GAUBlock, check_channels, resize
from segmend.precision import fp32

#: The paper's binarisation threshold ``t`` of the error map (Eq. 4, Tab. 2).
ERROR_THRESHOLD = 0.7


class ErrorBranch(nn.Module):
    """Error-prediction branch: one logit per pixel, high where the semantic label is likely wrong.

    The low-level input is the concatenation of a 3x3 ConvNormAct of the semantic probability map
    and a convolutional stem of the RGB image, both at ``1/stride`` of the image size; the semantic
    high-level features enter through a :class:`~segmend.nets.gau.GAUBlock` over it; a 1x1
    convolution gives the logit, bilinearly upsampled to the image size.

    The image stem is ``log2(stride)`` 3x3 ConvNormAct of stride 2 (one of stride 1 for
    ``stride=1``); the probability map is resized to the stem's output size (area averaging when
    shrinking), so it may come at any resolution.

    Args:
        num_classes: Classes of the semantic probability map.
        high_channels: Channels of the semantic high-level features.
        width: Width of the GAU stage (a multiple of ``groups``).
        prob_channels: Channels of the probability map's features (a multiple of ``groups``).
        image_channels: Channels of the image stem (a multiple of ``groups``).
        stride: Downsampling of the branch's working resolution relative to the image; a power of 2
            (4: the resolution of DeepLabV3+'s decoder, as in the paper).
        convs: 3x3 convolutions after the GAU.
        groups: GroupNorm groups (32 in the paper).
        image_in_channels: Channels of the input image.

    Raises:
        ValueError: If ``stride`` is not a power of 2, ``num_classes`` < 1, or a width does not suit
            ``groups``.

    """

    def __init__(
        self,
        num_classes: int,
        high_channels: int,
        width: int = 64,
        prob_channels: int = 32,
        image_channels: int = 32,
        stride: int = 4,
        convs: int = 2,
        groups: int = 32,
        image_in_channels: int = 3,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"ErrorBranch needs num_classes >= 1, got {num_classes}.")
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"ErrorBranch needs a stride that is a power of 2 (1, 2, 4, ...), got {stride}.")
        self.num_classes = num_classes
        self.image_in_channels = image_in_channels
        self.stride = stride
        steps = max(stride.bit_length() - 1, 1)
        self.image_stem = nn.Sequential(
            *(
                ConvNormAct(
                    image_in_channels if step == 0 else image_channels,
                    image_channels,
                    3,
                    stride=1 if stride == 1 else 2,
                    groups=groups,
                )
                for step in range(steps)
            )
        )
        self.prob_conv = ConvNormAct(num_classes, prob_channels, 3, groups=groups)
        self.block = GAUBlock(high_channels, prob_channels + image_channels, width, convs, groups)
        self.classifier = nn.Conv2d(width, 1, 1)

    def forward(self, probs: Tensor, high: Tensor, image: Tensor) -> Tensor:
        """Predict the error logit of every pixel.

        Args:
            probs: (B, num_classes, h, w) semantic class probabilities, at any resolution.
            high: (B, high_channels, h', w') semantic high-level features.
            image: (B, image_in_channels, H, W) the image the semantic net read.

        Returns:
            (B, 1, H, W) error logits (``sigmoid`` gives the error probability ``P_ep``).

        Raises:
            ValueError: If an input has other channels than the branch was built for.

        """
        check_channels("ErrorBranch probabilities", probs, self.num_classes)
        check_channels("ErrorBranch image", image, self.image_in_channels)
        image_features = self.image_stem(image)  # (B, image_channels, H/stride, W/stride)
        work_size = tuple(image_features.shape[-2:])
        prob_features = self.prob_conv(resize(probs, work_size))  # (B, prob_channels, H/s, W/s)
        low = torch.cat([prob_features, image_features], dim=1)  # (B, prob + image channels, H/s, W/s)
        merged = self.block(high, low)  # (B, width, H/s, W/s)
        return resize(self.classifier(merged), tuple(image.shape[-2:]))  # (B, 1, H, W)


class DetailBranch(nn.Module):
    """Detail branch: a decoder of GAU blocks over the semantic features, giving class logits.

    Block ``k`` merges the previous block's output (the semantic high-level features for the first)
    with skip feature ``k`` of the semantic encoder; skips go from deep (coarse) to shallow (fine).
    A 1x1 convolution maps the last block to class logits. The paper uses three blocks; their
    number is the number of skips.

    Args:
        num_classes: Output classes.
        high_channels: Channels of the semantic high-level features.
        skip_channels: Channels of each skip feature, deep to shallow.
        widths: Width of each block (multiples of ``groups``), one per skip.
        convs: 3x3 convolutions after each GAU (2 in the paper's Fig. 2).
        groups: GroupNorm groups (32 in the paper).

    Raises:
        ValueError: If there is no skip, or ``widths`` and ``skip_channels`` differ in length.

    """

    def __init__(
        self,
        num_classes: int,
        high_channels: int,
        skip_channels: Sequence[int],
        widths: Sequence[int] = (256, 128, 64),
        convs: int = 2,
        groups: int = 32,
    ) -> None:
        super().__init__()
        skip_channels, widths = tuple(skip_channels), tuple(widths)
        if num_classes < 1:
            raise ValueError(f"DetailBranch needs num_classes >= 1, got {num_classes}.")
        if not skip_channels:
            raise ValueError("DetailBranch needs at least one skip feature; got skip_channels=().")
        if len(widths) != len(skip_channels):
            raise ValueError(
                f"DetailBranch needs one width per skip feature; got {len(widths)} widths {widths} for "
                f"{len(skip_channels)} skips {skip_channels}."
            )
        self.num_classes = num_classes
        self.skip_channels = skip_channels
        inputs = (high_channels, *widths[:-1])
        self.blocks = nn.ModuleList(
            GAUBlock(high, skip, width, convs, groups)
            for high, skip, width in zip(inputs, skip_channels, widths, strict=True)
        )
        self.classifier = nn.Conv2d(widths[-1], num_classes, 1)

    def forward(self, high: Tensor, skips: Sequence[Tensor], size: tuple[int, int] | None = None) -> Tensor:
        """Decode class logits.

        Args:
            high: (B, high_channels, h, w) semantic high-level features.
            skips: Encoder features, deep to shallow, skip ``k`` (B, skip_channels[k], h_k, w_k).
            size: Output (height, width), e.g. the image's; ``None`` keeps the last skip's size.

        Returns:
            (B, num_classes, *size) class logits.

        Raises:
            ValueError: If the number of skips differs from the branch's.

        """
        logits = self.classifier(self.block_features(high, skips)[-1])  # (B, num_classes, h_last, w_last)
        return logits if size is None else resize(logits, size)  # (B, num_classes, *size)

    def block_features(self, high: Tensor, skips: Sequence[Tensor]) -> list[Tensor]:
        """The output of every GAU block, first (coarse) to last (fine); the classifier reads the last.

        Args:
            high: (B, high_channels, h, w) semantic high-level features.
            skips: Encoder features, deep to shallow, skip ``k`` (B, skip_channels[k], h_k, w_k).

        Returns:
            One (B, widths[k], h_k, w_k) map per block.

        Raises:
            ValueError: If the number of skips differs from the branch's.

        """
        if len(skips) != len(self.blocks):
            raise ValueError(
                f"DetailBranch was built for {len(self.blocks)} skip features (channels {self.skip_channels}) "
                f"but got {len(skips)}."
            )
        outputs = []
        features = high  # (B, high_channels, h, w)
        for block, skip in zip(self.blocks, skips, strict=True):
            features = block(features, skip)  # (B, width_k, h_k, w_k)
            outputs.append(features)
        return outputs


def skip_candidates(encoder_shapes: Sequence[Sequence[int]], high_shape: Sequence[int]) -> tuple[int, ...]:
    """Every encoder feature map :func:`select_skips` may pick, coarsest first.

    Candidates are the maps finer than the high-level features (at least as tall and wide, and
    larger in one of the two), with at least one channel, leaving out index 0 (an smp encoder's
    first entry is the input image itself). At each resolution the deepest map (the highest
    index) is taken.

    Args:
        encoder_shapes: Shapes ``(..., C, H, W)`` of the encoder's feature maps, shallow to deep.
        high_shape: Shape ``(..., C, h, w)`` of the high-level features.

    Returns:
        Indices into the encoder's feature list, deep (coarse) to shallow (fine); one per resolution.

    """
    high_size = tuple(high_shape[-2:])
    by_size: dict[tuple[int, int], int] = {}
    for index, shape in enumerate(encoder_shapes):
        size = (int(shape[-2]), int(shape[-1]))
        finer = size[0] >= high_size[0] and size[1] >= high_size[1] and size != high_size
        if index > 0 and shape[-3] > 0 and finer:
            by_size[size] = index
    return tuple(by_size[size] for size in sorted(by_size, key=lambda s: (s[0] * s[1], s)))


def select_skips(encoder_shapes: Sequence[Sequence[int]], high_shape: Sequence[int], count: int = 3) -> tuple[int, ...]:
    """Pick the detail branch's skip features from an encoder's feature list.

    The ``count`` coarsest of the :func:`skip_candidates` (maps finer than the high-level
    features, the deepest one per resolution, the input image left out), deep to shallow.

    Args:
        encoder_shapes: Shapes ``(..., C, H, W)`` of the encoder's feature maps, shallow to deep (as
            in :attr:`segmend.nets.features.SegmentationFeatures.encoder`), e.g. from one forward.
        high_shape: Shape ``(..., C, h, w)`` of the high-level features.
        count: Number of skips (GAU blocks) wanted.

    Returns:
        Indices into the encoder's feature list, deep to shallow.

    Raises:
        ValueError: If ``count`` < 1 or fewer than ``count`` maps qualify.

    """
    if count < 1:
        raise ValueError(f"select_skips needs count >= 1, got {count}.")
    chosen = skip_candidates(encoder_shapes, high_shape)
    if len(chosen) < count:
        available = [tuple(encoder_shapes[i][-3:]) for i in chosen]
        raise ValueError(
            f"Only {len(chosen)} encoder feature maps are finer than the high-level features "
            f"{tuple(high_shape[-3:])} (C, h, w): {available}; ask for count={len(chosen)} skips (a detail "
            "branch with that many GAU blocks) or use a deeper encoder."
        )
    return chosen[:count]


def as_error_map(error_prob: Tensor) -> Tensor:
    """(B, 1, H, W) or (B, H, W) error probabilities (or logits) -> (B, H, W), fp32 for fp16/bf16 inputs.

    Raises:
        ValueError: For any other shape.

    """
    if error_prob.ndim == 4 and error_prob.shape[1] == 1:
        error_prob = error_prob.squeeze(1)
    if error_prob.ndim != 3:
        raise ValueError(
            f"An error map (probabilities or logits) should be (B, 1, H, W) or (B, H, W); got shape "
            f"{tuple(error_prob.shape)}."
        )
    return fp32(error_prob)


def check_threshold(threshold: float, name: str = "threshold") -> None:
    """Raise unless ``threshold`` lies in [0, 1) (a probability above which a pixel counts as erroneous).

    Raises:
        ValueError: If it does not.

    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"The error {name} must be in [0, 1), got {threshold}.")


def error_mask(error_prob: Tensor, threshold: float = ERROR_THRESHOLD) -> Tensor:
    """The binary error map ``E_ep`` of Eq. 4: ``P_ep > t``, compared in fp32 at least.

    Args:
        error_prob: (B, 1, H, W) or (B, H, W) error probabilities.
        threshold: The binarisation threshold ``t``.

    Returns:
        (B, H, W) bool mask.

    Raises:
        ValueError: On a bad shape or threshold.

    """
    check_threshold(threshold)
    return as_error_map(error_prob) > threshold


def fuse(
    semantic_probs: Tensor, detail_probs: Tensor, error_prob: Tensor, threshold: float = ERROR_THRESHOLD
) -> Tensor:
    """Fuse the semantic and detail predictions by the binarised error map (Eq. 5).

    ``P_f = E_ep * P_db + (1 - E_ep) * P_sb`` with ``E_ep = P_ep > t``: the detail branch's
    probabilities (so its label) where the error mask is on, the semantic branch's elsewhere.
    Any per-class scores work if both inputs are of the same kind; the result's argmax is the fused
    label map.

    Args:
        semantic_probs: (B, C, H, W) semantic class probabilities.
        detail_probs: (B, C, H, W) detail class probabilities.
        error_prob: (B, 1, H, W) or (B, H, W) error probabilities.
        threshold: The binarisation threshold ``t``.

    Returns:
        (B, C, H, W) fused probabilities.

    Raises:
        ValueError: If the shapes disagree or the threshold is outside [0, 1).

    """
    if semantic_probs.shape != detail_probs.shape or semantic_probs.ndim != 4:
        raise ValueError(
            f"fuse needs semantic and detail probabilities of one shape (B, C, H, W); got "
            f"{tuple(semantic_probs.shape)} and {tuple(detail_probs.shape)}."
        )
    mask = error_mask(error_prob, threshold)  # (B, H, W)
    if mask.shape != semantic_probs.shape[:1] + semantic_probs.shape[2:]:
        raise ValueError(
            f"The error map has shape {tuple(mask.shape)} but the probabilities are "
            f"{tuple(semantic_probs.shape)}; resize the error map to the probabilities' (H, W) first."
        )
    return torch.where(mask.unsqueeze(1), detail_probs, semantic_probs)  # (B, C, H, W)


@dataclass(frozen=True)
class ErrorMass:
    """Per-image error mass of predicted error maps.

    Attributes:
        mean: (B,) mean predicted error probability of each image.
        area: (B,) fraction of each image's pixels whose error probability exceeds the threshold.

    """

    mean: Tensor
    area: Tensor


def error_mass(error_prob: Tensor, threshold: float = ERROR_THRESHOLD) -> ErrorMass:
    """The predicted error mass of each image, an acquisition score that needs no competing model.

    Args:
        error_prob: (B, 1, H, W) or (B, H, W) predicted error probabilities.
        threshold: The binarisation threshold ``t`` of the error mask.

    Returns:
        The per-image mean error probability and error-mask area (fp32, or the input's float type
        if wider), each (B,).

    Raises:
        ValueError: On a bad shape or threshold.

    """
    probs = as_error_map(error_prob)  # (B, H, W)
    mask = error_mask(probs, threshold)  # (B, H, W)
    return ErrorMass(mean=probs.mean(dim=(1, 2)), area=mask.to(probs.dtype).mean(dim=(1, 2)))
