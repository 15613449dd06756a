"""Wording shared by segmend's messages."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """A count with its noun in the right number: ``counted(1, "image")`` is ``"1 image"``, else ``"3 images"``."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
