"""Metrics against an independent numpy implementation of mmsegmentation's definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segmend.metrics import segmentation_metrics


def reference_scores(preds: list[np.ndarray], targets: list[np.ndarray], num_classes: int, ignore: int = 255):
    """Per-class areas accumulated over the whole set, as mmseg's intersect_and_union does."""
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    label = np.zeros(num_classes)
    for pred, target in zip(preds, targets, strict=False):
        keep = target != ignore
        p, t = pred[keep], target[keep]
        for c in range(num_classes):
            inter[c] += np.sum((p == c) & (t == c))
            union[c] += np.sum((p == c) | (t == c))
            label[c] += np.sum(t == c)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
        acc = inter / label
    return {
        "mIoU": np.nanmean(iou),
        "mAcc": np.nanmean(acc),
        "aAcc": inter.sum() / label.sum(),
        "IoU": iou,
    }


def make_batches(seed: int, num_batches: int, num_classes: int, absent: int | None):
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(num_batches):
        target = rng.integers(0, num_classes, size=(3, 17, 23))
        pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, num_classes, size=target.shape))
        if absent is not None:  # a class in neither labels nor predictions
            target[target == absent] = 0
            pred[pred == absent] = 1
        target[rng.random(target.shape) < 0.1] = 255
        preds.append(pred)
        targets.append(target)
    return preds, targets


@pytest.mark.parametrize("absent", [None, 3])
def test_metrics_match_reference_over_batches(absent):
    num_classes = 5
    preds, targets = make_batches(0, 4, num_classes, absent)
    names = [f"c{i}" for i in range(num_classes)]
    metrics = segmentation_metrics(num_classes, class_names=names, prefix="val/")
    for pred, target in zip(preds, targets, strict=False):
        metrics.update(torch.from_numpy(pred), torch.from_numpy(target))
    got = metrics.compute()
    ref = reference_scores(preds, targets, num_classes)
    assert got["val/mIoU"].item() == pytest.approx(ref["mIoU"], abs=1e-6)
    assert got["val/mAcc"].item() == pytest.approx(ref["mAcc"], abs=1e-6)
    assert got["val/aAcc"].item() == pytest.approx(ref["aAcc"], abs=1e-6)
    for c in range(num_classes):
        value = got[f"val/IoU_c{c}"].item()
        if np.isnan(ref["IoU"][c]):
            assert np.isnan(value)
        else:
            assert value == pytest.approx(ref["IoU"][c], abs=1e-6)
    if absent is not None:
        # left out of the mean, not counted as 0
        assert got["val/mIoU"].item() == pytest.approx(np.mean(np.delete(ref["IoU"], absent)), abs=1e-6)


def test_metrics_accept_scores_and_reset():
    metrics = segmentation_metrics(3)
    target = torch.tensor([[[0, 1], [2, 255]]])
    scores = torch.nn.functional.one_hot(torch.tensor([[[0, 1], [1, 0]]]), 3).permute(0, 3, 1, 2).float()
    metrics.update(scores, target)
    out = metrics.compute()
    assert out["aAcc"].item() == pytest.approx(2 / 3)
    assert out["IoU_2"].item() == 0.0  # gt class 2 never predicted: IoU 0, not NaN
    metrics.reset()
    metrics.update(target.clamp(max=2), target)
    assert metrics.compute()["mIoU"].item() == pytest.approx(1.0)


def test_metrics_reject_labels_outside_classes():
    metrics = segmentation_metrics(3)
    with pytest.raises(ValueError, match="outside 0..2"):
        metrics.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 7], [1, 255]]]))
