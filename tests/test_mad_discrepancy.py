"""segmend.mad.discrepancy: d(f, g) as per-image mIoU, class area fractions, pixel entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segmend.mad import batch_discrepancy, class_fractions, discrepancy, mean_pixel_entropy, pair_confusion


def test_discrepancy_hand_computed() -> None:
    a = np.array([[0, 0], [1, 1]])
    b = np.array([[0, 1], [1, 1]])
    # class 0: 1 / 2; class 1: 2 / 3
    assert discrepancy(a, b) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert discrepancy(b, a) == pytest.approx(discrepancy(a, b))
    assert discrepancy(a, a) == 1.0


def test_discrepancy_counts_classes_present_in_either_map_background_included() -> None:
    a = np.array([[2, 2], [0, 0]])
    b = np.zeros((2, 2), dtype=np.int64)
    # background: 2 / 4; class 2 only in a: 0 / 2; class 1 absent from both is not counted
    assert discrepancy(a, b, num_classes=3) == pytest.approx(0.25)


def test_discrepancy_excludes_ignored_pixels() -> None:
    a = np.array([[0, 0], [1, 1]])
    b = np.array([[0, 255], [1, 1]])
    assert discrepancy(a, b) == 1.0
    assert discrepancy(a, b, num_classes=256, ignore_index=None) == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert math.isnan(discrepancy(np.full((2, 2), 255), np.full((2, 2), 255), num_classes=2))


def test_batch_discrepancy_matches_per_image() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (6, 16, 12), generator=generator)
    b = torch.randint(0, 5, (6, 16, 12), generator=generator)
    b[0] = a[0]
    b[1, :4] = 255
    batched = batch_discrepancy(a, b, num_classes=5)
    assert batched.shape == (6,)
    assert batched[0] == 1.0
    for i in range(6):
        assert batched[i].item() == pytest.approx(discrepancy(a[i], b[i], num_classes=5))
    assert torch.allclose(pair_confusion(a, b, 5).sum(dim=(1, 2)), (b != 255).flatten(1).sum(dim=1))


def test_class_fractions() -> None:
    mask = torch.tensor([[[0, 0, 1, 255], [2, 2, 2, 255]], [[1, 1, 1, 1], [1, 1, 1, 1]]])  # (2, 2, 4)
    fractions = class_fractions(mask, num_classes=3)
    assert fractions.shape == (2, 3)
    assert torch.allclose(fractions, torch.tensor([[2 / 6, 1 / 6, 3 / 6], [0.0, 1.0, 0.0]], dtype=torch.float64))
    assert class_fractions(np.zeros((3, 3), dtype=np.uint8), num_classes=2).tolist() == [[1.0, 0.0]]


def test_mean_pixel_entropy() -> None:
    uniform = torch.full((2, 4, 3, 3), 0.25)
    certain = torch.zeros(1, 4, 3, 3)
    certain[:, 1] = 1
    assert torch.allclose(mean_pixel_entropy(uniform), torch.full((2,), math.log(4)))
    assert mean_pixel_entropy(certain).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: discrepancy(np.zeros((2, 2), int), np.zeros((2, 3), int)), "same shape"),
        (lambda: discrepancy(np.zeros((1, 2, 2), int), np.zeros((1, 2, 2), int)), "batch_discrepancy"),
        (lambda: batch_discrepancy(np.full((1, 2, 2), 7), np.zeros((1, 2, 2), int), 3), r"\[7\] outside 0..2"),
        (lambda: batch_discrepancy(torch.rand(1, 2, 2), torch.rand(1, 2, 2), 3), "argmax"),
        (lambda: class_fractions(np.zeros(4, int), 2), r"\(H, W\) or \(B, H, W\)"),
        (lambda: mean_pixel_entropy(torch.rand(2, 3)), r"\(B, C, H, W\)"),
    ],
)
def test_clear_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
