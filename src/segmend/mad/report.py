"""The MAD loop's per-round report (``<run>/mad/report.md``), built from :class:`MADState`'s files only.

Nothing here needs a model: the report is regenerated from ``metrics.json`` of every evaluated
round and ``state.json``, so a resumed run writes the same report. It holds:

- the shape of the paper's Table 1: the mIoU of the target and of each competitor on the
  DataModule's validation split (column ``val``, the paper's T^(0), from round 0's metrics: the
  target before any fine-tuning) and on T of each round (column ``T(r)``: the target there is the
  target after r fine-tuning rounds);
- the annotation hours (:func:`segmend.mad.annotation_cost`) per round and so far, against
  labelling every image of M densely;
- the ranking stability (:func:`segmend.mad.ranking_stability`) on the latest round's T, when
  its metrics hold per-image results of at least two models on at least :data:`MIN_STABILITY_IMAGES`
  images;
- links to each round's grid of counterexamples (``round_<r>/counterexamples.png``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segmend.mad.cost import AnnotationCost, annotation_cost
from segmend.mad.discrepancy import discrepancy
from segmend.mad.files import atomic_write_bytes
from segmend.mad.stability import ranking_stability
from segmend.mad.state import MADState

REPORT_NAME = "report.md"
GRID_NAME = "counterexamples.png"
MIN_STABILITY_IMAGES = 4
TARGET = "target"
VAL = "val"
VAL_HEADER = "val (paper's T^(0))"


def evaluated_metrics(state: MADState) -> dict[int, dict[str, Any]]:
    """``round -> metrics`` of every round whose ``metrics.json`` is recorded (phase ``evaluated``)."""
    return {r: state.load_metrics(r) for r in sorted(state.rounds) if state.reached(r, "evaluated")}


def table1(metrics: Mapping[int, Mapping[str, Any]]) -> dict[str, dict[int | str, float | None]]:
    """The shape of the paper's Table 1: ``model -> {"val": mIoU on T^(0), round -> mIoU on that round's T}``.

    Args:
        metrics: ``round -> metrics.json``'s metrics (``target`` and ``competitors``, each
            ``{"mIoU": ...}``; round 0's ``val`` holds the same two keys for the validation split).

    Returns:
        The target first, then the competitors in order of first appearance; in each, the key
        :data:`VAL` first (the validation split, the paper's T^(0)), then the rounds. ``None`` where
        a model has no value (no validation split, an empty T, or a model absent from a round).

    """
    val = validation_metrics(metrics) or {}
    table: dict[str, dict[int | str, float | None]] = {TARGET: {VAL: val.get(TARGET, {}).get("mIoU")}}
    for name, result in val.get("competitors", {}).items():
        table[name] = {VAL: result.get("mIoU")}
    for r, values in metrics.items():
        table[TARGET][r] = values.get(TARGET, {}).get("mIoU")
        for name, result in values.get("competitors", {}).items():
            table.setdefault(name, {VAL: None})[r] = result.get("mIoU")
    return table


def validation_metrics(metrics: Mapping[int, Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """Round 0's results on the validation split (``val``), or ``None`` (no validation split, or round 0 missing)."""
    return metrics.get(0, {}).get(VAL)


def round_cost(metrics: Mapping[str, Any], raters: int) -> AnnotationCost:
    """One round's annotation cost from its counts: weak scores of M (``mad`` only), dense labels of the new images.

    Args:
        metrics: The round's metrics (``M``, ``new_labels``, ``strategy``).
        raters: Raters whose weak scores are counted (at least 1).

    Returns:
        The round's :class:`AnnotationCost` (7 s per weak score and rater, 135 s per dense label).

    """
    weak = int(metrics.get("M", 0)) if metrics.get("strategy", "mad") == "mad" else 0
    return annotation_cost(weak, int(metrics.get("new_labels", 0)), raters=max(raters, 1))


def cumulative_costs(state: MADState, metrics: Mapping[int, Mapping[str, Any]]) -> dict[int, AnnotationCost]:
    """``round -> cost of rounds 0..round`` (:class:`AnnotationCost` adds with ``+``)."""
    total: AnnotationCost | None = None
    out: dict[int, AnnotationCost] = {}
    for r, values in metrics.items():
        cost = round_cost(values, len(state.round(r).raters))
        total = cost if total is None else total + cost
        out[r] = total
    return out


def per_image_miou(predictions: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_classes: int) -> list[float]:
    """Per-image mIoU of predictions against labels (classes present in either, 255 ignored; NaN without pixels)."""
    return [discrepancy(p, t, num_classes) for p, t in zip(predictions, labels, strict=True)]


def stability_of(values: Mapping[str, Any]) -> dict[int, float] | None:
    """Ranking stability on one round's T from its metrics' ``per_image`` lists, or ``None`` without enough data.

    The SRCC of the model ranking (mean per-image mIoU, NaN images left out) on the first k images
    of T against the ranking on all of T, for k from half of T to all but one (the paper's Fig. 7
    compares 20..39 against 40).
    """
    models = {TARGET: values.get(TARGET, {}), **values.get("competitors", {})}
    per_image = {name: m["per_image"] for name, m in models.items() if m.get("per_image") is not None}
    sizes = {len(v) for v in per_image.values()}
    if len(per_image) < 2 or len(sizes) != 1 or min(sizes) < MIN_STABILITY_IMAGES:
        return None
    arrays = {name: np.array([np.nan if x is None else x for x in v], dtype=float) for name, v in per_image.items()}
    n = sizes.pop()
    return ranking_stability(arrays, ks=range(max(1, n // 2), n), aggregate=_nanmean)


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _table1_lines(metrics: Mapping[int, Mapping[str, Any]]) -> list[str]:
    """The report's Table 1 section: prose, then the table (first column: the validation split)."""
    rounds = list(metrics)
    val = validation_metrics(metrics)
    missing = (" It is empty: round 0's metrics hold no results on a validation split (the DataModule had none)."
               if val is None else "")  # fmt: skip
    lines = ["## mIoU on the validation split and the test sets T (the shape of the paper's Table 1)", ""]
    lines += ["The first column is the DataModule's validation split, the paper's T^(0) (PASCAL VOC val there), "
              "on which the target after its initial training (round 0, before any fine-tuning) and every "
              f"competitor are evaluated once.{missing} Column T(r) is round r's test set (the paper's T^(r+1)); the "
              "target there is the target after r fine-tuning rounds.", ""]  # fmt: skip
    table = table1(metrics)
    rows = [[name, *(_number(by_round.get(r)) for r in (VAL, *rounds))] for name, by_round in table.items()]
    sizes = [str((val or {}).get("images", "–")), *(str(metrics[r].get("T", "–")) for r in rounds)]
    rows.append(["\\|T\\|", *sizes])
    return [*lines, *_table(["model", VAL_HEADER, *(f"T({r})" for r in rounds)], rows), ""]


def report_markdown(state: MADState) -> str:
    """The report's markdown (module docstring), from the state's files."""
    metrics = evaluated_metrics(state)
    lines = ["# MAD troubleshooting report", ""]
    if not metrics:
        return "\n".join([*lines, "No round has been evaluated yet.", ""])
    rounds = list(metrics)
    strategy = next(iter(metrics.values())).get("strategy", "mad")
    lines += [f"Strategy: `{strategy}`; rounds evaluated: {', '.join(map(str, rounds))}.", ""]
    lines += _table1_lines(metrics)
    lines += ["## Annotation hours", ""]
    costs = cumulative_costs(state, metrics)
    rows = []
    for r, values in metrics.items():
        cost = round_cost(values, len(state.round(r).raters))
        counts = [str(values.get(key, "–")) for key in ("M", "S", "T", "new_labels")]
        so_far = costs[r]
        rows.append([str(r), *counts, str(max(len(state.round(r).raters), 1)), _number(cost.hours, 2),
                     _number(so_far.hours, 2), _number(so_far.dense_all_hours, 2)])  # fmt: skip
    header = ["round", "\\|M\\|", "\\|S\\|", "\\|T\\|", "new labels", "raters", "hours (weak + dense)",
              "hours so far", "hours to label every M densely, so far"]  # fmt: skip
    lines += [*_table(header, rows), ""]
    total = costs[rounds[-1]]
    lines += [
        f"So far {total.hours:.2f} h of annotation against {total.dense_all_hours:.2f} h to label every image of M "
        f"densely (7 s per weak score and rater, 135 s per dense label; paper: 7.33 h against 69.11 h).",
        "",
    ]
    lines += ["## Ranking stability", ""]
    stability = stability_of(metrics[rounds[-1]])
    if stability is None:
        lines += [f"Not enough data: it needs per-image results of two models or more on at least "
                  f"{MIN_STABILITY_IMAGES} test images of the latest round.", ""]  # fmt: skip
    else:
        lines += [f"SRCC of the model ranking on the first k images of T({rounds[-1]}) against all of it (Fig. 7):", ""]
        lines += [*_table(["k", "SRCC"], [[str(k), _number(v)] for k, v in stability.items()]), ""]
    grids = [r for r in rounds if (state.layout.round_dir(r) / GRID_NAME).is_file()]
    if grids:
        lines += ["## Counterexamples S", ""]
        lines += [f"- round {r}: [round_{r}/{GRID_NAME}](round_{r}/{GRID_NAME})" for r in grids] + [""]
    return "\n".join(lines)


def write_report(state: MADState) -> Path:
    """Write ``<run>/mad/report.md`` atomically from the state's files; returns its path."""
    return atomic_write_bytes(state.layout.root / REPORT_NAME, report_markdown(state).encode("utf-8"))
