"""The MAD loop's state that survives kills: rounds, phases, and every round's files.

A round r runs the phases of :data:`PHASES` in order (a strategy without weak scores skips
``scored``)::

    mined -> candidates -> scored -> selected -> labelled -> evaluated -> finetuned

Each ``save_*`` method writes its file(s) atomically first and then records the phase in
``state.json`` (also atomically), so ``state.json`` is the commit point: after a kill, a phase that
``state.json`` does not record is redone and its files overwritten; a recorded phase is never redone
and its files are never lost. Small things (phases, raters, the ids of S and T) live in
``state.json`` and in :meth:`MADState.state_dict`; big arrays stay in the round folders (see
:mod:`segmend.mad.layout` for the layout and ``docs/mad.md`` for the formats).

Only one process writes (under DDP: rank 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from segmend.mad.files import MADFileError, read_json, require_key, write_json, write_npz
from segmend.mad.human_files import read_label_mask, read_rater_scores, write_label_mask, write_rater_scores
from segmend.mad.layout import MADLayout
from segmend.mad.scores import Scores, validate_scores
from segmend.mad.selection import Selection
from segmend.mad.stats import PoolStats
from segmend.text import counted

PHASES: tuple[str, ...] = ("mined", "candidates", "scored", "selected", "labelled", "evaluated", "finetuned")
"""The phases of a round, in order."""

STATE_FORMAT, STATE_VERSION = "segmend-mad-state", 1
STATS_FORMAT, STATS_VERSION = "segmend-mad-stats", 1
CANDIDATES_FORMAT, CANDIDATES_VERSION = "segmend-mad-candidates", 1
SELECTION_FORMAT, SELECTION_VERSION = "segmend-mad-selection", 1
METRICS_FORMAT, METRICS_VERSION = "segmend-mad-metrics", 1

_SCALAR_PREFIX = "scalar__"


def _phase_index(phase: str | None) -> int:
    if phase is None:
        return -1
    if phase not in PHASES:
        raise ValueError(f"Unknown MAD phase {phase!r}; expected one of {PHASES}.")
    return PHASES.index(phase)


@dataclass(frozen=True)
class RoundState:
    """What ``state.json`` records about one round.

    Attributes:
        index: The round r (0 mines with the initial target).
        phase: The last phase reached, ``None`` before the first.
        raters: Whose score files make the round's weak scores.
        counterexamples: S of this round (lowest mean opinion score first).
        test: T of this round.
        out_of_domain: Candidates a rater marked out of domain.

    """

    index: int
    phase: str | None = None
    raters: tuple[str, ...] = ()
    counterexamples: tuple[str, ...] = ()
    test: tuple[str, ...] = ()
    out_of_domain: tuple[str, ...] = ()

    def reached(self, phase: str) -> bool:
        """True once the round has reached ``phase`` (or a later one)."""
        return _phase_index(self.phase) >= _phase_index(phase)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``state.json``'s ``rounds`` entries and :meth:`MADState.state_dict`)."""
        return {
            "round": self.index,
            "phase": self.phase,
            "raters": list(self.raters),
            "counterexamples": list(self.counterexamples),
            "test": list(self.test),
            "out_of_domain": list(self.out_of_domain),
        }

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any], where: str) -> RoundState:
        """Parse :meth:`to_dict`'s form; missing lists default to empty, unknown keys are ignored.

        Raises:
            MADFileError: Naming ``where`` for a bad round index, phase or id list.

        """
        if not isinstance(entry, Mapping):
            raise MADFileError(f"{where}: a round entry must be an object; found {entry!r:.80}.")
        index = require_key(entry, "round", int, where)
        phase = entry.get("phase")
        if phase is not None and phase not in PHASES:
            raise MADFileError(f"{where}: round {index} has phase {phase!r}; expected null or one of {PHASES}.")
        lists = {}
        for key in ("raters", "counterexamples", "test", "out_of_domain"):
            value = entry.get(key, [])
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise MADFileError(f"{where}: round {index}'s {key!r} must be a list of strings; found {value!r:.80}.")
            lists[key] = tuple(value)
        return cls(index, phase, **lists)


@dataclass(frozen=True)
class Candidates:
    """The candidate set M of a round as ``candidates.json`` stores it.

    Attributes:
        selection: M (``selection.ids``), the unreadable images skipped and the subgroup picks.
        sizes: ``image id -> (H, W)`` upright image sizes, where known (label masks must match them).

    """

    selection: Selection
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        """M, in order."""
        return self.selection.ids


