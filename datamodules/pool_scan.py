"""What a scan of an image pool checks and finds: unreadable files, and files left out by extension."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from segmend.datamodules.image_io import PILLOW_PHOTO_EXTENSIONS, ImageReadError, read_image, read_image_size

#: Extensions of image formats people have (some of which Pillow cannot read without a plugin,
#: e.g. HEIC); files with them left out of a pool are pointed out in a warning besides the report.
RAW_EXTENSIONS = {".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf"}
PHOTO_EXTENSIONS = frozenset(PILLOW_PHOTO_EXTENSIONS) | {".heic", ".heif", ".jxl", ".svg"} | RAW_EXTENSIONS
#: Example paths kept per extension in :attr:`PoolReport.other_files`.
NUM_EXAMPLES = 3
Verify = Literal["decode", "header"]
"""How a pool scan checks each file: decode it in full, or read its header only."""


@dataclass
class PoolReport:
    """What a scan of an image pool found.

    Attributes:
        root: The pool folder.
        verify: The scan check, ``"decode"`` or ``"header"``.
        num_images: Images served by the pool: files that passed the scan, less those that failed
            when loaded later (in the main process; see :meth:`ImageFolderPool.__getitem__`).
        skipped: ``(path relative to root, reason)`` of each unreadable file, in the order found.
        other_files: Files not read because of their extension: lower-case extension (``""`` for
            none) -> ``(count, up to 3 example paths relative to root)``, sorted by extension.

    """

    root: str
    verify: str
    num_images: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    other_files: dict[str, tuple[int, list[str]]] = field(default_factory=dict)

    @property
    def num_skipped(self) -> int:
        """Number of unreadable files left out."""
        return len(self.skipped)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content of the report."""
        return {
            "root": self.root,
            "verify": self.verify,
            "num_images": self.num_images,
            "num_skipped": self.num_skipped,
            "skipped": [{"path": path, "reason": reason} for path, reason in self.skipped],
            "other_files": [
                {"extension": ext, "count": count, "examples": list(examples)}
                for ext, (count, examples) in self.other_files.items()
            ],
        }


def describe_files_by_extension(files: dict[str, tuple[int, list[str]]]) -> str:
    """One line for files counted by extension: ``extension -> (count, example paths)``."""
    return ", ".join(
        f"{count} {ext or '(no extension)'} ({', '.join(examples)}{', ...' if count > len(examples) else ''})"
        for ext, (count, examples) in files.items()
    )


def check_verify(verify: str) -> None:
    """Refuse a ``verify`` that is not one of :data:`Verify`.

    Raises:
        ValueError: Naming the choices.

    """
    if verify not in get_args(Verify):
        raise ValueError(f"verify must be 'decode' or 'header', got {verify!r}.")


def check_image_file(path: Path, verify: Verify = "decode") -> str | None:
    """Why ``path`` cannot be used as an image, or ``None`` when it can.

    Args:
        path: The file.
        verify: ``"decode"`` reads the file as the pool will (:func:`~segmend.datamodules.image_io.read_image`:
            decoded in full, oriented, converted); ``"header"`` only identifies its format and size
            (truncated or corrupt pixel data goes unnoticed).

    Returns:
        A reason such as ``"empty file (0 bytes)"``, ``"not an image: ..."`` or ``"corrupt or
        truncated: ..."``, or ``None``.

    """
    try:
        if verify == "decode":
            read_image(path)
        else:
            read_image_size(path)
    except ImageReadError as err:
        return err.reason
    return None
