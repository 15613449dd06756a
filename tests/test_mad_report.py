"""The MAD loop's per-round report: Table 1 from the metrics files, hours, the grid PNG, the W&B table."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from segmend.callbacks.mad_pool import CompetitorCache, PoolSource
from segmend.callbacks.mad_report import TABLE_KEY, report_round
from segmend.datamodules import ImageFolderPool
from segmend.datamodules.voc import VOC_CLASSES
from segmend.mad import Selection, annotation_cost
from segmend.mad.human_files import write_label_mask
from segmend.mad.report import (
    GRID_NAME,
    REPORT_NAME,
    VAL,
    VAL_HEADER,
    report_markdown,
    stability_of,
    table1,
    write_report,
)
from segmend.mad.state import MADState
from segmend.modules import SegmentationModule
from tests.fixtures.mad import make_stats, markdown_rows

RATERS = ("alice", "bob")
VAL_RESULTS = {"images": 7, "target": {"mIoU": 0.61}, "competitors": {"unet": {"mIoU": 0.64}, "fpn": {"mIoU": 0.58}}}


def metrics_of(r: int, test: list[str], per_image: bool = True) -> dict[str, Any]:
    """Made-up metrics of round r: the target improves, the competitors stay (NaN for one of them); val in round 0."""
    rows = {"target": 0.3 + 0.1 * r, "unet": 0.25, "fpn": float("nan") if r == 1 else 0.2}
    values: dict[str, Any] = {name: {"mIoU": value} for name, value in rows.items()}
    if per_image:
        for k, (name, value) in enumerate(rows.items()):
            values[name]["per_image"] = [value + 0.01 * (i + k) for i in range(len(test))]
    metrics = {"target": values.pop("target"), "competitors": values, "round": r, "strategy": "mad", "M": 5,
               "S": 1, "T": len(test), "new_labels": 5 - r}  # fmt: skip
    return {**metrics, VAL: VAL_RESULTS} if r == 0 else metrics


def run_round(state: MADState, r: int, per_image: bool = True, finish: bool = True, **changes: Any) -> dict[str, Any]:
    """Round r through every phase: M of 5 images, 2 raters, S = 1 image, T = 4 images (``changes``: to the metrics)."""
    stats = make_stats()
    state.save_stats(r, stats)
    ids = [i for i in stats.ids.tolist() if i != "folder/img2.jpg"]
    state.save_candidates(r, Selection(ids, ["folder/img2.jpg"], {}))
    state.save_scores(r, {image: {rater: 1 + k % 5 for rater in RATERS} for k, image in enumerate(ids)})
    state.save_selection(r, ids[:1], ids[1:], out_of_domain=[])
    state.save_labels(r, {image: np.zeros((4, 5), dtype=np.uint8) for image in ids})
    metrics = {**metrics_of(r, ids[1:], per_image), **changes}
    state.save_metrics(r, metrics)
    if finish:
        state.finish_round(r)
    return metrics


def test_table1_equals_the_metrics_files_and_hours_add_up(tmp_path: Path) -> None:
    state = MADState(tmp_path, ("background", "disc", "square"))
    run_round(state, 0)
    run_round(state, 1, finish=False)
    path = write_report(state)
    assert path == tmp_path / "mad" / REPORT_NAME
    text = path.read_text()
    rows = markdown_rows(text)
    assert rows["model"] == [VAL_HEADER, "T(0)", "T(1)"] and VAL_HEADER == "val (paper's T^(0))"
    for name in ("target", "unet", "fpn"):
        for r in (0, 1):
            stored = state.load_metrics(r)
            value = stored["target"] if name == "target" else stored["competitors"][name]
            cell = rows[name][1 + r]
            assert cell == ("–" if value["mIoU"] is None else f"{value['mIoU']:.3f}"), (name, r, cell)
    assert rows["fpn"][2] == "–"  # NaN is stored as null and shown as a dash
    # the first column: every model on the validation split (the paper's T^(0)), from round 0's metrics
    assert [rows[name][0] for name in ("target", "unet", "fpn")] == ["0.610", "0.640", "0.580"]
    assert rows["\\|T\\|"] == ["7", "4", "4"]
    assert "the paper's T^(0)" in text and "It is empty" not in text
    assert table1({r: state.load_metrics(r) for r in (0, 1)})["target"] == {
        VAL: pytest.approx(0.61),
        0: pytest.approx(0.3),
        1: pytest.approx(0.4),
    }
    # hours: 2 raters x 5 weak scores x 7 s + new labels x 135 s, per round and summed
    round_hours = [(2 * 5 * 7 + 5 * 135) / 3600, (2 * 5 * 7 + 4 * 135) / 3600]
    assert rows["0"][5:] == [f"{round_hours[0]:.2f}", f"{round_hours[0]:.2f}", f"{5 * 135 * 1 / 3600:.2f}"]
    assert rows["1"][5:] == [f"{round_hours[1]:.2f}", f"{sum(round_hours):.2f}", f"{2 * 5 * 135 / 3600:.2f}"]
    total = annotation_cost(5, 5, raters=2) + annotation_cost(5, 4, raters=2)
    assert math.isclose(total.hours, sum(round_hours))
    assert f"So far {total.hours:.2f} h of annotation against {total.dense_all_hours:.2f} h" in text
    assert "## Ranking stability" in text and "| 2 | " in text  # T of 4 images: k = 2, 3 against 4


def test_without_a_validation_split_the_val_column_is_empty(tmp_path: Path) -> None:
    state = MADState(tmp_path)
    run_round(state, 0, val=None)  # what the loop records when the DataModule has no val split
    run_round(state, 1, finish=False)
    text = report_markdown(state)
    rows = markdown_rows(text)
    assert rows["model"] == [VAL_HEADER, "T(0)", "T(1)"]
    assert [rows[name][0] for name in ("target", "unet", "fpn")] == ["–", "–", "–"]
    assert rows["target"][1:] == ["0.300", "0.400"] and rows["\\|T\\|"] == ["–", "4", "4"]
    assert "It is empty: round 0's metrics hold no results on a validation split" in text
    assert table1({0: {"target": {"mIoU": 0.5}, "competitors": {"fpn": {"mIoU": 0.2}}}}) == {
        "target": {VAL: None, 0: 0.5},
        "fpn": {VAL: None, 0: 0.2},
    }


def test_the_report_is_regenerated_from_the_files_alone(tmp_path: Path) -> None:
    state = MADState(tmp_path)
    run_round(state, 0, per_image=False)
    first = report_markdown(state)
    assert first == report_markdown(MADState(tmp_path))  # a resumed run (a new state object) writes the same
    assert "Not enough data" in first  # no per-image results: no ranking stability
    assert report_markdown(MADState(tmp_path / "empty")).endswith("No round has been evaluated yet.\n")


def test_ranking_stability_needs_two_models_and_enough_images() -> None:
    assert stability_of({"target": {"mIoU": 0.5, "per_image": [0.1, 0.2, 0.3, 0.4]}, "competitors": {}}) is None
    few = metrics_of(0, ["a", "b", "c"])
    assert stability_of(few) is None
    many = metrics_of(0, [str(i) for i in range(6)])
    many["competitors"]["fpn"]["per_image"][0] = None  # NaN images are left out of a model's mean
    assert stability_of(many) == {3: pytest.approx(1.0), 4: pytest.approx(1.0), 5: pytest.approx(1.0)}


class FakeWandb(WandbLogger):
    """A WandbLogger that records what it is asked to log (no W&B run, no network)."""

    def __init__(self) -> None:
        self.logged: list[tuple[dict[str, Any], int | None]] = []

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:  # noqa: D102
        self.logged.append((metrics, step))


def test_grid_png_and_wandb_table_of_the_counterexamples(tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    pool = tmp_path / "pool"
    pool.mkdir()
    rng = np.random.default_rng(0)
    ids = [f"img{i}.png" for i in range(6)]
    for image_id in ids:  # 40 x 60 images
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(pool / image_id)
    state = MADState(tmp_path / "run", tuple(VOC_CLASSES))
    state.save_stats(0, replace(make_stats(), ids=np.array(ids), readable=np.ones(6, dtype=bool)))
    candidates = [f"img{i}.png" for i in range(5)]
    state.save_candidates(0, Selection(candidates, [], {}))
    state.save_scores(0, {image: {"alice": 1 + k % 5} for k, image in enumerate(candidates)})
    state.save_selection(0, candidates[:2], candidates[2:], out_of_domain=[])
    state.save_labels(0, {image: np.zeros((40, 60), dtype=np.uint8) for image in candidates})
    state.save_metrics(0, metrics_of(0, candidates[2:]))
    checkpoint = tmp_path / "fpn.ckpt"
    checkpoint.write_bytes(b"stand-in: the maps below are cached, so it is only hashed")
    cache = CompetitorCache("fpn", checkpoint, state.layout.root / "competitors", 21)
    for image_id in candidates:
        write_label_mask(cache.path(image_id), np.full((40, 60), 15, dtype=np.uint8))
    torch.manual_seed(0)
    module = SegmentationModule(num_classes=21, arch="Unet", encoder_name="resnet18").eval()
    logger = FakeWandb()
    trainer = SimpleNamespace(loggers=[logger], global_step=7)
    source = PoolSource(ImageFolderPool(pool))
    report = report_round(trainer, module, state, 0, source, [cache], torch.device("cpu"), max_side=30)
    grid = Image.open(state.layout.round_dir(0) / GRID_NAME)
    # 3 tiles (image, target, fpn) of 20 x 30 (40 x 60 halved) plus 2-px gaps; 2 rows, a title band and a legend
    assert grid.mode == "RGB" and grid.width == 3 * (30 + 2)
    assert grid.height > 2 * (20 + 2)
    assert f"round_0/{GRID_NAME}" in report.read_text()
    ((metrics, step),) = logger.logged
    assert step == 7 and metrics["mad/round"] == 0.0
    table = metrics[TABLE_KEY]
    assert table.columns == ["round", "id", "MOS", "image", "target", "fpn"]
    assert [row[:3] for row in table.data] == [[0, "img0.png", 1.0], [0, "img1.png", 2.0]]
