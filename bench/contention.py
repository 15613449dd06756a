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
    """CPU ticks of ``pid``, of its children that ended (reaped) and, recursively, of its living children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    own = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return own + sum(_process_ticks(child) for child in _children(pid))


def main(argv: list[str] | None = None) -> int:
    """``python bench/contention.py COMMAND...``: run COMMAND, then print its wall time and the other load."""
    import subprocess
    import sys

    command = sys.argv[1:] if argv is None else argv
    with OtherLoad() as load:
        start = time.perf_counter()
        code = subprocess.call(command)
        seconds = time.perf_counter() - start
    minutes, rest = divmod(seconds, 60)
    print(
        f"wall time {seconds:.1f} s ({int(minutes)} min {rest:.0f} s); other processes used {load.cores:.2f} "
        f"cores meanwhile; exit code {code}",
        file=sys.stderr,
    )
    return code


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


if __name__ == "__main__":
    raise SystemExit(main())
