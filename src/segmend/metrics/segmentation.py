"""Semantic segmentation metrics with mmsegmentation's definitions, built on torchmetrics.

Every metric here shares one state, the confusion matrix of
:class:`torchmetrics.classification.MulticlassConfusionMatrix` (pixels with the ignore index
are dropped, states are summed across DDP ranks), so a :class:`MetricCollection` of them
updates it once per batch through a compute group. Definitions (mmseg ``total_area_to_metrics``):

* ``IoU_c = |pred=c & gt=c| / |pred=c or gt=c|``; a class with an empty union is NaN and is
  left out of ``mIoU`` (``nanmean``), not counted as 0.
* ``Acc_c = |pred=c & gt=c| / |gt=c|``; classes absent from the labels are left out of ``mAcc``.
* ``aAcc`` = correctly labelled pixels / labelled pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix


class _ConfusionMatrixMetric(MulticlassConfusionMatrix):
    """Confusion-matrix state (rows: ground truth, columns: prediction)."""

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index, validate_args=False)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Accumulate a batch.

        Args:
            preds: (B, C, H, W) scores or (B, H, W) predicted labels.
            target: (B, H, W) labels, ``ignore_index`` where unlabeled.

        Raises:
            ValueError: If a label is neither a class index nor the ignore index.

        """
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)
        valid = target != self.ignore_index
        bad = valid & ((target < 0) | (target >= self.num_classes))
        if bool(bad.any()):
            found = torch.unique(target[bad]).tolist()[:10]
            raise ValueError(
                f"Label values {found} are outside 0..{self.num_classes - 1} and not the ignore "
                f"index {self.ignore_index}; check num_classes and the dataset's label mapping."
            )
        super().update(preds, target)

    def _areas(self) -> tuple[Tensor, Tensor, Tensor]:
        confmat = self.confmat.double()
        intersect = confmat.diag()
        area_label = confmat.sum(dim=1)
        area_pred = confmat.sum(dim=0)
        return intersect, area_label, area_pred


def _nan_divide(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den > 0, num / den.clamp(min=1), torch.full_like(num, float("nan")))


class ClassIoU(_ConfusionMatrixMetric):
    """Per-class IoU; NaN for classes with an empty union."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(num_classes, ignore_index)
        names = list(class_names) if class_names is not None else []
        if names and len(names) != num_classes:
            raise ValueError(f"Got {len(names)} class names for num_classes={num_classes}.")
        self.class_names = names or [str(i) for i in range(num_classes)]

    def compute(self) -> dict[str, Tensor]:  # noqa: D102
        intersect, area_label, area_pred = self._areas()
        iou = _nan_divide(intersect, area_label + area_pred - intersect)
        return {f"IoU_{name}": iou[i].float() for i, name in enumerate(self.class_names)}


class MeanIoU(_ConfusionMatrixMetric):
    """Mean IoU over classes with a non-empty union."""

    def compute(self) -> Tensor:  # noqa: D102
        intersect, area_label, area_pred = self._areas()
        return torch.nanmean(_nan_divide(intersect, area_label + area_pred - intersect)).float()


class MeanClassAccuracy(_ConfusionMatrixMetric):
    """Mean per-class pixel accuracy over classes present in the labels (mmseg ``mAcc``)."""

    def compute(self) -> Tensor:  # noqa: D102
        intersect, area_label, _ = self._areas()
        return torch.nanmean(_nan_divide(intersect, area_label)).float()


class OverallAccuracy(_ConfusionMatrixMetric):
    """Fraction of labelled pixels predicted correctly (mmseg ``aAcc``)."""

    def compute(self) -> Tensor:  # noqa: D102
        intersect, area_label, _ = self._areas()
        return _nan_divide(intersect.sum(), area_label.sum()).float()


def segmentation_metrics(
    num_classes: int,
    ignore_index: int = 255,
    class_names: Sequence[str] | None = None,
    prefix: str | None = None,
) -> MetricCollection:
    """Collection logging ``mIoU``, ``aAcc``, ``mAcc`` and ``IoU_<class>``.

    Args:
        num_classes: Number of classes, background included.
        ignore_index: Label of unlabeled pixels.
        class_names: Names used in the per-class keys; indices when ``None``.
        prefix: Key prefix such as ``"val/"``.

    Returns:
        A collection whose members share one confusion matrix.

    """
    return MetricCollection(
        {
            "mIoU": MeanIoU(num_classes, ignore_index),
            "aAcc": OverallAccuracy(num_classes, ignore_index),
            "mAcc": MeanClassAccuracy(num_classes, ignore_index),
            "IoU": ClassIoU(num_classes, ignore_index, class_names),
        },
        prefix=prefix,
        compute_groups=[["mIoU", "aAcc", "mAcc", "IoU"]],
    )