def _json_safe(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays unwrapped, non-finite floats as ``None``."""
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MADState:
    """The loop's state in ``<run_dir>/mad``: loaded if it exists, created on the first save.

    Args:
        run_dir: The run folder.
        classes: Class names (index = class); recorded in ``state.json`` for the rating page and
            the label export, and used to check label masks. ``None`` takes them from ``state.json``.

    Raises:
        MADFileError: If ``state.json`` exists but is not a readable state file.
        ValueError: If ``classes`` differ from those recorded.

    """

    def __init__(self, run_dir: str | Path, classes: Sequence[str] | None = None) -> None:
        self.layout = MADLayout(Path(run_dir))
        self.rounds: dict[int, RoundState] = {}
        self.classes: tuple[str, ...] | None = None
        if self.layout.state_file.is_file():
            self._read()
        if classes is not None:
            if self.classes is not None and tuple(classes) != self.classes:
                raise ValueError(
                    f"{self.layout.state_file} records the classes {list(self.classes)}; found {list(classes)}. "
                    "A MAD run keeps its classes: use a new run folder for other classes."
                )
            self.classes = tuple(classes)

    # --- state.json -------------------------------------------------------------------------------------

    def _read(self) -> None:
        path = self.layout.state_file
        document = read_json(path, STATE_FORMAT, (STATE_VERSION,))
        classes = document.get("classes")
        if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise MADFileError(f"{path}: 'classes' must be null or a list of names; found {classes!r:.80}.")
        self.classes = None if classes is None else tuple(classes)
        rounds = require_key(document, "rounds", list, path)
        self.rounds = self._parse_rounds(rounds, str(path))

    @staticmethod
    def _parse_rounds(entries: Iterable[Any], where: str) -> dict[int, RoundState]:
        rounds = [RoundState.from_dict(entry, where) for entry in entries]
        indices = [r.index for r in rounds]
        if indices != list(range(len(rounds))):
            raise MADFileError(f"{where}: the rounds must be 0, 1, 2, ... in order; found {indices}.")
        return {r.index: r for r in rounds}

    def _write(self) -> None:
        payload = {"classes": None if self.classes is None else list(self.classes)}
        payload["rounds"] = [self.rounds[r].to_dict() for r in sorted(self.rounds)]
        write_json(self.layout.state_file, STATE_FORMAT, STATE_VERSION, payload)

    @property
    def current_round(self) -> int:
        """The round in progress: the first one not ``finetuned``."""
        if not self.rounds:
            return 0
        last = self.rounds[max(self.rounds)]
        return last.index + 1 if last.phase == "finetuned" else last.index

    def round(self, round_index: int) -> RoundState:
        """The record of a round (an empty one for the current round before its first phase).

        Raises:
            ValueError: For a round after the current one.

        """
        if round_index in self.rounds:
            return self.rounds[round_index]
        if round_index == self.current_round:
            return RoundState(round_index)
        raise ValueError(f"Round {round_index} has not started; the loop is in round {self.current_round}.")

    def reached(self, round_index: int, phase: str) -> bool:
        """True once round ``round_index`` has reached ``phase``."""
        return round_index in self.rounds and self.rounds[round_index].reached(phase)

    def advance(self, round_index: int, phase: str, **fields: Any) -> RoundState:
        """Record that the current round reached ``phase`` (and set ``fields`` of its record).

        Recording the phase it is already in again is allowed (a step redone after a kill).

        Raises:
            ValueError: For another round than the current one, or a phase before the recorded one.

        """
        if round_index != self.current_round:
            raise ValueError(
                f"Round {round_index} cannot reach phase {phase!r}: the loop is in round {self.current_round}."
            )
        record = self.round(round_index)
        if _phase_index(phase) < _phase_index(record.phase):
            raise ValueError(
                f"Round {round_index} is at phase {record.phase!r}; it cannot go back to {phase!r} "
                f"(phases run {' -> '.join(PHASES)})."
            )
        self.rounds[round_index] = replace(record, phase=phase, **fields)
        self._write()
        return self.rounds[round_index]

    @property
    def counterexamples(self) -> list[str]:
        """S accumulated over the rounds whose labels are in, in round order."""
        return [
            i for r in sorted(self.rounds) if self.rounds[r].reached("labelled") for i in self.rounds[r].counterexamples
        ]

    @property
    def labelled(self) -> list[str]:
        """Every image labelled so far (S and T of the rounds that reached ``labelled``)."""
        seen: dict[str, None] = {}
        for r in sorted(self.rounds):
            if self.rounds[r].reached("labelled"):
                seen.update(dict.fromkeys(self.rounds[r].counterexamples + self.rounds[r].test))
        return list(seen)

    # --- Lightning callback state -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The small state for a callback's ``state_dict``: classes, and per round phase, raters, S and T."""
        return {"version": STATE_VERSION, "classes": None if self.classes is None else list(self.classes),
                "rounds": [self.rounds[r].to_dict() for r in sorted(self.rounds)]}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`, e.g. from a checkpoint, against what the run folder holds.

        A round the run folder has taken at least as far as the checkpoint keeps the folder's record
        (the folder is written at every step, a checkpoint only at the end of a fit). A round the
        checkpoint took further is adopted when the run folder still holds the files of its phase.
        Unknown keys are ignored; missing ones default.

        Raises:
            MADFileError: If the checkpoint's state is malformed, or claims a phase whose files are
                missing from the run folder (the file is named).
            ValueError: If its classes differ from the run's.

        """
        where = f"the MAD state in the checkpoint (run folder {self.layout.root})"
        classes = state.get("classes")
        if classes is not None and self.classes is not None and tuple(classes) != self.classes:
            raise ValueError(f"{where} has the classes {list(classes)}; the run has {list(self.classes)}.")
        self.classes = self.classes or (None if classes is None else tuple(classes))
        loaded = self._parse_rounds(state.get("rounds", []), where)
        changed = False
        for index, record in loaded.items():
            current = self.rounds.get(index)
            if current is not None and _phase_index(current.phase) >= _phase_index(record.phase):
                continue
            self._check_files(record)
            self.rounds[index] = record
            changed = True
        self._parse_rounds([self.rounds[r].to_dict() for r in sorted(self.rounds)], where)  # still 0, 1, 2, ...
        if changed:
            self._write()

    def _check_files(self, record: RoundState) -> None:
        r, layout = record.index, self.layout
        needed = {
            "mined": [layout.stats_file(r)],
            "candidates": [layout.candidates_file(r)],
            "scored": [layout.scores_file(r, rater) for rater in record.raters],
            "selected": [layout.selection_file(r)],
            "labelled": [layout.label_file(r, i) for i in dict.fromkeys(record.counterexamples + record.test)],
            "evaluated": [layout.metrics_file(r)],
        }
        for phase, paths in needed.items():
            missing = [path for path in paths if record.reached(phase) and not path.is_file()]
            if missing:
                raise MADFileError(
                    f"The checkpoint says round {r} reached phase {record.phase!r}, but {missing[0]} is missing. "
                    "Resume with the run folder the checkpoint was written in (its mad/ folder holds those files)."
                )

    # --- the round files ----------------------------------------------------------------------------------

    def save_stats(self, round_index: int, stats: PoolStats) -> None:
        """Write ``stats.npz`` (compressed :class:`PoolStats` arrays); phase ``mined``."""
        arrays = {
            "format": np.array(STATS_FORMAT),
            "version": np.array(STATS_VERSION),
            "ids": stats.ids,
            "readable": stats.readable,
            "discrepancy": stats.discrepancy,
            "target_fractions": stats.target_fractions,
            "competitors": np.array(stats.competitors, dtype=str),
        }
        if stats.competitor_fractions is not None:
            arrays["competitor_fractions"] = stats.competitor_fractions
        arrays.update({f"{_SCALAR_PREFIX}{name}": values for name, values in stats.scalars.items()})
        write_npz(self.layout.stats_file(round_index), arrays)
        self.advance(round_index, "mined")

    def load_stats(self, round_index: int) -> PoolStats:
        """Read ``stats.npz``.

        Raises:
            MADFileError: If it is missing, unreadable or of another format or version.

        """
        path = self.layout.stats_file(round_index)
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except FileNotFoundError as err:
            raise MADFileError(f"{path} is missing; expected the pool statistics of round {round_index}.") from err
        except (OSError, ValueError) as err:
            raise MADFileError(f"{path} is not a readable .npz file ({err}).") from err
        found = (str(arrays.get("format", "")), int(arrays["version"]) if "version" in arrays else None)
        if found != (STATS_FORMAT, STATS_VERSION):
            raise MADFileError(
                f"{path} has format {found[0]!r} version {found[1]!r}; "
                f"expected {STATS_FORMAT!r} version {STATS_VERSION}."
            )
        try:
            return PoolStats(
                ids=arrays["ids"],
                target_fractions=arrays["target_fractions"],
                discrepancy=arrays["discrepancy"],
                competitor_fractions=arrays.get("competitor_fractions"),
                readable=arrays["readable"],
                scalars={k[len(_SCALAR_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_SCALAR_PREFIX)},
                competitors=tuple(arrays["competitors"].tolist()),
            )
        except (KeyError, ValueError) as err:
            raise MADFileError(f"{path} does not hold valid pool statistics: {err}") from err

    def save_candidates(
        self, round_index: int, selection: Selection, sizes: Mapping[str, tuple[int, int]] | None = None
    ) -> None:
        """Write ``candidates.json`` (M, the skipped images, the subgroup picks, image sizes); phase ``candidates``."""
        groups = [[c, role, int(k), list(ids)] for (c, role, k), ids in selection.groups.items()]
        sizes = {image: [int(h), int(w)] for image, (h, w) in (sizes or {}).items()}
        payload = {"round": round_index, "ids": list(selection.ids), "skipped": list(selection.skipped)}
        payload.update(groups=groups, sizes=sizes)
        write_json(self.layout.candidates_file(round_index), CANDIDATES_FORMAT, CANDIDATES_VERSION, payload)
        self.advance(round_index, "candidates")

    def load_candidates(self, round_index: int) -> Candidates:
        """Read ``candidates.json``.

        Raises:
            MADFileError: If it is missing, malformed, or of another round, format or version.

        """
        path = self.layout.candidates_file(round_index)
        document = self._read_round_json(path, CANDIDATES_FORMAT, CANDIDATES_VERSION, round_index)
        ids = require_key(document, "ids", list, path)
        skipped = document.get("skipped", [])
        try:
            groups = {(c, role, int(k)): list(g) for c, role, k, g in document.get("groups", [])}
            sizes = {image: (int(h), int(w)) for image, (h, w) in document.get("sizes", {}).items()}
        except (TypeError, ValueError) as err:
            raise MADFileError(f"{path}: malformed 'groups' or 'sizes' ({err}).") from err
        return Candidates(Selection(list(ids), list(skipped), groups), sizes)

    def save_scores(self, round_index: int, scores: Scores) -> None:
        """Write one ``scores/<rater>.json`` per rater (a file already holding them is kept); phase ``scored``.

        Args:
            round_index: The round.
            scores: ``image id -> {rater -> score}`` for every candidate of the round.

        Raises:
            ValueError: If the scores are invalid or do not cover M (see :func:`segmend.mad.validate_scores`).

        """
        candidates = self.load_candidates(round_index).ids
        unknown = sorted(set(scores) - set(candidates))
        if unknown:
            raise ValueError(f"Scores of round {round_index} hold {len(unknown)} ids not in M, e.g. {unknown[:5]}.")
        validate_scores(scores, images=candidates)
        by_rater: dict[str, dict[str, float]] = {}
        for image, per_rater in scores.items():
            for rater, score in per_rater.items():
                by_rater.setdefault(rater, {})[image] = score
        for rater, own in by_rater.items():
            path = self.layout.scores_file(round_index, rater)
            if not _same_scores(path, round_index, own):
                write_rater_scores(path, round_index, rater, own)
        self.advance(round_index, "scored", raters=tuple(sorted(by_rater)))

    def load_scores(self, round_index: int) -> dict[str, dict[str, float]]:
        """The round's weak scores ``image id -> {rater -> score}`` from the recorded raters' files.

        Raises:
            MADFileError: If a file is missing or invalid.

        """
        candidates = self.load_candidates(round_index).ids
        scores: dict[str, dict[str, float]] = {image: {} for image in candidates}
        for rater in self.round(round_index).raters:
            own = read_rater_scores(self.layout.scores_file(round_index, rater), round_index, candidates).scores
            for image in candidates:
                if image in own:
                    scores[image][rater] = own[image]
        try:
            validate_scores(scores, images=candidates, raters=self.round(round_index).raters)
        except ValueError as err:
            folder = self.layout.scores_dir(round_index)
            raise MADFileError(
                f"The score files in {folder} no longer cover round {round_index}'s candidates: {err}"
            ) from err
        return scores

    def save_selection(
        self,
        round_index: int,
        counterexamples: Sequence[str],
        test: Sequence[str],
        out_of_domain: Iterable[str] = (),
    ) -> None:
        """Write ``selection.json`` (S and T of the round, out-of-domain ids); phase ``selected``."""
        s, t, ood = list(counterexamples), list(test), sorted(out_of_domain)
        payload = {"round": round_index, "counterexamples": s, "test": t, "out_of_domain": ood}
        write_json(self.layout.selection_file(round_index), SELECTION_FORMAT, SELECTION_VERSION, payload)
        self.advance(round_index, "selected", counterexamples=tuple(s), test=tuple(t), out_of_domain=tuple(ood))

    def load_selection(self, round_index: int) -> dict[str, list[str]]:
        """Read ``selection.json``: ``{"counterexamples": S, "test": T, "out_of_domain": [...]}``.

        Raises:
            MADFileError: If it is missing, malformed, or of another round, format or version.

        """
        path = self.layout.selection_file(round_index)
        document = self._read_round_json(path, SELECTION_FORMAT, SELECTION_VERSION, round_index)
        return {
            key: list(require_key(document, key, list, path)) for key in ("counterexamples", "test", "out_of_domain")
        }

    def save_labels(self, round_index: int, labels: Mapping[str, np.ndarray]) -> None:
        """Write ``labels/<id>.png`` for S and T of the round (files already equal are kept); phase ``labelled``.

        Raises:
            ValueError: If a label of S or T is missing.

        """
        record = self.round(round_index)
        missing = [i for i in dict.fromkeys(record.counterexamples + record.test) if i not in labels]
        if missing:
            raise ValueError(
                f"Labels of round {round_index} lack {counted(len(missing), 'image')} of S and T, e.g. {missing[:5]}."
            )
        for image, mask in labels.items():
            path = self.layout.label_file(round_index, image)
            if not self._same_mask(path, mask):
                write_label_mask(path, mask)
        self.advance(round_index, "labelled")

    def load_labels(self, round_index: int, ids: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Read the label masks of ``ids`` (default: S and T of the round).

        Raises:
            MADFileError: If a mask is missing or invalid.

        """
        record = self.round(round_index)
        ids = dict.fromkeys(record.counterexamples + record.test) if ids is None else ids
        return {image: self._read_mask(self.layout.label_file(round_index, image)) for image in ids}

    def _read_mask(self, path: Path) -> np.ndarray:
        return read_label_mask(path, 255 if self.classes is None else len(self.classes))

    def _same_mask(self, path: Path, mask: np.ndarray) -> bool:
        try:
            return path.is_file() and np.array_equal(self._read_mask(path), mask)
        except MADFileError:
            return False

    def save_metrics(self, round_index: int, metrics: Mapping[str, Any]) -> None:
        """Write ``metrics.json`` (NaN and infinity stored as ``null``); phase ``evaluated``."""
        payload = {"round": round_index, "metrics": _json_safe(metrics)}
        write_json(self.layout.metrics_file(round_index), METRICS_FORMAT, METRICS_VERSION, payload)
        self.advance(round_index, "evaluated")

    def load_metrics(self, round_index: int) -> dict[str, Any]:
        """Read ``metrics.json``'s metrics.

        Raises:
            MADFileError: If it is missing, malformed, or of another round, format or version.

        """
        path = self.layout.metrics_file(round_index)
        document = self._read_round_json(path, METRICS_FORMAT, METRICS_VERSION, round_index)
        return require_key(document, "metrics", dict, path)

    def finish_round(self, round_index: int) -> None:
        """Record that the target was fine-tuned on S; the next round becomes current."""
        self.advance(round_index, "finetuned")

    @staticmethod
    def _read_round_json(path: Path, format_name: str, version: int, round_index: int) -> dict[str, Any]:
        document = read_json(path, format_name, (version,))
        found = require_key(document, "round", int, path)
        if found != round_index:
            raise MADFileError(f"{path} is marked round {found}; expected round {round_index}.")
        return document


def _same_scores(path: Path, round_index: int, scores: Mapping[str, float]) -> bool:
    try:
        return path.is_file() and read_rater_scores(path, round_index).scores == dict(scores)
    except MADFileError:
        return False
