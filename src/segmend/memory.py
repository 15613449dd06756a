"""The CPU memory allocator setting segmend trains with: freed activations are kept for the next step.

glibc's ``malloc`` serves a large block (a training step's activations and gradients, megabytes
each) with a fresh ``mmap`` and gives it back to the kernel on ``free``. The next step asks for
the same blocks again and the kernel zero-fills every page on first touch: on a DeepLabV3+
(resnet18) step at 128x128, batch 16, 40,000-56,000 minor page faults per step. Raising the
thresholds keeps those blocks in the heap, where the next step reuses them (measured by
``bench/allocator.py``: 130-670 faults, 443 -> 376 ms per step, the same peak memory).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from functools import cache

#: Blocks up to this size come from the heap instead of a fresh ``mmap`` (glibc's ceiling on 64-bit).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the top of the heap is given back to the kernel only beyond this size.
TRIM_THRESHOLD = 1024 * 1024 * 1024
# mallopt parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


@cache
def tune_cpu_allocator() -> bool:
    """Set glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` so freed activations are reused.

    Process-wide and for the rest of the process (glibc stops adapting its thresholds once they
    are set); the results of training do not change, only where memory comes from. Done once; a
    second call does nothing.

    Returns:
        Whether the allocator was tuned: ``False`` off Linux, on a C library other than glibc, or
        if ``mallopt`` refused.

    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
