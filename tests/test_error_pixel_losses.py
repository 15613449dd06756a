"""Error target (Eq. 1), balanced error loss (Eq. 2) and detail loss (Eqs. 3-4) on hand-built cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from segmend.losses.error_pixel import (
    balanced_error_loss,
    detail_loss,
    error_pixel_weights,
    error_proportion,
    error_target,
    semantic_confidence,
)

IGNORE = 255


def probability_map(labels: list[list[list[int]]], confidence: list[list[list[float]]], num_classes: int = 3):
    """(B, C, H, W) probabilities: ``confidence`` on ``labels``, the rest spread evenly over the other classes."""
    labels_t, conf_t = torch.tensor(labels), torch.tensor(confidence)
    rest = ((1 - conf_t) / (num_classes - 1)).unsqueeze(1).expand(-1, num_classes, -1, -1)
    return rest.scatter(1, labels_t.unsqueeze(1), conf_t.unsqueeze(1)).contiguous()


@pytest.fixture
def case():
    """Two 2 x 2 images, three classes.

    Image 0: (0,0) right (conf 0.6); (0,1) wrong, conf 0.97 -> hard; (1,0) wrong, conf 0.5 -> easy;
    (1,1) unlabeled. 2 errors in 3 labelled pixels -> w3 = 2/3.
    Image 1: three right (conf 0.9); (1,1) wrong with conf exactly 0.95 -> easy (hard needs > rho).
    1 error in 4 -> w3 = 1/4.
    """
    target = torch.tensor([[[0, 1], [2, IGNORE]], [[1, 1], [1, 1]]])
    predicted = [[[0, 0], [1, 2]], [[1, 1], [1, 0]]]
    confidence = [[[0.6, 0.97], [0.5, 0.8]], [[0.9, 0.9], [0.9, 0.95]]]
    return probability_map(predicted, confidence), target


def test_error_target_is_disagreement_with_ignored_pixels_excluded(case):
    probs, target = case
    expected = torch.tensor([[[0, 1], [1, IGNORE]], [[0, 0], [0, 1]]])
    assert torch.equal(error_target(probs, target, IGNORE), expected)
    assert torch.equal(error_target(probs.argmax(dim=1), target, IGNORE), expected)  # labels work too
    assert torch.equal(error_target(probs.log(), target, IGNORE), expected)  # so do logits
    with pytest.raises(ValueError, match="Shape mismatch: the semantic prediction"):
        error_target(probs[..., :1], target)


def test_easy_hard_and_negative_weights(case):
    probs, target = case
    error = error_target(probs, target, IGNORE)
    torch.testing.assert_close(error_proportion(error, IGNORE), torch.tensor([2 / 3, 1 / 4]))
    weights = error_pixel_weights(error, semantic_confidence(probs), rho=0.95, easy_weight=1.0, hard_weight=1.5)
    expected = torch.tensor([[[2 / 3, 1.5], [1.0, 0.0]], [[0.25, 0.25], [0.25, 1.0]]])
    torch.testing.assert_close(weights, expected)
    # An image without errors gets w3 = 0; one without labelled pixels has no weight at all.
    none_wrong = torch.zeros(1, 2, 2, dtype=torch.long)
    assert float(error_pixel_weights(none_wrong, torch.full((1, 2, 2), 0.5)).abs().sum()) == 0.0
    unlabeled = torch.full((1, 2, 2), IGNORE)
    torch.testing.assert_close(error_proportion(unlabeled), torch.zeros(1))
    with pytest.raises(ValueError, match="must be >= 0"):
        error_pixel_weights(error, semantic_confidence(probs), hard_weight=-1.0)


def test_balanced_error_loss_exact_values(case):
    probs, target = case
    # Zero logits: every labelled pixel costs log 2 times its weight.
    zeros = torch.zeros(2, 1, 2, 2)
    total = math.log(2) * (2 / 3 + 1.5 + 1.0 + 0.25 * 3 + 1.0)
    torch.testing.assert_close(balanced_error_loss(zeros, probs, target, reduction="sum"), torch.tensor(total))
    torch.testing.assert_close(balanced_error_loss(zeros, probs, target), torch.tensor(total / 7))  # 7 labelled
    # Arbitrary logits: -w log p on errors, -w3 log(1 - p) on correct pixels, 0 where unlabeled.
    logits = torch.tensor([[[1.0, -2.0], [0.5, 30.0]], [[-1.0, 2.0], [0.0, 3.0]]])
    p = torch.sigmoid(logits)
    expected = torch.tensor(
        [
            [[-(2 / 3) * math.log(1 - p[0, 0, 0]), -1.5 * math.log(p[0, 0, 1]), -math.log(p[0, 1, 0]), 0.0]],
            [
                [
                    -0.25 * math.log(1 - p[1, 0, 0]),
                    -0.25 * math.log(1 - p[1, 0, 1]),
                    -0.25 * math.log(0.5),
                    -math.log(p[1, 1, 1]),
                ]
            ],
        ]
    ).reshape(2, 2, 2)
    loss_map = balanced_error_loss(logits, probs, target, reduction="none")
    torch.testing.assert_close(loss_map, expected)


def test_balanced_error_loss_is_fp32_under_bf16(case):
    probs, target = case
    logits = torch.randn(2, 1, 2, 2)
    loss = balanced_error_loss(logits.bfloat16(), probs.bfloat16(), target)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(
        loss, balanced_error_loss(logits.bfloat16().float(), probs, target), atol=0.02, rtol=0.02
    )
    with pytest.raises(ValueError, match="reduction must be one of"):
        balanced_error_loss(logits, probs, target, reduction="max")


def test_detail_loss_counts_only_labelled_pixels_above_t():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 2, 3, requires_grad=True)
    target = torch.tensor([[[0, 1, 2], [IGNORE, 1, 0]]])
    error_prob = torch.tensor([[[0.9, 0.7, 0.71], [0.99, 0.2, 0.8]]])  # 0.7 is not above t; (1,0) is unlabeled
    selected = torch.tensor([[[True, False, True], [False, False, True]]])
    ce = F.cross_entropy(logits, target.clamp(max=2), reduction="none")
    loss = detail_loss(logits, target, error_prob, threshold=0.7)
    torch.testing.assert_close(loss, ce[selected].mean())
    loss.backward()
    unselected_grad = logits.grad.permute(0, 2, 3, 1)[~selected]
    assert float(unselected_grad.abs().sum()) == 0.0
    assert float(logits.grad.permute(0, 2, 3, 1)[selected].abs().sum()) > 0
    # No error map: every labelled pixel (the bagging baseline).
    torch.testing.assert_close(detail_loss(logits, target), F.cross_entropy(logits, target, ignore_index=IGNORE))


def test_detail_loss_without_qualifying_pixels_is_a_zero_with_a_graph():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4))
    loss = detail_loss(logits.bfloat16(), target, torch.full((2, 1, 4, 4), 0.3), threshold=0.7)
    assert loss.dtype == torch.float32 and float(loss) == 0.0 and loss.requires_grad
    loss.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="Shape mismatch: the error map"):
        detail_loss(logits, target, torch.rand(2, 1, 2, 2))
