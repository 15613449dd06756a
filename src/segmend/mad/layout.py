"""Where the MAD loop keeps its files in a run folder (see ``docs/mad.md``, "State and file formats").

::

    <run_dir>/mad/
      state.json                       segmend-mad-state: rounds, phases, raters, S and T ids
      round_<r>/
        README.txt                     what people must provide for this round, and where
        stats.npz                      the pool statistics (PoolStats arrays, compressed)
        candidates.json                segmend-mad-candidates: M, skipped images, image sizes
        predictions/<id>.png           the target's predicted label maps of M (palette PNG)
        images/<id>.jpg                the images of M upright, as people see them (JPEG)
        scores/<rater>.json            segmend-mad-scores: one file per rater
        selection.json                 segmend-mad-selection: S, T and out-of-domain ids
        labels/<id>.png                pixel labels of S and T (palette PNG, 255 = ignore)
        metrics.json                   segmend-mad-metrics: the round's metrics

An id ``street/0001.jpg`` has the label file ``labels/street/0001.jpg.png`` and the image for people
``images/street/0001.jpg.jpg``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from segmend.mad.files import id_path

RATER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""Rater names: a letter or digit, then up to 63 letters, digits, ``_``, ``.`` or ``-`` (a file name)."""


def check_rater(rater: str) -> str:
    """Return ``rater`` if it is a valid rater name (it names a file).

    Raises:
        ValueError: If it is not (see :data:`RATER_PATTERN`).

    """
    if not isinstance(rater, str) or not RATER_PATTERN.fullmatch(rater):
        raise ValueError(
            f"Rater name {rater!r} is not allowed; use 1-64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit (it names the rater's score file)."
        )
    return rater


@dataclass(frozen=True)
class MADLayout:
    """The paths of the MAD loop's files under ``<run_dir>/mad``.

    Args:
        run_dir: The run folder.

    """

    run_dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))

    @property
    def root(self) -> Path:
        """``<run_dir>/mad``."""
        return self.run_dir / "mad"

    @property
    def state_file(self) -> Path:
        """``mad/state.json``."""
        return self.root / "state.json"

    def round_dir(self, round_index: int) -> Path:
        """``mad/round_<r>``."""
        if isinstance(round_index, bool) or not isinstance(round_index, int) or round_index < 0:
            raise ValueError(f"A round index is an integer >= 0; found {round_index!r}.")
        return self.root / f"round_{round_index}"

    def readme_file(self, round_index: int) -> Path:
        """``round_<r>/README.txt``: the instructions for people."""
        return self.round_dir(round_index) / "README.txt"

    def stats_file(self, round_index: int) -> Path:
        """``round_<r>/stats.npz``."""
        return self.round_dir(round_index) / "stats.npz"

    def candidates_file(self, round_index: int) -> Path:
        """``round_<r>/candidates.json``."""
        return self.round_dir(round_index) / "candidates.json"

    def selection_file(self, round_index: int) -> Path:
        """``round_<r>/selection.json``."""
        return self.round_dir(round_index) / "selection.json"

    def metrics_file(self, round_index: int) -> Path:
        """``round_<r>/metrics.json``."""
        return self.round_dir(round_index) / "metrics.json"

    def scores_dir(self, round_index: int) -> Path:
        """``round_<r>/scores``."""
        return self.round_dir(round_index) / "scores"

    def scores_file(self, round_index: int, rater: str) -> Path:
        """``round_<r>/scores/<rater>.json``."""
        return self.scores_dir(round_index) / f"{check_rater(rater)}.json"

    def labels_dir(self, round_index: int) -> Path:
        """``round_<r>/labels``."""
        return self.round_dir(round_index) / "labels"

    def label_file(self, round_index: int, image_id: str) -> Path:
        """``round_<r>/labels/<id>.png``."""
        return id_path(self.labels_dir(round_index), image_id, ".png")

    def predictions_dir(self, round_index: int) -> Path:
        """``round_<r>/predictions``."""
        return self.round_dir(round_index) / "predictions"

    def prediction_file(self, round_index: int, image_id: str) -> Path:
        """``round_<r>/predictions/<id>.png``."""
        return id_path(self.predictions_dir(round_index), image_id, ".png")

    def images_dir(self, round_index: int) -> Path:
        """``round_<r>/images``."""
        return self.round_dir(round_index) / "images"

    def image_file(self, round_index: int, image_id: str) -> Path:
        """``round_<r>/images/<id>.jpg``: the candidate's image upright, for people."""
        return id_path(self.images_dir(round_index), image_id, ".jpg")
