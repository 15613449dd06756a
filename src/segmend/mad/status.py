"""Where a MAD run is, what waits for people, and what to run next (``segmend status``).

:func:`status` reads only the run folder (``mad/state.json``, the round's files, ``config.yaml``)
and never changes it. The loop's current round is the first one not ``finetuned``; by its phase:

==============  ==============================================================================
phase           waiting for
==============  ==============================================================================
``candidates``  weak scores of M from the raters (``strategy: mad``), unless enough raters are done
``selected``    pixel labels of S and T (those not labelled in an earlier round), unless all are in
other           the loop (``segmend fit``): mining, selection, evaluation or the next fine-tuning
==============  ==============================================================================

The last round (``rounds`` of the config) ends at ``evaluated``: the loop is then complete.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segmend.mad.files import MADFileError, ids_in, is_temporary
from segmend.mad.human_files import read_label_mask, read_rater_scores
from segmend.mad.label_exchange import expected_sizes, holds_export, requested_ids
from segmend.mad.layout import MADLayout
from segmend.mad.run_config import MAD_CALLBACK, fit_command, read_run_config
from segmend.mad.state import MADState
from segmend.text import counted

STATUS_FORMAT, STATUS_VERSION = "segmend-mad-status", 1
MAX_LISTED = 10
_NEXT = {
    "candidates": "select S and T of round {r}",
    "scored": "select S and T of round {r}",
    "selected": "evaluate round {r} on T",
    "labelled": "evaluate round {r} on T",
    "evaluated": "fine-tune the target on S, then mine round {next}",
}


@dataclass(frozen=True)
class RaterProgress:
    """One rater's score file of the round: ``scored`` of ``total`` candidates."""

    rater: str
    scored: int
    total: int

    @property
    def complete(self) -> bool:
        """Whether every candidate is scored."""
        return self.scored == self.total


@dataclass(frozen=True)
class LabelProgress:
    """The pixel labels people must give in the round.

    Attributes:
        requested: S and T without the images labelled in an earlier round.
        present: Those with a mask in ``labels/``.
        missing: Those without.
        reused: Images of S and T labelled in an earlier round (the loop copies their labels).

    """

    requested: list[str]
    present: list[str]
    missing: list[str]
    reused: int = 0


