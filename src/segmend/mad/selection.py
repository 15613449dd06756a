"""The candidate set M (paper Eq. 2 and Algorithm 1, lines 8-14).

For every competitor g_j and every class k: the n3 images of the target's subgroup D_{t,k} with the
lowest d(f_t, g_j) (most controversial), then the same over the competitor's subgroup D_{j,k}.
M is the union, de-duplicated (an image is optimal in several problems, paper footnote 4).

Images that could not be read are skipped and reported, never ranked (the official code scored
them -1 and so ranked them first, DESIGN.md). Ties in the discrepancy are broken by pool order,
so the selection is deterministic.

Cost: one boolean (N, C) membership matrix per model, then per (competitor, role, class) one
``flatnonzero`` and one ``argpartition`` of the members' discrepancies: O(m * C * N) vectorised,
no Python loop over images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from segmend.mad.partition import ContentBounds, subgroup_membership
from segmend.mad.stats import PoolStats

Role = Literal["target", "competitor"]


@dataclass
class Selection:
    """The candidate set M and how it was formed.

    Attributes:
        ids: M, de-duplicated, in order of first selection (competitor, then role, then class; within
            a subgroup most controversial first).
        skipped: ids of the images that could not be read (never ranked).
        groups: ``(competitor, role, class) -> ids`` selected in that subgroup, most controversial
            first; ``role`` is whose prediction defined the subgroup (``"target"``/``"competitor"``).

    """

    ids: list[str]
    skipped: list[str]
    groups: dict[tuple[str, Role, int], list[str]] = field(default_factory=dict)


def lowest(values: np.ndarray, candidates: np.ndarray, n: int) -> np.ndarray:
    """Rows of the ``n`` lowest ``values`` among ``candidates``, ascending, ties by row.

    Args:
        values: (N,) values.
        candidates: (K,) increasing row indices to choose from.
        n: how many to return (fewer if there are fewer candidates).

    Returns:
        (min(n, K),) row indices.

    """
    if n <= 0 or candidates.size == 0:
        return candidates[:0]
    chosen = values[candidates]
    if candidates.size > n:
        threshold = np.partition(chosen, n - 1)[n - 1]
        keep = chosen <= threshold  # every tie at the threshold, so the tie-break below sees them all
        candidates, chosen = candidates[keep], chosen[keep]
    order = np.argsort(chosen, kind="stable")  # candidates are increasing: ties stay in pool order
    return candidates[order[:n]]


def select_candidates(
    stats: PoolStats,
    bounds: ContentBounds,
    n3: int = 25,
    roles: tuple[Role, ...] = ("target", "competitor"),
) -> Selection:
    """Build the candidate set M.

    Args:
        stats: the pool statistics (needs ``discrepancy`` and, for the ``"competitor"`` role,
            ``competitor_fractions``).
        bounds: the content bounds [p_k, q_k] (see :func:`~segmend.mad.partition.content_bounds`).
        n3: images per (competitor, role, class) problem (paper: 25).
        roles: whose predictions define the subgroups; the paper uses both.

    Returns:
        M, the skipped unreadable images and the per-subgroup picks.

    Raises:
        ValueError: If ``n3`` < 1, there is no competitor, a role is unknown or the competitor role
            lacks competitor fractions.

    """
    if n3 < 1:
        raise ValueError(f"n3 must be a positive number of images per subgroup; found {n3}.")
    if not stats.competitors:
        raise ValueError("MAD selection needs at least one competitor's discrepancy; the pool statistics have none.")
    unknown = set(roles) - {"target", "competitor"}
    if unknown or not roles:
        raise ValueError(f"roles must be a non-empty subset of ('target', 'competitor'); found {roles}.")
    if "competitor" in roles and stats.competitor_fractions is None:
        raise ValueError(
            "The 'competitor' role partitions by the competitors' predictions, but the pool statistics have no "
            "competitor_fractions; compute them or pass roles=('target',)."
        )
    target_member = subgroup_membership(stats.target_fractions, bounds).T  # (C, N), rows contiguous
    selected: dict[int, None] = {}  # insertion-ordered set of rows
    groups: dict[tuple[str, Role, int], list[str]] = {}
    for j, name in enumerate(stats.competitors):
        disc = stats.discrepancy[j]  # (N,)
        rankable = stats.readable & np.isfinite(disc)  # (N,)
        for role in roles:
            member = (
                target_member if role == "target" else subgroup_membership(stats.competitor_fractions[j], bounds).T  # type: ignore[index]
            )
            for k in range(stats.num_classes):
                rows = lowest(disc, np.flatnonzero(member[k] & rankable), n3)
                if rows.size:
                    groups[(name, role, k)] = stats.ids[rows].tolist()
                    selected.update(dict.fromkeys(rows.tolist()))
    return Selection(ids=stats.ids[list(selected)].tolist(), skipped=stats.unreadable_ids, groups=groups)
