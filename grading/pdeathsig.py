"""Processes that die with their parent (Linux ``prctl(PR_SET_PDEATHSIG)``).

The grader starts long-lived helpers (the fork server's commands, the kernel's launcher, the sealed
worker); none may outlive the process that started it, however that process ends (``SIGKILL``
included), or a killed grading command would leave student code running.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """Have Linux send ``SIGKILL`` to this process when its parent thread exits.

    ``parent`` is the pid the caller expects as its parent; if the process has already been
    re-parented (its parent exited before the request took effect), it exits at once. Where
    ``prctl`` is unavailable (not Linux), nothing happens.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(128 + signal.SIGKILL)
