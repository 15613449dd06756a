"""Erroneous pixel prediction (Gong et al., 2021): a frozen semantic branch, an error branch, a detail branch, fusion.

:class:`ErrorPixelModule` is a cascade of heads over one frozen segmentation network, each head
taking what the previous one computed as an argument (as in mmsegmentation's cascade
encoder-decoder), without hooks:

1. the **semantic branch** (``self.net``, a :class:`~segmend.frozen.FrozenModel`): any
   segmentation-models-pytorch net, loaded from a :class:`SegmentationModule` checkpoint
   (``semantic_checkpoint``) or trained by the first stage; its probability map, its high-level
   features (``context``: DeepLabV3+'s ASPP, PSPNet's pyramid pooling) and its encoder features are
   read through :func:`segmend.nets.features.forward_features`;
2. the **error branch** (:class:`~segmend.nets.error_pixel.ErrorBranch`): the probability that the
   semantic label of a pixel is wrong, trained with the balanced cross-entropy of Eq. 2;
3. the **detail branch** (:class:`~segmend.nets.error_pixel.DetailBranch`): a GAU decoder over the
   semantic features, trained with cross-entropy on the pixels the error branch flags (Eqs. 3-4);
4. **fusion** (Eq. 5): the detail label where ``P_ep > t``, the semantic label elsewhere. This is what
   :meth:`ErrorPixelModule.forward`, validation (``val/mIoU``) and ``segmend predict`` give.

``segmend fit`` runs its stages (:meth:`ErrorPixelModule.training_stages`, resumable):
``semantic`` (only without ``semantic_checkpoint``: a plain :class:`SegmentationModule` fit),
``error`` (only the error branch trains), ``detail`` (only the detail branch trains; the error
branch is frozen). See ``docs/errorpix.md``.
"""

from segmend.modules.error_pixel.module import ErrorPixelModule, ErrorPixelOutputs

__all__ = ["ErrorPixelModule", "ErrorPixelOutputs"]
