"""Training batches mixed from two datasets: how many samples of each, and their concatenation.

Two uses share this: self-correction's F + W batches (:mod:`segmend.datamodules.full_weak`) and
labelled images added to a training set, such as MAD's counterexamples
(:meth:`segmend.datamodules.base.SegmentationDataModule.add_labelled`). Each part has its own
loader; Lightning cycles them together and the DataModule concatenates their batches before the
module sees one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def batch_split(
    batch_size: int,
    num_rest: int,
    num_part: int,
    per_batch: int | None,
    name: str = "per_batch",
    what: str = "extra labelled images",
) -> tuple[int, int]:
    """Numbers of samples of the rest and of a part in a mixed batch.

    Args:
        batch_size: The training batch size (at least 2).
        num_rest: Size of the dataset filling the rest of each batch.
        num_part: Size of the part with a share of each batch.
        per_batch: Samples of the part per batch; ``None`` gives it its share of the union, rounded,
            at least 1 and at most ``batch_size - 1``.
        name: The argument holding ``per_batch``, named in errors.
        what: What the part is, for errors.

    Returns:
        ``(rest, part)`` samples per batch, summing to ``batch_size``.

    Raises:
        ValueError: If the batch cannot hold both kinds, or ``per_batch`` leaves no room for one.

    """
    if batch_size < 2:
        raise ValueError(f"Mixing {what} into every batch needs batch_size >= 2 (one sample of each kind at least).")
    if per_batch is not None and not 1 <= per_batch <= batch_size - 1:
        raise ValueError(
            f"{name}={per_batch} must be in [1, batch_size - 1] = [1, {batch_size - 1}] so every batch holds both "
            "kinds; use null for a share proportional to the set sizes."
        )
    part = per_batch if per_batch is not None else round(batch_size * num_part / (num_rest + num_part))
    part = min(max(part, 1), batch_size - 1)
    return batch_size - part, part


def merge_batches(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate batches of the batch contract along the batch dimension (tensors and id lists).

    Raises:
        ValueError: If the batches do not have the same keys (e.g. one lacks ``boxes``).

    """
    keys = set(parts[0])
    if any(set(part) != keys for part in parts):
        raise ValueError(f"Cannot merge batches with different keys: {[sorted(part) for part in parts]}.")
    merged: dict[str, Any] = {}
    for key in parts[0]:
        values = [part[key] for part in parts]
        merged[key] = torch.cat(values) if isinstance(values[0], torch.Tensor) else sum(map(list, values), [])
    return merged
