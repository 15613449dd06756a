"""What a benchmark report must say about where its numbers came from: command, machine, code."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE_DIRS = ("src", "callbacks", "datamodules", "bench")


def command_line(script: str) -> str:
    """The command as run, e.g. ``'python bench/arm.py overhead --repeats 12'``."""
    return " ".join(["python", script, *sys.argv[1:]]).strip()


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (the machine can change between sessions), or the platform's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """E.g. ``'x86_64, AMD EPYC ..., 2 CPU cores, Python 3.11.7'``."""
    return f"{platform.machine()}, {cpu_model()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"


@functools.cache
def code_state() -> str:
    """The commit measured, and which code files differed from it (other work in a shared tree).

    Taken once per process, at the first call (:func:`check_checkout` makes it at the start), so a
    checkout that moves on while a long benchmark runs does not change what its results say.
    """

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_DIRS).splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    if not dirty:
        return f"commit {commit}"
    files = ", ".join(line[3:] for line in dirty if line.strip())
    return f"commit {commit} with uncommitted changes in {files}"


def check_checkout(packages: tuple[str, ...] = ("segmend", "segmend.callbacks", "segmend.datamodules")) -> None:
    """Refuse to measure code from another checkout than this script's.

    An editable install maps ``segmend.callbacks`` and ``segmend.datamodules`` to the checkout it
    was installed from, so a clone run with ``PYTHONPATH=<clone>/src:<clone>`` would still import
    those two from the installed checkout. Link them into the clone
    (``ln -s ../../callbacks src/segmend/callbacks``, the same for ``datamodules``) or install it.

    Raises:
        SystemExit: If a package comes from outside :data:`REPO`.

    """
    import importlib

    elsewhere = []
    for name in packages:
        path = Path(importlib.import_module(name).__file__).resolve()
        if REPO.resolve() not in path.parents:
            elsewhere.append(f"{name} from {path}")
    code_state()  # the code this process measures, fixed now
    if elsewhere:
        raise SystemExit(f"{REPO} would measure code of another checkout: {'; '.join(elsewhere)}. "
                         f"{check_checkout.__doc__.split(chr(10) + chr(10))[1].strip()}")  # fmt: skip
