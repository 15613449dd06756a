"""The per-image statistics record that every MAD function reads.

The loop runs the models over the pool once per round and keeps only these numbers, never the
maps: a few floats per image, so the statistics of 1M images fit in memory as dense arrays and
every selection is a handful of vectorised numpy passes.

:class:`ImageStats` is one image (what inference produces and DDP ranks gather);
:class:`PoolStats` is the pool as arrays, with N images, m competitors and C classes:

============================  ===========  ==================================================
field                         shape        meaning
============================  ===========  ==================================================
``ids``                       (N,)         image ids (unique strings)
``readable``                  (N,) bool    False for an image that failed to load
``discrepancy``               (m, N)       d(f_t, g_j) per competitor (per-image mIoU)
``target_fractions``          (N, C)       class area fractions of the target's prediction
``competitor_fractions``      (m, N, C)    class area fractions of each competitor's prediction
``scalars``                   name->(N,)   other per-image statistics: ``entropy``, ``error_mass``
``competitors``               (m,)         competitor names
============================  ===========  ==================================================

Statistics of an unreadable image are never read (they may be NaN); an image whose discrepancy
with one competitor is NaN (no valid pixel) is not ranked for that competitor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


@dataclass
class ImageStats:
    """The statistics of one pool image (see the module docstring).

    Attributes:
        id: the image id.
        readable: False when the image could not be read; its other fields are then ignored.
        discrepancy: (m,) d(f_t, g_j) per competitor.
        target_fractions: (C,) class area fractions of the target's prediction.
        competitor_fractions: (m, C) class area fractions of each competitor's prediction.
        scalars: other named per-image statistics (``entropy``, ``error_mass``, ...).

    """

    id: str
    readable: bool = True
    discrepancy: Sequence[float] = ()
    target_fractions: Sequence[float] = ()
    competitor_fractions: Sequence[Sequence[float]] = ()
    scalars: Mapping[str, float] = field(default_factory=dict)


@dataclass
class PoolStats:
    """Per-image statistics of a whole pool as arrays (see the module docstring for shapes).

    Attributes:
        ids: (N,) unique image ids.
        target_fractions: (N, C) class area fractions of the target's predictions.
        discrepancy: (m, N) per-image mIoU between the target and each competitor.
        competitor_fractions: (m, N, C) class area fractions of the competitors' predictions, or
            ``None`` when only the target's partition is used.
        readable: (N,) bool; ``None`` means every image was read.
        scalars: named (N,) statistics (``entropy``, ``error_mass``, ...).
        competitors: competitor names; ``None`` names them ``competitor0``, ``competitor1``, ...

    Raises:
        ValueError: If shapes disagree, ids repeat or a fraction is outside [0, 1].

    """

    ids: np.ndarray
    target_fractions: np.ndarray
    discrepancy: np.ndarray | None = None
    competitor_fractions: np.ndarray | None = None
    readable: np.ndarray | None = None
    scalars: dict[str, np.ndarray] = field(default_factory=dict)
    competitors: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=str)
        n = self.ids.shape[0]
        if self.ids.ndim != 1:
            raise ValueError(f"ids must be 1-D; found shape {self.ids.shape}.")
        if len(self._rows) != n:
            values, counts = np.unique(self.ids, return_counts=True)
            raise ValueError(f"Image ids must be unique; repeated: {values[counts > 1][:10].tolist()}.")
        self.target_fractions = np.asarray(self.target_fractions)
        if self.target_fractions.ndim != 2 or self.target_fractions.shape[0] != n:
            raise ValueError(f"target_fractions must be (N={n}, C); found shape {self.target_fractions.shape}.")
        num_classes = self.target_fractions.shape[1]
        self.readable = np.ones(n, dtype=bool) if self.readable is None else np.asarray(self.readable, dtype=bool)
        self._check_shape("readable", self.readable, (n,))
        self._check_fractions("target_fractions", self.target_fractions)
        if self.discrepancy is None:
            self.discrepancy = np.zeros((0, n))
        self.discrepancy = np.asarray(self.discrepancy)
        m = self.discrepancy.shape[0] if self.discrepancy.ndim == 2 else -1
        self._check_shape("discrepancy", self.discrepancy, (m, n))
        if self.competitor_fractions is not None:
            self.competitor_fractions = np.asarray(self.competitor_fractions)
            self._check_shape("competitor_fractions", self.competitor_fractions, (m, n, num_classes))
            self._check_fractions("competitor_fractions", self.competitor_fractions)
        names = tuple(f"competitor{j}" for j in range(m)) if self.competitors is None else tuple(self.competitors)
        if len(names) != m or len(set(names)) != m:
            raise ValueError(f"competitors must be {m} distinct names (one per discrepancy row); found {names}.")
        self.competitors = names
        self.scalars = {name: np.asarray(values) for name, values in self.scalars.items()}
        for name, values in self.scalars.items():
            self._check_shape(f"scalars[{name!r}]", values, (n,))

    def _check_shape(self, name: str, array: np.ndarray, expected: tuple[int, ...]) -> None:
        if array.shape != expected:
            raise ValueError(f"{name} must have shape {expected} for {len(self)} images; found {array.shape}.")

    def _check_fractions(self, name: str, fractions: np.ndarray) -> None:
        rows = fractions[..., self.readable, :]
        bad = (rows < -1e-6) | (rows > 1 + 1e-6) | ~np.isfinite(rows)  # float32 rounding tolerated
        if bad.any():
            where = np.argwhere(bad)[0]
            image = str(self.ids[self.readable][where[-2]])
            raise ValueError(f"{name} of image {image!r} holds {rows[tuple(where)]}; area fractions must be in [0, 1].")

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes C, background included."""
        return int(self.target_fractions.shape[1])

    @property
    def unreadable_ids(self) -> list[str]:
        """Ids of the images that failed to load, in pool order."""
        return self.ids[~self.readable].tolist()

    def scalar(self, name: str) -> np.ndarray:
        """The (N,) per-image statistic ``name``.

        Raises:
            ValueError: If the pool statistics do not hold it.

        """
        if name not in self.scalars:
            raise ValueError(
                f"The pool statistics hold no per-image {name!r}; found {sorted(self.scalars)}. "
                f"Compute {name!r} during inference (PoolStats.scalars[{name!r}])."
            )
        return self.scalars[name]

    @cached_property
    def _rows(self) -> dict[str, int]:
        return {image: row for row, image in enumerate(self.ids.tolist())}

    def index_of(self, ids: Iterable[str]) -> np.ndarray:
        """Row indices of ``ids``, in their order.

        Raises:
            ValueError: If an id is not in the pool.

        """
        ids = list(ids)
        missing = [image for image in ids if image not in self._rows]
        if missing:
            raise ValueError(f"Image ids not in the pool statistics: {missing[:10]}.")
        return np.array([self._rows[image] for image in ids], dtype=np.intp)

    def mask_of(self, ids: Iterable[str]) -> np.ndarray:
        """(N,) bool, True at the rows of ``ids`` (ids not in the pool are ignored)."""
        mask = np.zeros(len(self), dtype=bool)
        mask[[self._rows[image] for image in ids if image in self._rows]] = True
        return mask

    @classmethod
    def from_records(
        cls, records: Iterable[ImageStats], num_classes: int, competitors: Sequence[str] | None = None
    ) -> PoolStats:
        """Stack per-image records (e.g. gathered from every DDP rank) into pool arrays.

        Args:
            records: one :class:`ImageStats` per image; unreadable ones may leave fields empty.
            num_classes: C.
            competitors: the m competitor names, in the order of each record's discrepancy.

        Returns:
            The pool statistics; a statistic missing from some readable record is NaN there.

        Raises:
            ValueError: If a readable record's fields do not have m or C entries.

        """
        records = list(records)
        names = tuple(competitors or ())
        m = len(names)
        n = len(records)
        scalar_names = sorted({name for record in records for name in record.scalars})
        target = np.full((n, num_classes), np.nan)
        disc = np.full((m, n), np.nan)
        comp = np.full((m, n, num_classes), np.nan)
        scalars = {name: np.full(n, np.nan) for name in scalar_names}
        readable = np.array([record.readable for record in records], dtype=bool)
        has_comp = False
        for i, record in enumerate(records):
            for name, value in record.scalars.items():
                scalars[name][i] = value
            if not record.readable:
                continue
            target[i] = _row(record, "target_fractions", record.target_fractions, (num_classes,))
            disc[:, i] = _row(record, "discrepancy", record.discrepancy, (m,))
            if len(record.competitor_fractions):
                comp[:, i] = _row(record, "competitor_fractions", record.competitor_fractions, (m, num_classes))
                has_comp = True
        return cls(
            ids=np.array([record.id for record in records], dtype=str),
            target_fractions=target,
            discrepancy=disc,
            competitor_fractions=comp if has_comp else None,
            readable=readable,
            scalars=scalars,
            competitors=names,
        )


def _row(record: ImageStats, name: str, values: object, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.shape != shape:
        raise ValueError(f"{name} of image {record.id!r} must have shape {shape}; found {array.shape}.")
    return array
