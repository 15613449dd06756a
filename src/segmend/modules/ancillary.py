"""The ancillary model of self-correcting networks: segmentation given the image and its boxes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from segmend.modules.segmentation import SegmentationModule, refuse_net
from segmend.nets.box_attention import BoxAttentionNet
from segmend.nets.features import SegmentationFeatures


class AncillaryModule(SegmentationModule):
    """``p_anc(y | x, b)``: an smp encoder-decoder with a bounding-box attention encoder (Eq. 1).

    Trained with pixel cross-entropy on fully supervised samples (``has_mask`` true; the stage
    runner serves it half of F). Every batch must carry ``boxes`` (B, C, H, W), the box mask with
    channel 0 = "no box covers this pixel" (``with_boxes: true`` in the DataModule); at inference
    it needs the boxes too, so ``predict_step`` reads them from the batch. The boxes go to the net
    as an argument (:meth:`batch_features`); nothing is kept between calls. An auxiliary head
    (``aux_weight``) reads the gated encoder features.

    Args:
        attention_stages: Encoder feature maps gated by box attention (indices into the smp
            encoder's feature list); ``None`` takes those the decoder consumes.
        **kwargs: Arguments of :class:`SegmentationModule` (``arch``, ``encoder_name``, optimizer,
            ...). Test-time augmentation is not supported (the boxes would need the same warps).

    Raises:
        ValueError: If test-time augmentation or a custom ``net`` is configured.

    """

    def __init__(self, attention_stages: Sequence[int] | None = None, **kwargs: Any) -> None:
        if tuple(kwargs.get("tta_scales", (1.0,))) != (1.0,) or kwargs.get("tta_flip", False):
            raise ValueError(
                "AncillaryModule does not support test-time augmentation (its box masks would need the "
                "same flips and scales); remove tta_scales / tta_flip."
            )
        refuse_net(
            kwargs,
            "AncillaryModule",
            "its own BoxAttentionNet from arch / encoder_name",
            "to wrap your own smp model, build segmend.nets.box_attention.BoxAttentionNet(net=...) and pass it as "
            "net of a subclass, or use arch / encoder_name",
        )
        super().__init__(**kwargs)

    def configure_models(self) -> None:
        """Build the box-attention network."""
        hp = self.hparams
        self.net = BoxAttentionNet(
            self.num_classes,
            hp.arch,
            hp.encoder_name,
            hp.encoder_weights,
            attention_stages=hp.attention_stages,
            **(hp.net_kwargs or {}),
        )

    def forward(self, image: Tensor, boxes: Tensor | None = None) -> Tensor:
        """(B, 3, H, W) images and (B, C, H, W) box masks -> (B, C, H, W) logits (fp32 under mixed precision).

        Raises:
            ValueError: If no box mask is given.

        """
        if boxes is None:
            raise ValueError(
                "AncillaryModule needs the box mask: call model(image, boxes), with batches that have a "
                "'boxes' entry (with_boxes: true in the DataModule)."
            )
        return self.output_logits(self.forward_features(image, boxes), image)

    def _require_boxes(self, batch: dict[str, Any]) -> Tensor:
        if "boxes" not in batch:
            raise ValueError(
                "AncillaryModule got a batch without 'boxes'; set with_boxes: true in the DataModule "
                f"(batch keys: {sorted(batch)})."
            )
        return batch["boxes"]

    def batch_features(self, batch: dict[str, Any]) -> SegmentationFeatures:
        """The features of a batch's images, gated by the batch's box masks.

        Raises:
            ValueError: If the batch has no box masks.

        """
        return self.forward_features(batch["image"], self._require_boxes(batch))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Label maps and probabilities of a batch (boxes read from the batch)."""
        probs = self(batch["image"], self._require_boxes(batch)).softmax(dim=1)
        return {"id": batch.get("id"), "labels": probs.argmax(dim=1), "probs": probs}
