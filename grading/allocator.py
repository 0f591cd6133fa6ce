"""Keeping freed memory for reuse, so that timing measures the work and not fresh pages.

glibc returns large freed blocks to the system: blocks from 128 KiB up are mapped afresh for each
allocation until its dynamic threshold has grown, and the top of the heap is given back once more
than its trim threshold is free. Which of those happens to an array of a given size depends on the
process's history. When it happens, every result pays for zeroed pages: for the notebook's forward
check (a 1 MiB result) about 260 page faults, 370-530 microseconds against 60-70 for the gather
itself. A speed check whose reference pays that and whose student side does not (or the reverse)
measures allocator state, not code: a Python loop over the ids measured 24-28x ``np.take`` that
way, under the forward check's 30x limit, against 112-260x otherwise.

:func:`keep_freed_memory` fixes both thresholds high, so freed blocks are reused. Speed checks
call it before they time anything (:func:`grading.timing.speed_ratio`), and the sealed worker when
it starts. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest allowed value on 64-bit machines
TRIM_THRESHOLD_BYTES = 128 << 20  # free heap kept at most before any of it goes back to the system


def keep_freed_memory() -> bool:
    """Have glibc reuse freed blocks below 32 MiB instead of returning them to the system; return
    whether the allocator took the setting (``False`` where there is no glibc ``mallopt``)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    taken = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) & bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    if not taken:
        log.debug("mallopt refused the thresholds: freed memory may go back to the system")
    return taken
