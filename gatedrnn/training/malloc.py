"""Keep glibc from returning large freed blocks to the OS between training steps.

A training step on the CPU allocates and frees activations of a few hundred KB to a few MB. Above
glibc's mmap threshold each such block is a fresh mmap, and every first touch of its pages is a
page fault: measured on this project's reference configurations, that cost 25-35 % of step time
(benchmarks/bench_train.py). Raising the mmap and trim thresholds keeps those blocks in the heap
for reuse. It affects this process only, and only the allocator's caching of freed memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_done = False


def keep_freed_memory(threshold_bytes: int = 1 << 28) -> bool:
    """Apply once per process on Linux with glibc; returns whether it was applied."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt)
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    settings = ((_M_MMAP_THRESHOLD, threshold_bytes), (_M_TRIM_THRESHOLD, threshold_bytes), (_M_TOP_PAD, 1 << 26))
    applied = [mallopt(param, value) == 1 for param, value in settings]  # each on its own
    if not applied[0]:  # some builds cap the mmap threshold (32 MiB on 64-bit): take the cap
        applied[0] = mallopt(_M_MMAP_THRESHOLD, 1 << 25) == 1
    ok = all(applied)
    _done = ok
    return ok
