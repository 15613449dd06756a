"""Each rater's weak scores of a round, kept in their own score file and updated one image at a time.

Every change reads the rater's ``round_<r>/scores/<rater>.json`` (format ``segmend-mad-scores``
version 1), changes one image and writes the file again atomically
(:func:`segmend.mad.human_files.write_rater_scores`), under a lock of that rater: requests of one
rater from several threads or tabs are applied one after the other and none is lost, and raters
never wait for each other. A rater still at work has a file with the images done so far, which is
what :class:`~segmend.mad.oracle.FileOracle` reads. One server per run folder: the locks are this
process's.
"""

from __future__ import annotations

import threading
from typing import Any

from segmend.mad.files import MADFileError
from segmend.mad.human_files import OOD_MARK, read_rater_scores, write_rater_scores
from segmend.mad.scores import MAX_SCORE, MIN_SCORE, OUT_OF_DOMAIN
from segmend.rating.session import RatingError, RatingRound

JsonScore = int | str
"""A score as the page and the score file carry it: an int 1..5, or ``"ood"``."""


def parse_score(value: Any) -> float:
    """A score sent by the page as the loop stores it: an int 1..5, or :data:`OUT_OF_DOMAIN` for ``"ood"``.

    Raises:
        RatingError: 422 for anything else (booleans, floats such as 2.5 or 3.0, other strings, null).

    """
    if isinstance(value, str) and value == OOD_MARK:
        return OUT_OF_DOMAIN
    if isinstance(value, int) and not isinstance(value, bool) and MIN_SCORE <= value <= MAX_SCORE:
        return value
    raise RatingError(
        422,
        f"The score {value!r} is not allowed; expected an integer from {MIN_SCORE} to {MAX_SCORE}, or "
        f"{OOD_MARK!r} for an image out of domain.",
    )


def to_json(score: float) -> JsonScore:
    """A stored score as the page shows it (``"ood"`` for :data:`OUT_OF_DOMAIN`)."""
    return OOD_MARK if score == OUT_OF_DOMAIN else int(score)


class ScoreStore:
    """Reads and changes the score files of one round, one lock per rater.

    Args:
        round_: The round served.

    """

    def __init__(self, round_: RatingRound) -> None:
        self.round = round_
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, rater: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(rater, threading.Lock())

    def _read(self, rater: str) -> dict[str, float]:
        path = self.round.scores_file(rater)
        if not path.is_file():
            return {}
        try:
            return dict(read_rater_scores(path, self.round.index, self.round.ids).scores)
        except MADFileError as error:
            raise RatingError(409, f"The score file of {rater!r} cannot be used: {error}") from error

    def progress(self, rater: str) -> dict[str, Any]:
        """``{"rater", "round", "scores": {id: score}, "done", "total", "remaining"}`` of a checked rater name.

        Raises:
            RatingError: 409 if the rater's file exists but is not a valid score file of the round.

        """
        with self._lock(rater):
            return self._summary(rater, self._read(rater))

    def set(self, rater: str, image_id: str, value: Any) -> dict[str, Any]:
        """Give ``image_id`` the score ``value`` (an int 1..5 or ``"ood"``) from ``rater``; their progress.

        Raises:
            RatingError: 422 for a bad score; 409 when the loop has taken the round's scores or the file is bad.

        """
        score = parse_score(value)
        return self._change(rater, image_id, score)

    def clear(self, rater: str, image_id: str) -> dict[str, Any]:
        """Remove ``rater``'s score of ``image_id`` (nothing to do if there is none); their progress.

        Raises:
            RatingError: 409 when the loop has taken the round's scores or the file is bad.

        """
        return self._change(rater, image_id, None)

    def _change(self, rater: str, image_id: str, score: float | None) -> dict[str, Any]:
        with self._lock(rater):
            self.round.check_open()
            scores = self._read(rater)
            if score is None:
                if image_id not in scores:
                    return self._summary(rater, scores)
                del scores[image_id]
            else:
                scores[image_id] = score
            write_rater_scores(self.round.scores_file(rater), self.round.index, rater, scores)
            return self._summary(rater, scores)

    def _summary(self, rater: str, scores: dict[str, float]) -> dict[str, Any]:
        total = len(self.round.ids)
        return {
            "rater": rater,
            "round": self.round.index,
            "scores": {image: to_json(score) for image, score in scores.items()},
            "done": len(scores),
            "total": total,
            "remaining": total - len(scores),
        }