@dataclass(frozen=True)
class Status:
    """Where the loop of a run folder is.

    Attributes:
        run_dir: The run folder.
        round: The current round (``None`` before the loop mined round 0).
        phase: Its last phase (``None`` before the first).
        rounds: The last round, from ``config.yaml`` (``None`` when unknown).
        waiting_for: ``"weak_scores"`` or ``"pixel_labels"`` (people), ``"fit"`` (the loop:
            run the fit command), or ``"nothing"`` (the loop is complete).
        summary: One sentence saying so.
        oracle: ``"files"``, ``"simulated"`` or ``None`` (unknown).
        strategy: The acquisition strategy (``"mad"`` asks weak scores).
        candidates: Size of the round's M (``None`` before it is chosen).
        min_raters: Raters who must score every candidate.
        raters: Each score file's progress.
        labels: The pixel labels' progress (from phase ``selected`` on).
        problems: Files the loop would refuse (named, with the reason).
        next_steps: What to run, in order.
        fit_command: The command that continues the loop (``None``: the run has no ``config.yaml``).

    """

    run_dir: str
    round: int | None
    phase: str | None
    rounds: int | None
    waiting_for: str
    summary: str
    oracle: str | None = None
    strategy: str = "mad"
    candidates: int | None = None
    min_raters: int = 1
    raters: list[RaterProgress] = field(default_factory=list)
    labels: LabelProgress | None = None
    problems: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    fit_command: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form: ``format`` ``segmend-mad-status``, ``version`` 1, then the fields."""
        document = {"format": STATUS_FORMAT, "version": STATUS_VERSION, **asdict(self)}
        for entry, rater in zip(document["raters"], self.raters, strict=True):
            entry["complete"] = rater.complete
        return document

    def text(self) -> str:
        """The status for people."""
        where = "not started" if self.round is None else f"round {self.round}, phase {self.phase!r}"
        total = "" if self.rounds is None else f" (the loop runs rounds 0..{self.rounds})"
        lines = [f"MAD run {self.run_dir}: {where}{total}.", self.summary]
        if self.raters or self.waiting_for == "weak_scores":
            lines.append(f"Weak scores ({self.min_raters} rater(s) must score all {self.candidates} candidates):")
            lines += [f"  {r.rater}: {r.scored} of {r.total}{' (done)' if r.complete else ''}" for r in self.raters]
            lines += ["  (no score file yet)"] if not self.raters else []
        if self.labels is not None:
            labels = self.labels
            lines.append(f"Pixel labels: {len(labels.present)} of {len(labels.requested)} present")
            if labels.missing:
                lines.append(f"  missing: {_listed(labels.missing)}")
            if labels.reused:
                reused = counted(labels.reused, "image")
                lines.append(f"  ({reused} of S and T were labelled in an earlier round; reused)")
        if self.problems:
            lines.append("Problems (the loop will refuse these files):")
            lines += [f"  {problem}" for problem in self.problems]
        if self.next_steps:
            lines.append("Next:")
            lines += [f"  {step}" for step in self.next_steps]
        return "\n".join(lines)


def _listed(ids: list[str]) -> str:
    return ", ".join(ids[:MAX_LISTED]) + (f" and {len(ids) - MAX_LISTED} more" if len(ids) > MAX_LISTED else "")


def status(run_dir: str | Path) -> Status:
    """The status of the MAD loop in ``run_dir`` (nothing is written).

    Raises:
        MADFileError: If ``run_dir`` does not exist, or ``mad/state.json`` or ``config.yaml`` is unreadable,
            or ``run_dir`` holds a ``config.yaml`` without the MAD callback and no ``mad/state.json``
            (not a MAD run folder).

    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MADFileError(f"{run_dir} is not a folder; give the run folder (trainer.default_root_dir).")
    config = read_run_config(run_dir)
    mad, layout = config.mad, MADLayout(run_dir)
    fit = fit_command(run_dir, config)
    run = fit or "re-run the fit that started this run (no config.yaml: a run started from Python)"
    common = {
        "run_dir": str(run_dir),
        "rounds": mad.get("rounds"),
        "oracle": mad.get("oracle") if isinstance(mad.get("oracle"), str) else None,
        "min_raters": int(mad.get("min_raters") or 1),
        "fit_command": fit,
    }
    if not layout.state_file.is_file():
        if config.path is not None and not mad:
            raise MADFileError(
                f"{run_dir} is not the run folder of a MAD loop: its {config.path.name} has no {MAD_CALLBACK} "
                f"callback and {layout.state_file} does not exist. Give the folder of the fit that runs the loop "
                "(its trainer.default_root_dir)."
            )
        summary = (
            f"No MAD state yet ({layout.state_file} is missing): the loop has not mined round 0"
            f"{'' if config.path is not None else f' (or {run_dir} is not a MAD run folder)'}."
        )
        return Status(round=None, phase=None, waiting_for="fit", summary=summary, next_steps=[run], **common)
    state = MADState(run_dir)
    r = state.current_round
    phase = state.round(r).phase
    if phase is None or not state.reached(r, "candidates"):
        summary = f"The loop is mining round {r}; run the fit to go on."
        return Status(round=r, phase=phase, waiting_for="fit", summary=summary, next_steps=[run], **common)
    candidates = state.load_candidates(r)
    strategy = str(mad.get("strategy") or ("mad" if candidates.selection.groups else "other"))
    common.update(strategy=strategy, candidates=len(candidates.ids))
    problems: list[str] = []
    raters = _rater_progress(layout, r, candidates.ids, problems)
    if phase == "candidates" and strategy == "mad":
        return _scores_status(run_dir, r, phase, raters, problems, run, common)
    labels = _label_progress(state, r, problems) if state.reached(r, "selected") else None
    if phase == "selected":
        return _labels_status(run_dir, r, phase, labels, raters, problems, run, common)
    if phase == "evaluated" and common["rounds"] is not None and r >= int(common["rounds"]):
        summary = f"The loop is complete: round {r}, the last one, is evaluated (see {layout.root / 'report.md'})."
        return Status(round=r, phase=phase, waiting_for="nothing", summary=summary, raters=raters, labels=labels,
                      problems=problems, **common)  # fmt: skip
    summary = f"Nothing waits for people: run the fit, which will {_NEXT[phase].format(r=r, next=r + 1)}."
    if phase == "evaluated" and common["rounds"] is None:  # a run started from Python: its `rounds` is unknown here
        summary = (f"Nothing waits for people: round {r} is evaluated. If the loop has more rounds (the callback's "
                   f"`rounds` above {r}), run the fit: it will {_NEXT[phase].format(r=r, next=r + 1)}; otherwise "
                   "the loop is complete.")  # fmt: skip
    return Status(round=r, phase=phase, waiting_for="fit", summary=summary, raters=raters, labels=labels,
                  problems=problems, next_steps=[run], **common)  # fmt: skip


