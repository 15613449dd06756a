"""Error-pixel IoU, hard recall and the threshold sweep (Tab. 1) on hand-built counts; the sweep's table and PNG."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics import MetricCollection

from segmend.metrics.error_pixel import (
    ErrorPixelIoU,
    ErrorThresholdSweep,
    HardErrorRecall,
    count_above,
    sweep_markdown,
    write_sweep,
)

IGNORE = 255


@pytest.fixture
def case():
    """One 1 x 6 image, two classes.

    pixel:        0     1      2      3     4     5
    label:        0     0      1      1     0     ignored
    semantic:     0     1      0      0     0     1
    confidence:   0.6   0.97   0.99   0.55  0.99  0.9
    -> errors {1, 2, 3}, hard errors {1, 2}, labelled {0..4}
    error prob:   0.8   0.75   0.3    0.9   0.1   0.95
    """
    target = torch.tensor([[[0, 0, 1, 1, 0, IGNORE]]])
    predicted = torch.tensor([[[0, 1, 0, 0, 0, 1]]])
    confidence = torch.tensor([[[0.6, 0.97, 0.99, 0.55, 0.99, 0.9]]])
    probs = torch.where(
        torch.nn.functional.one_hot(predicted, 2).permute(0, 3, 1, 2).bool(), confidence, 1 - confidence
    )
    error_prob = torch.tensor([[[[0.8, 0.75, 0.3, 0.9, 0.1, 0.95]]]])
    return error_prob, probs, target


def test_iou_and_hard_recall_at_t(case):
    iou, recall = ErrorPixelIoU(threshold=0.7), HardErrorRecall(threshold=0.7)
    iou.update(*case)
    recall.update(*case)
    # Predicted {0, 1, 3}, errors {1, 2, 3}: intersection 2, union 4. Hard {1, 2}: 1 caught.
    assert float(iou.compute()) == pytest.approx(0.5)
    assert float(recall.compute()) == pytest.approx(0.5)
    collection = MetricCollection({"iou": ErrorPixelIoU(), "hard_recall": HardErrorRecall()})
    collection.update(*case)
    assert {k: round(float(v), 6) for k, v in collection.compute().items()} == {"iou": 0.5, "hard_recall": 0.5}


def test_sweep_matches_hand_counts_at_every_threshold(case):
    sweep = ErrorThresholdSweep(thresholds=(0.85, 0.2, 0.95, 0.7))
    sweep.update(*case)
    result = sweep.compute()
    assert result["threshold"].tolist() == [0.2, 0.7, 0.85, 0.95]
    # t=0.2: predicted {0,1,2,3}; t=0.7: {0,1,3}; t=0.85: {3}; t=0.95: none (0.95 is the ignored pixel's).
    assert result["iou"].tolist() == pytest.approx([3 / 4, 2 / 4, 1 / 3, 0.0])
    assert result["hard_recall"].tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert result["recall"].tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    precision = result["precision"].tolist()
    assert precision[:3] == pytest.approx([3 / 4, 2 / 3, 1.0]) and math.isnan(precision[3])
    assert float(result["error_fraction"]) == pytest.approx(3 / 5)
    assert float(result["hard_fraction"]) == pytest.approx(2 / 3)


def test_counts_accumulate_exactly_over_batches_and_ranks(case):
    error_prob, probs, target = case
    whole = ErrorThresholdSweep()
    whole.update(*case)
    split = ErrorThresholdSweep()
    for part in (slice(0, 2), slice(2, 6)):
        split.update(error_prob[..., part], probs[..., part], target[..., part])
    # Two "ranks" merged with the metrics' sum reduction give the same counts as one.
    rank0, rank1 = ErrorThresholdSweep(), ErrorThresholdSweep()
    rank0.update(error_prob[..., :3], probs[..., :3], target[..., :3])
    rank1.update(error_prob[..., 3:], probs[..., 3:], target[..., 3:])
    rank0.merge_state(rank1)
    for other in (split, rank0):
        for key, value in whole.compute().items():
            torch.testing.assert_close(other.compute()[key], value, equal_nan=True)


def test_count_above_is_strict_and_matches_brute_force():
    torch.manual_seed(0)
    thresholds = torch.tensor([0.1, 0.5, 0.7, 0.9])
    values = torch.cat([torch.rand(1000), thresholds, torch.tensor([0.0, 1.0])])
    expected = (values[:, None] > thresholds[None, :]).sum(dim=0)
    assert torch.equal(count_above(values, thresholds), expected)
    assert count_above(torch.empty(0), thresholds).tolist() == [0, 0, 0, 0]


def test_metrics_without_hard_errors_or_with_bf16_inputs(case):
    error_prob, probs, target = case
    recall = HardErrorRecall()
    recall.update(error_prob, probs.clamp(max=0.9), target)  # no confidence above rho
    assert math.isnan(float(recall.compute()))
    iou = ErrorPixelIoU()
    iou.update(error_prob.bfloat16(), probs.bfloat16(), target)
    assert float(iou.compute()) == pytest.approx(0.5)


def test_sweep_arguments_are_checked():
    with pytest.raises(ValueError, match="distinct thresholds"):
        ErrorThresholdSweep(thresholds=())
    with pytest.raises(ValueError, match="distinct thresholds"):
        ErrorThresholdSweep(thresholds=(0.5, 0.5))
    with pytest.raises(ValueError, match="must be in \\[0, 1\\)"):
        ErrorThresholdSweep(thresholds=(0.5, 1.2))
    with pytest.raises(ValueError, match="rho must be in"):
        ErrorPixelIoU(rho=1.0)
    with pytest.raises(ValueError, match="Shape mismatch: the error map"):
        ErrorPixelIoU().update(torch.rand(1, 1, 2, 2), torch.rand(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long))


def test_sweep_table_and_png_are_written(case, tmp_path):
    sweep = ErrorThresholdSweep(thresholds=(0.2, 0.7, 0.95))
    sweep.update(*case)
    result = sweep.compute()
    table = sweep_markdown(result)
    lines = table.splitlines()
    assert lines[0].startswith("| threshold t | error-pixel IoU (%) | hard recall (%)")
    assert lines[2] == "| 0.2 | 75.00 | 100.00 | 75.00 | 100.00 |"
    assert lines[3] == "| 0.7 | 50.00 | 50.00 | 66.67 | 66.67 |"
    assert lines[4] == "| 0.95 | 0.00 | 0.00 | n/a | 0.00 |"
    assert "60.00% of the labelled pixels" in table and "66.67% of the erroneous pixels" in table
    markdown, png = write_sweep(result, tmp_path / "results", stem="sweep")
    assert markdown.read_text() == table
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["sweep.md", "sweep.png"]
