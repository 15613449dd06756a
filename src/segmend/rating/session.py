"""The round a rating page serves: its candidates, classes and files, all inside the run folder.

A round waits for weak scores while ``state.json`` records it at phase ``candidates`` (M chosen,
scores not yet taken by the loop). :class:`RatingRound` opens such a round and turns every id and
rater name a request carries into a checked value or a :class:`RatingError` with the HTTP status to
answer: ids go through :func:`segmend.mad.files.check_id` and must be candidates of the round,
rater names through :func:`segmend.mad.layout.check_rater`; files are only ever the layout's paths
of those checked values.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from segmend.mad.files import MADFileError, check_id
from segmend.mad.layout import MADLayout, check_rater
from segmend.mad.state import PHASES, MADState

WAITING_PHASE = "candidates"
"""The phase of a round whose weak scores people are giving."""


class RoundNotReady(ValueError):
    """The run folder has no MAD state, or no round waiting for weak scores."""


class RatingError(ValueError):
    """A request the page refuses.

    Args:
        status: The HTTP status to answer with (4xx).
        message: What is wrong and what is expected.

    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def waiting_round(run_dir: str | Path, round_index: int | None = None) -> int:
    """The round of ``run_dir`` that waits for weak scores (``round_index``, or the current round).

    Raises:
        RoundNotReady: If ``mad/state.json`` is missing or unreadable, or the round is not at phase
            ``candidates`` (not started, not mined yet, or its scores are already recorded); the
            message names the file and what was expected.

    """
    layout = MADLayout(Path(run_dir))
    if not layout.state_file.is_file():
        raise RoundNotReady(
            f"{layout.state_file} not found: {run_dir} is not the run folder of a MAD loop. Expected the folder a "
            "`segmend fit` with the MADTroubleshooting callback wrote (its mad/state.json), stopped waiting for "
            "weak scores."
        )
    try:
        state = MADState(layout.run_dir)
    except MADFileError as error:
        raise RoundNotReady(str(error)) from error
    r = state.current_round if round_index is None else round_index
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise RoundNotReady(f"A round is an integer >= 0; found {r!r}.")
    recorded = sorted(state.rounds)
    if r not in state.rounds:
        raise RoundNotReady(
            f"{layout.state_file} records no round {r} (rounds recorded: {recorded or 'none'}); the loop is in "
            f"round {state.current_round}."
        )
    phase = state.round(r).phase
    if phase == WAITING_PHASE:
        return r
    which = "the current round" if round_index is None else "round"
    if phase is not None and PHASES.index(phase) > PHASES.index(WAITING_PHASE):
        reason = (
            f"its weak scores are already recorded (phase {phase!r}), so the loop would not read new ones. "
            f"`segmend status {shlex.quote(str(run_dir))}` says what the loop waits for now."
        )
    else:
        reason = (
            f"its candidates are not chosen yet (phase {phase!r}). Run the loop (segmend fit ...) until it "
            f"stops waiting for weak scores (it then writes {layout.readme_file(r)})."
        )
    raise RoundNotReady(
        f"No round of {layout.run_dir} to rate: {which} {r} in {layout.state_file} is not waiting for weak "
        f"scores (phase {WAITING_PHASE!r}): {reason}"
    )


class RatingRound:
    """One round of a run folder, as the rating page serves it.

    Args:
        run_dir: The run folder (holding ``mad/state.json``).
        round_index: The round; ``None`` takes the current round. It must wait for weak scores.

    Attributes:
        layout: The run folder's :class:`~segmend.mad.layout.MADLayout`.
        index: The round.
        ids: The candidates M, in order (the images to rate).
        classes: Class names by index (from ``state.json``; indices as names when it has none).

    Raises:
        RoundNotReady: See :func:`waiting_round`; also for a ``candidates.json`` that is missing or
            holds an id that is not a safe relative path.

    """

    def __init__(self, run_dir: str | Path, round_index: int | None = None) -> None:
        self.layout = MADLayout(Path(run_dir).resolve())
        self.index = waiting_round(self.layout.run_dir, round_index)
        state = MADState(self.layout.run_dir)
        try:
            self.ids: list[str] = list(state.load_candidates(self.index).ids)
            for image in self.ids:
                check_id(image)
        except (MADFileError, ValueError) as error:
            raise RoundNotReady(f"{self.layout.candidates_file(self.index)}: {error}") from error
        if not self.ids:
            raise RoundNotReady(f"{self.layout.candidates_file(self.index)} holds no candidate: nothing to rate.")
        self._known = frozenset(self.ids)
        self.classes: tuple[str, ...] | None = state.classes

    @property
    def num_classes(self) -> int:
        """C, or 255 (any index is a class) when ``state.json`` records no classes."""
        return len(self.classes) if self.classes else 255

    def class_name(self, index: int) -> str:
        """The name of class ``index`` (its number when unknown)."""
        return self.classes[index] if self.classes and 0 <= index < len(self.classes) else str(index)

    def image_id(self, raw: str) -> str:
        """``raw`` as a candidate id of this round.

        Raises:
            RatingError: 400 for an id that is not a safe relative path (``..``, absolute, backslash,
                control characters, ...); 404 for an id that is not a candidate of the round.

        """
        try:
            check_id(raw)
        except ValueError as error:
            raise RatingError(400, str(error)) from error
        if raw not in self._known:
            raise RatingError(404, f"{raw!r} is not a candidate image of round {self.index}.")
        return raw

    @staticmethod
    def rater(raw: str) -> str:
        """``raw`` as a rater name.

        Raises:
            RatingError: 400 for a name that is not allowed (see :data:`segmend.mad.layout.RATER_PATTERN`).

        """
        try:
            return check_rater(raw)
        except ValueError as error:
            raise RatingError(400, str(error)) from error

    def check_open(self) -> None:
        """Make sure the loop has not taken the round's scores yet (``state.json`` is read again).

        Raises:
            RatingError: 409 once the round is past phase ``candidates`` (new scores would not be used).

        """
        try:
            phase = MADState(self.layout.run_dir).round(self.index).phase
        except (MADFileError, ValueError) as error:
            raise RatingError(409, f"The run folder's state cannot be read: {error}") from error
        if phase != WAITING_PHASE:
            raise RatingError(
                409,
                f"Round {self.index}'s weak scores were taken by the loop (it is at phase {phase!r}); scores given "
                "now would not be used.",
            )

    def image_file(self, image_id: str) -> Path:
        """``round_<r>/images/<id>.jpg`` of a checked id."""
        return self.layout.image_file(self.index, image_id)

    def prediction_file(self, image_id: str) -> Path:
        """``round_<r>/predictions/<id>.png`` of a checked id."""
        return self.layout.prediction_file(self.index, image_id)

    def scores_file(self, rater: str) -> Path:
        """``round_<r>/scores/<rater>.json`` of a checked rater name."""
        return self.layout.scores_file(self.index, rater)
