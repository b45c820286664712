"""glibc's malloc, told to give big freed buffers back to the system (issue 14: the anonymous
memory of the whole process tree stays under 200 MiB).

By default glibc raises its mmap threshold to the size of each big block freed (up to 32 MiB)
and its trim threshold to twice that, so after one 4 MiB read or an 18 MiB document the
process keeps that much freed memory in its heaps, in every thread's arena, for good: each
server grew from 45 to 75 MiB over the scale benchmark, nearly all of it memory nothing used.
Fixed thresholds keep what the hot paths reuse (the 1 MiB chunks a cache hit is read in stay
in the heap) and return the rest: blocks of 2 MiB and more are mapped and unmapped, and a heap
keeps at most 4 MiB free at its top. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 2 << 20
TRIM_THRESHOLD = 4 << 20


def give_back_big_buffers() -> bool:
    """Set this process's thresholds; whether the C library took them."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        # The C library the interpreter already runs on (find_library would run ldconfig).
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    return False
