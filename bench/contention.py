"""How much CPU other processes took while a benchmark measured (Linux ``/proc``; 0 elsewhere).

The machines are shared: a test run of another engineer in the same tree takes a core and slows
a measurement by half without a trace in its numbers. :class:`OtherLoad` measures it: the CPU
time every process used during a window (``/proc/stat``), minus what this process and its
children (DataLoader workers) used, in cores.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_ticks() -> int:
    """CPU ticks of the whole machine spent on anything but idle and iowait (steal included)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0
    values = [int(v) for v in fields[:8]]
    return sum(values) - values[3] - values[4]


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _process_ticks(pid: int) -> int:
    """utime + stime of ``pid`` and, recursively, of its living children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12]) + sum(_process_ticks(child) for child in _children(pid))


class OtherLoad:
    """A window's CPU use by other processes, in cores (``with OtherLoad() as load: ...; load.cores``)."""

    def __enter__(self) -> OtherLoad:
        self.cores = 0.0
        self._busy, self._ours, self._start = _busy_ticks(), _process_ticks(os.getpid()), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._start
        others = (_busy_ticks() - self._busy) - (_process_ticks(os.getpid()) - self._ours)
        self.cores = max(0.0, others / HZ / wall) if wall > 0 else 0.0