def _scores_status(
    run_dir: Path, r: int, phase: str, raters: list[RaterProgress], problems: list[str], run: str, common: dict
) -> Status:
    done = sum(rater.complete for rater in raters)
    if common["oracle"] == "simulated" or done >= common["min_raters"]:
        summary = f"Round {r}'s weak scores are in ({done} complete rater(s)); run the fit to select S and T."
        return Status(round=r, phase=phase, waiting_for="fit", summary=summary, raters=raters, problems=problems,
                      next_steps=[run], **common)  # fmt: skip
    layout = MADLayout(run_dir)
    summary = (
        f"Waiting for people: weak scores of round {r}'s {common['candidates']} candidates (M), from "
        f"{common['min_raters']} rater(s); {done} done."
    )
    steps = [
        f"segmend rate {shlex.quote(str(run_dir))}    (or write {layout.scores_dir(r)}/<rater>.json, docs/mad.md)",
        run,
    ]
    return Status(round=r, phase=phase, waiting_for="weak_scores", summary=summary, raters=raters, problems=problems,
                  next_steps=steps, **common)  # fmt: skip


def _labels_status(
    run_dir: Path,
    r: int,
    phase: str,
    labels: LabelProgress,
    raters: list[RaterProgress],
    problems: list[str],
    run: str,
    common: dict,
) -> Status:
    kwargs = {"round": r, "phase": phase, "labels": labels, "raters": raters, "problems": problems, **common}
    if common["oracle"] == "simulated" or (not labels.missing and not problems):
        summary = f"Nothing waits for people: round {r}'s pixel labels are in; run the fit to evaluate the round."
        return Status(waiting_for="fit", summary=summary, next_steps=[run], **kwargs)
    export_dir = run_dir.parent / f"{run_dir.name}_labels_round_{r}"
    folder = shlex.quote(str(export_dir))
    quoted = shlex.quote(str(run_dir))
    summary = (
        f"Waiting for people: pixel labels of {len(labels.missing)} of round {r}'s "
        f"{counted(len(labels.requested), 'image')} of S and T."
    )
    if holds_export(export_dir, run_dir, r):  # exported there already (a partial import): go on in that folder
        steps = [f"correct the masks in {folder}/SegmentationClass (exported there already; or in CVAT, format "
                 "'Segmentation mask 1.1')"]  # fmt: skip
    else:
        steps = [
            f"segmend export-labels {quoted} {folder}    (images with pre-annotations, CVAT / VOC layout)",
            f"correct the masks in {folder}/SegmentationClass (or in CVAT, format 'Segmentation mask 1.1')",
        ]
    steps += [
        f"segmend import-labels {quoted} {folder}    (or CVAT's exported zip)",
        run,
    ]
    return Status(waiting_for="pixel_labels", summary=summary, next_steps=steps, **kwargs)


def _rater_progress(layout: MADLayout, r: int, candidates: list[str], problems: list[str]) -> list[RaterProgress]:
    folder = layout.scores_dir(r)
    paths = sorted(p for p in folder.glob("*.json") if not is_temporary(p)) if folder.is_dir() else []
    progress = []
    for path in paths:
        try:
            scores = read_rater_scores(path, r, candidates).scores
        except (MADFileError, ValueError) as err:
            problems.append(str(err))
            continue
        progress.append(RaterProgress(path.stem, len(scores), len(candidates)))
    return progress


def _label_progress(state: MADState, r: int, problems: list[str]) -> LabelProgress:
    layout, requested = state.layout, requested_ids(state, r)
    present_files = ids_in(layout.labels_dir(r), ".png")
    sizes = expected_sizes(state, r, requested)
    present = []
    for image in requested:
        if image not in present_files:
            continue
        try:
            read_label_mask(present_files[image], len(state.classes or ()) or 256, sizes.get(image))
            present.append(image)
        except MADFileError as err:
            problems.append(str(err))
    foreign = sorted(set(present_files) - set(requested))
    if foreign and not state.reached(r, "labelled"):
        problems.append(f"{layout.labels_dir(r)} holds masks of images that were not asked for: {_listed(foreign)}.")
    record = state.round(r)
    reused = len(dict.fromkeys(record.counterexamples + record.test)) - len(requested)
    missing = [image for image in requested if image not in present]
    return LabelProgress(requested, present, missing, reused)
