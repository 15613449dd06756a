"""Safe files for the MAD loop's run folder: atomic writes, versioned JSON and image-id paths.

Every file the loop or a person's tool writes goes through :func:`atomic_write`: the bytes go to a
temporary file in the same folder (``.<name>.tmp-<pid>-<random>``), are flushed to disk, and
``os.replace`` puts them in place, so a kill at any moment leaves either the old file or the new one,
never a half-written one.

Every JSON file carries a ``format`` name and an integer ``version``; :func:`read_json` checks both
and names the file, the expected and the found value when they do not match.

Image ids are pool paths such as ``street/0001.jpg``: :func:`id_path` maps them to nested paths
under a folder and refuses ids that would leave it (``..``, absolute paths, empty parts).
"""

from __future__ import annotations

import io
import json
import os
import secrets
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

TEMP_MARKER = ".tmp-"
"""Part of every temporary file's name; files whose name starts with ``.`` and holds it are never data."""

_MAX_PART_BYTES = 200  # a file name on common file systems holds 255 bytes; leave room for suffixes


class MADFileError(ValueError):
    """A file of the MAD run folder is missing, unreadable or not in the expected format."""


def is_temporary(path: Path) -> bool:
    """True for the temporary files :func:`atomic_write` creates (left behind only by a kill)."""
    return path.name.startswith(".") and TEMP_MARKER in path.name


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file atomically: ``write(handle)`` fills a temporary file renamed to ``path``.

    Args:
        path: The destination; its folder is created if needed.
        write: Called with a binary file handle open on the temporary file.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        Exception: Whatever ``write`` raises; the temporary file is removed and ``path`` is untouched.

    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(data))


def write_json(path: str | Path, format_name: str, version: int, payload: Mapping[str, Any]) -> Path:
    """Write ``{"format": format_name, "version": version, **payload}`` atomically as strict JSON.

    Raises:
        ValueError: If the payload holds NaN or infinity (not JSON; store them as ``null`` or a string).

    """
    document = {"format": format_name, "version": version, **payload}
    text = json.dumps(document, indent=1, allow_nan=False, ensure_ascii=False) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: str | Path, format_name: str, versions: Collection[int] = (1,)) -> dict[str, Any]:
    """Read a versioned JSON file written by :func:`write_json` (or by a person's tool).

    Args:
        path: The file.
        format_name: The ``format`` it must declare.
        versions: The versions this reader understands.

    Returns:
        The whole document, ``format`` and ``version`` included.

    Raises:
        MADFileError: If the file is missing or not JSON, or its format or version is not the
            expected one; the message names the file, the expected and the found value.

    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise MADFileError(f"{path} is missing; expected a {format_name!r} file.") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MADFileError(f"{path} is not a readable JSON file ({err}); expected a {format_name!r} file.") from err
    if not isinstance(document, dict):
        raise MADFileError(
            f"{path} holds a JSON {type(document).__name__}; expected an object with format {format_name!r}."
        )
    found = document.get("format")
    if found != format_name:
        raise MADFileError(f"{path} has format {found!r}; expected {format_name!r}. Is it the right file?")
    version = document.get("version")
    if isinstance(version, bool) or version not in set(versions):
        raise MADFileError(
            f"{path} has {format_name!r} version {version!r}; this segmend reads versions {sorted(versions)}. "
            "Upgrade segmend, or rewrite the file in a version it reads."
        )
    return document


def require_key(document: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str | Path) -> Any:
    """``document[key]``, checked to be an instance of ``kind``.

    Raises:
        MADFileError: Naming the file, the key, the expected and the found type.

    """
    if key not in document:
        raise MADFileError(f"{path} has no {key!r} entry.")
    value = document[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise MADFileError(f"{path}: {key!r} must be a {names}; found {type(value).__name__} {value!r:.80}.")
    return value


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write arrays into a compressed ``.npz`` atomically (no pickled objects)."""

    def write(handle: IO[bytes]) -> None:
        buffer = io.BytesIO()  # numpy seeks while zipping: build in memory, then write once
        np.savez_compressed(buffer, **arrays)
        handle.write(buffer.getvalue())

    return atomic_write(path, write)


def check_id(image_id: str) -> list[str]:
    """The parts of an image id that :func:`id_path` turns into a relative path.

    Raises:
        ValueError: If the id is not a non-empty relative POSIX path of ordinary parts (no ``..``,
            ``.``, empty part, leading ``/``, backslash or control character, no part over 200 bytes).

    """
    if not isinstance(image_id, str) or not image_id:
        raise ValueError(f"Image id {image_id!r} must be a non-empty string.")
    if image_id.startswith("/") or "\\" in image_id or any(ord(ch) < 32 or ord(ch) == 127 for ch in image_id):
        raise ValueError(
            f"Image id {image_id!r} must be a relative POSIX path ('folder/name.jpg') without backslashes "
            "or control characters."
        )
    parts = image_id.split("/")
    bad = [part for part in parts if part in ("", ".", "..")]
    if bad:
        raise ValueError(f"Image id {image_id!r} holds the path part {bad[0]!r}; ids may not leave their folder.")
    long = [part for part in parts if len(part.encode("utf-8")) > _MAX_PART_BYTES]
    if long:
        raise ValueError(f"Image id {image_id!r} has a part of over {_MAX_PART_BYTES} bytes: {long[0][:40]}...")
    return parts


def id_path(folder: str | Path, image_id: str, suffix: str) -> Path:
    """The file of ``image_id`` under ``folder``: ``street/0001.jpg`` -> ``folder/street/0001.jpg<suffix>``.

    Raises:
        ValueError: If the id could leave ``folder`` (see :func:`check_id`).

    """
    parts = check_id(image_id)
    parts[-1] += suffix
    return Path(folder).joinpath(*parts)


def ids_in(folder: str | Path, suffix: str) -> dict[str, Path]:
    """Image ids of the files ending in ``suffix`` under ``folder`` (nested), temporary files left out."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.rglob(f"*{suffix}")):
        if path.is_file() and not is_temporary(path):
            found[path.relative_to(folder).as_posix()[: -len(suffix)]] = path
    return found
