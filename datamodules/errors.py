"""The one error type for data problems, and the messages that point at the data to fix.

Readers raise :class:`DataFormatError` (a ``ValueError``) for a file or folder that is missing,
unreadable or not what its format says, naming the file, what was expected and what was found. A
path that holds no dataset at all raises its subclass :class:`DatasetNotFoundError`, also a
``FileNotFoundError``. Wrong arguments (an unknown split name) stay plain ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: The guide to the on-disk layouts, named in every missing-data message.
DATASETS_DOC = "docs/datasets.md"
#: Sections of :data:`DATASETS_DOC` that link the official download pages.
DOWNLOAD_SECTIONS = ("PASCAL VOC and SBD", "Cityscapes", "ADE20K")


class DataFormatError(ValueError):
    """A dataset file or folder is missing, unreadable or not what its format requires."""


class DatasetNotFoundError(DataFormatError, FileNotFoundError):
    """A path a dataset argument leads to does not hold the dataset (a missing folder or list)."""


def see_docs(section: str) -> str:
    """The sentence pointing at the section of :data:`DATASETS_DOC` that explains a layout."""
    downloads = " and the official download pages" if section in DOWNLOAD_SECTIONS else ""
    return f"See {DATASETS_DOC} ({section}) for the layout{downloads}."


def missing_data_error(path: Path, expected: str, section: str, argument: str = "root") -> DatasetNotFoundError:
    """Error for a dataset path that does not hold what a reader needs.

    Args:
        path: The path that was looked at.
        expected: What should be there.
        section: Section of ``docs/datasets.md`` that explains the layout.
        argument: The argument that leads to ``path`` and must be fixed (``root``, ``sbd_root``, ...).

    """
    return DatasetNotFoundError(
        f"Dataset not found: looked at {path}, expected {expected}. Set `{argument}` to the folder that "
        f"holds it. {see_docs(section)}"
    )


@dataclass(frozen=True)
class MissingData:
    """A path that a DataModule argument leads to and that does not hold what it should.

    Attributes:
        argument: The argument to fix (``root``, ``sbd_root``, ``aug_dir``, ...).
        value: The argument's value.
        path: The path looked at (``value`` itself or a file or folder in it).
        expected: What should be there.

    """

    argument: str
    value: Path | str
    path: Path
    expected: str


def missing_roots_error(owner: str, missing: Sequence[MissingData], section: str) -> DatasetNotFoundError:
    """One error listing every missing path, grouped by the argument to fix.

    Args:
        owner: Name of the DataModule (or reader) the arguments belong to.
        missing: What is missing (see :class:`MissingData`), in the order to report.
        section: Section of ``docs/datasets.md`` that explains the layouts.

    """
    arguments = list(dict.fromkeys(m.argument for m in missing))
    lines = []
    for argument in arguments:
        items = [m for m in missing if m.argument == argument]
        lines.append(f"  - {argument}={items[0].value}:")
        lines += [f"      {m.path} is missing; expected {m.expected}" for m in items]
    return DatasetNotFoundError(
        f"Dataset not found: {owner} cannot find the data of {' and '.join(arguments)}.\n"
        + "\n".join(lines)
        + f"\nSet {' and '.join(arguments)} to "
        + ("the folder that holds the data" if len(arguments) == 1 else "the folders that hold their data")
        + f" (e.g. --data.init_args.{arguments[0]}=<folder>). {see_docs(section)}"
    )
