"""One MAD round's decisions on rank 0: M, weak scores, S and T, pixel labels, the metrics on T, the report.

:class:`MADRoundSteps` is the part of :class:`~segmend.callbacks.MADTroubleshooting` that runs
after the pool statistics are in ``stats.npz``: each step reads the previous one's files from
:class:`~segmend.mad.state.MADState` and records its own, so a re-run starts at the first step not
recorded; a step waiting for people returns what they must do. Round 0's evaluation also scores
every model on the DataModule's validation split (the paper's T^(0)).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from segmend.callbacks.mad_pool import CompetitorCache, PoolSource, dataset_miou, iterate_shard, predict_maps
from segmend.callbacks.mad_report import report_round, test_scores
from segmend.mad import (
    ContentBounds,
    PoolStats,
    Selection,
    acquire,
    annotation_cost,
    content_bounds_from_masks,
    counterexample_set,
    main_foreground_class,
    out_of_domain,
    select_candidates,
    unbiased_test_set,
)
from segmend.mad.layout import MADLayout
from segmend.mad.oracle import ShowsImages
from segmend.mad.state import MADState
from segmend.text import counted


class MADRoundSteps:
    """Rank 0's steps of a round (mixed into ``MADTroubleshooting``, whose arguments and helpers it uses).

    Attributes read: ``strategy``, ``n3``, ``n4``, ``test_size``, ``per_class``, ``bounds_statistic``,
    ``report_images``; the callback's ``oracle(trainer, run_dir, classes)`` and ``pool(trainer)``.
    """

    strategy: str
    n3: int
    n4: int
    test_size: int
    per_class: int
    bounds_statistic: str
    report_images: int

    def _state(self, trainer: Trainer, run_dir: Path) -> MADState:
        classes = getattr(trainer.datamodule, "class_names", None) or None
        return MADState(run_dir, classes=tuple(classes) if classes else None)

    def bounds(self, trainer: Trainer, num_classes: int) -> ContentBounds:
        """[p_k, q_k] from the training labels (``bounds_statistic``)."""
        if self.bounds_statistic == "none":
            return ContentBounds.unbounded(num_classes)
        dataset = trainer.datamodule.dataset("train", False)
        if callable(getattr(dataset, "read_mask", None)) and hasattr(dataset, "ids"):  # masks only, no images
            masks = (dataset.read_mask(i)[0] for i in dataset.ids)
        else:
            masks = (dataset[i]["mask"].numpy() for i in range(len(dataset)))
        return content_bounds_from_masks(masks, num_classes, self.bounds_statistic)

    def _decide(
        self, trainer: Trainer, module: LightningModule, run_dir: Path, r: int, caches: list[CompetitorCache],
        device: torch.device,
    ) -> str | None:  # fmt: skip
        """Rank 0: M, scores, S and T, labels, metrics; returns what people must do, or ``None`` when done."""
        num_classes = trainer.datamodule.num_classes
        state = self._state(trainer, run_dir)
        classes = state.classes or tuple(map(str, range(num_classes)))
        oracle = self.oracle(trainer, run_dir, classes)
        if hasattr(oracle, "attach"):
            oracle.attach(run_dir, classes)
        source = self.pool(trainer)
        if isinstance(oracle, ShowsImages):  # people see the candidates upright, copied into the run folder
            oracle.show_images(source.image_path)
        stats = state.load_stats(r)
        labelled = self._earlier_labels(state, r)
        trained_on = {i for k in range(r) if state.reached(k, "labelled") for i in state.round(k).counterexamples}
        readme = MADLayout(run_dir).readme_file(r)
        if not state.reached(r, "candidates"):
            if caches:
                selection = select_candidates(stats, self.bounds(trainer, num_classes), n3=self.n3)
            else:
                ids = acquire(self.strategy, stats, self.n4 + self.test_size, exclude=trained_on, seed=r)
                selection = Selection(ids, stats.unreadable_ids, {})
            if selection.skipped:
                rank_zero_warn(f"segmend MAD: round {r}: {len(selection.skipped)} unreadable pool images skipped: "
                               f"{selection.skipped[:10]}")  # fmt: skip
            sizes = self._sizes(stats, selection.ids)
            state.save_candidates(r, selection, sizes)
        candidates = state.load_candidates(r)
        uses_scores = self.strategy == "mad"
        if uses_scores and not state.reached(r, "scored"):
            predictions = predict_maps(module, source, candidates.ids, device)
            scores = oracle.request_scores(r, predictions)
            if scores is None:
                images = counted(len(candidates.ids), "image")
                return (f"round {r} waits for weak scores of {images} (M); see {readme}. "
                        "Re-run the same command when they are in.")  # fmt: skip
            state.save_scores(r, scores)
        if not state.reached(r, "selected"):
            scores = state.load_scores(r) if uses_scores else None
            if uses_scores:
                s_ids = counterexample_set(scores, self.n4, exclude=trained_on, images=candidates.ids)
            else:
                s_ids = acquire(self.strategy, stats, self.n4, exclude=trained_on, seed=r)
            ood = out_of_domain(scores) if scores else set()
            rows = stats.index_of(candidates.ids)
            main = dict(zip(candidates.ids, main_foreground_class(stats.target_fractions[rows]).tolist(), strict=True))
            t_ids = unbiased_test_set([i for i in candidates.ids if i not in s_ids], main, ood, trained_on | set(s_ids),
                                      size=self.test_size, per_class=self.per_class, seed=r)  # fmt: skip
            state.save_selection(r, s_ids, t_ids, ood)
        record = state.round(r)
        if not state.reached(r, "labelled"):
            ids = [i for i in dict.fromkeys(record.counterexamples + record.test) if i not in labelled]
            labels = oracle.request_labels(r, ids, {i: candidates.sizes[i] for i in ids if i in candidates.sizes})
            if labels is None:
                return (f"round {r} waits for pixel labels of {counted(len(ids), 'image')} of S and T; see {readme}. "
                        "Re-run the same command when they are in.")  # fmt: skip
            reused = {i: state.load_labels(labelled[i], [i])[i] for i in record.counterexamples + record.test
                      if i in labelled}  # fmt: skip
            state.save_labels(r, {**reused, **labels})
        if not state.reached(r, "evaluated"):
            metrics = self.evaluate(state, r, module, source, caches, device, num_classes)
            if r == 0:  # the paper's T^(0): every model on the validation split, before any fine-tuning
                metrics["val"] = self.evaluate_val(trainer.datamodule, module, caches, device, num_classes)
            state.save_metrics(r, metrics)
            self._log(trainer, r, state.load_metrics(r))
            report_round(trainer, module, state, r, source, caches, device, self.report_images)
        return None

    @staticmethod
    def _earlier_labels(state: MADState, r: int) -> dict[str, int]:
        """``id -> round`` of the images labelled before round ``r`` (their labels are reused, never asked again)."""
        found: dict[str, int] = {}
        for k in range(r):
            if state.reached(k, "labelled"):
                found.update(dict.fromkeys(state.round(k).counterexamples + state.round(k).test, k))
        return found

    @staticmethod
    def _sizes(stats: PoolStats, ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        if "height" not in stats.scalars:
            return {}
        rows = stats.index_of(ids)
        heights, widths = stats.scalar("height")[rows], stats.scalar("width")[rows]
        return {i: (int(h), int(w)) for i, h, w in zip(ids, heights, widths, strict=True) if np.isfinite(h)}

    def evaluate(
        self, state: MADState, r: int, module: LightningModule, source: PoolSource, caches: list[CompetitorCache],
        device: torch.device, num_classes: int,
    ) -> dict[str, Any]:  # fmt: skip
        """MIoU of the target and of every competitor on T, the sizes of M, S and T, and the annotation hours."""
        record = state.round(r)
        test = list(record.test)
        labels = state.load_labels(r, test)
        truth = [labels[i] for i in test]
        target_maps = predict_maps(module, source, test, device)
        metrics: dict[str, Any] = {"target": test_scores([target_maps[i] for i in test], truth, num_classes)}
        metrics["competitors"] = {c.name: test_scores([c.read(i) for i in test], truth, num_classes) for c in caches}
        num_m = len(state.load_candidates(r).ids)
        new = [
            i for i in dict.fromkeys(record.counterexamples + record.test) if i not in self._earlier_labels(state, r)
        ]
        cost = annotation_cost(num_m if self.strategy == "mad" else 0, len(new), raters=max(len(record.raters), 1))
        metrics.update(
            round=r, strategy=self.strategy, M=num_m, S=len(record.counterexamples), T=len(test), new_labels=len(new),
            annotation_hours=cost.hours, dense_all_hours=cost.dense_all_hours,
        )  # fmt: skip
        return metrics

    @staticmethod
    def evaluate_val(
        datamodule: Any, module: LightningModule, caches: Sequence[CompetitorCache], device: torch.device,
        num_classes: int,
    ) -> dict[str, Any] | None:  # fmt: skip
        """MIoU of the target and of every competitor on the DataModule's validation split (the paper's T^(0)).

        Competitors run from their checkpoints (their maps of the validation images are not cached).

        Args:
            datamodule: The DataModule; its split ``"val"`` is read with the evaluation transform.
            module: The target (eval mode is the caller's).
            caches: The competitors.
            device: Where the models predict.
            num_classes: C.

        Returns:
            ``{"images": n, "target": {"mIoU": ...}, "competitors": {name: {"mIoU": ...}}}``, or
            ``None`` (with a warning saying why) when the DataModule has no validation split.

        """
        source, missing = validation_source(datamodule)
        if source is None:
            rank_zero_warn(f"segmend MAD: {missing}, so no model is evaluated on it (the paper's T^(0)); "
                           "the report's val column stays empty.")  # fmt: skip
            return None
        batch_size = getattr(datamodule, "eval_batch_size", 8)
        labels = split_labels(source, batch_size)
        ids = list(labels)

        def scores(model: Any) -> dict[str, float]:
            maps = predict_maps(model, source, ids, device, batch_size)
            return {"mIoU": dataset_miou([maps[i] for i in ids], [labels[i] for i in ids], num_classes)}

        result = {"images": len(ids), "target": scores(module),
                  "competitors": {c.name: scores(c.model(device)) for c in caches}}  # fmt: skip
        values = {"target": result["target"]["mIoU"], **{k: v["mIoU"] for k, v in result["competitors"].items()}}
        images = counted(len(ids), "image")
        rank_zero_info(f"segmend MAD: mIoU on the validation split ({images}, the paper's T^(0)): {values}")
        return result

    @staticmethod
    def _log(trainer: Trainer, r: int, metrics: dict[str, Any]) -> None:
        values = {"mad/round": float(r), "mad/T_mIoU/target": metrics["target"]["mIoU"]}
        values.update({f"mad/T_mIoU/{name}": m["mIoU"] for name, m in metrics["competitors"].items()})
        values = {k: v for k, v in values.items() if v is not None}
        rank_zero_info(f"segmend MAD: round {r} metrics on T: {values}")
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)


def validation_source(datamodule: Any) -> tuple[PoolSource | None, str | None]:
    """The DataModule's labelled validation split (``dataset("val", False)``), or ``None`` and why there is none.

    Args:
        datamodule: A DataModule; one without a ``dataset(split, train)`` method, whose ``"val"``
            split cannot be built (no id list, a DataModule of unlabelled images) or is empty has none.

    Returns:
        ``(source, None)``, or ``(None, reason)``.

    """
    name = type(datamodule).__name__
    dataset_of = getattr(datamodule, "dataset", None)
    if not callable(dataset_of):
        return None, f"{name} has no validation split (no dataset(split) method)"
    try:
        dataset = dataset_of("val", False)
    except (FileNotFoundError, KeyError, ValueError) as error:
        return None, f"{name} has no validation split ({error})"
    if not hasattr(dataset, "ids") or len(dataset) == 0:
        return None, f"{name}'s validation split is empty or has no ids"
    return PoolSource(dataset), None


def split_labels(source: PoolSource, batch_size: int = 8) -> dict[str, np.ndarray]:
    """``id -> (H, W)`` label of every image of a labelled split, as its samples hold it (padding cropped).

    Images that fail to load are left out.
    """
    labels: dict[str, np.ndarray] = {}
    for batch, _failed in iterate_shard(source, range(len(source.dataset)), batch_size):
        if batch is None:
            continue
        for b, (h, w) in enumerate(batch["content_size"].tolist()):
            labels[batch["id"][b]] = batch["mask"][b, :h, :w].numpy()
    return labels
