"""Keep the data path's large buffers in malloc's heap (glibc), for the daemon, qosfs
and qos-ior.

Every 1 MiB write or read allocates a message buffer of its size, in gRPC and in
Python, and frees it a moment later. glibc's defaults serve such a buffer with a fresh
mmap (or grow the heap for it and trim it back soon after), so every page of it is
faulted in and zeroed by the kernel again: on this project's machines the daemon took
170,000-280,000 minor page faults per GB written, and its CPU per GB varied by 20%
between two processes of the same code, depending on where each one's dynamic mmap
threshold had settled. Fixed thresholds above the buffer sizes let freed buffers be
reused: the faults drop to almost none and the CPU per GB by about a third
(``benchmarks/sdqos``, docs/tokenbucketd.md "Memory").

An administrator who sets ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` in
the environment keeps those: glibc has read them already, and they are not overridden.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

MiB = 1 << 20
M_TRIM_THRESHOLD = -1     # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 8 * MiB   # above the 1-4 MiB requests the data path moves
TRIM_THRESHOLD = 64 * MiB  # free heap kept per arena before it is given back
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_buffers_in_heap(mmap_threshold: int = MMAP_THRESHOLD,
                         trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set malloc's mmap and trim thresholds for this process; True when they were
    set, False when the environment sets them or this C library has no ``mallopt``
    (then nothing changes)."""
    chosen = [k for k in ENVIRONMENT if k in os.environ]
    if chosen:
        log.info("malloc thresholds left as the environment sets them (%s)", ", ".join(chosen))
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.info("no mallopt in this C library; malloc thresholds left alone")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Trim first: setting the mmap threshold also ends glibc's dynamic adjustment of
    # both, and a trim threshold left at 128 KiB would give the heap back at once.
    ok = mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
    ok = mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and ok
    if not ok:
        log.warning("mallopt refused mmap threshold %d or trim threshold %d",
                    mmap_threshold, trim_threshold)
    return ok
