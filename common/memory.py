"""Process-wide allocator settings for the long-lived render workers.

A renderer's per-pixel passes allocate and free tensors of a few MB each, many times per batch.
glibc's ``malloc`` serves blocks that large with ``mmap`` and returns them to the kernel on ``free``
(its dynamic threshold rises only to a block's size once one is freed, and the heap's top is trimmed
back), so each new tensor costs fresh page faults and zero-filling. :func:`keep_freed_memory` makes
this process keep its freed memory for reuse instead (``mallopt``: no ``mmap`` below 1 GiB, no
trimming): 3-4% more images per second end to end and about a third of the page faults
(BENCHMARKS.md, "Speed, session 24"), for a resident size that stays at the process's peak.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` of this process keep freed memory for reuse (see the module
    docstring); returns whether it took effect (False off Linux/glibc, where nothing changes).
    Changes no result: only where the memory of a tensor comes from."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
