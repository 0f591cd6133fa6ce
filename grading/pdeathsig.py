"""Processes that die with their parent (Linux ``prctl(PR_SET_PDEATHSIG)``).

The grader starts long-lived helpers (the fork server's commands, the kernel's launcher, the sealed
worker); none may outlive the process that started it, however that process ends (``SIGKILL``
included), or a killed grading command would leave student code running.

:func:`die_with_parent` is for Python processes of the grader (called first thing);
:func:`command_prefix` for commands it starts (the nbgrader processes, and the sandboxes of the
kernel and of the sealed worker: bubblewrap's ``--die-with-parent`` ends the sandbox with its outer
``bwrap`` process, which itself would outlive the grader).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import threading

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


# Run after setpriv: exit if the parent that started the command ($1) is already gone, i.e. it
# died before setpriv's prctl took effect (a death signal is never sent for an earlier death).
_CHECK_PARENT = '[ "$PPID" = "$1" ] || exit 137; shift; exec "$@"'


def command_prefix(*, from_any_thread: bool = False) -> list[str]:
    """A prefix that has Linux kill the command when the thread that starts it exits.

    ``setpriv --pdeathsig KILL`` asks for the signal, then ``/bin/sh`` checks that the command's
    parent is still this process (``exit 137`` otherwise: it died in between) and execs the
    command, so there is no moment at which the grader can die unnoticed.

    A thread may end long before its process (a web server's handler thread), and the command
    with it; so unless ``from_any_thread`` (the caller's threads outlive the command, as a
    batch's pool threads do), the prefix is empty off the main thread, whose end is the process's.
    Empty where ``setpriv`` is missing.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or not (from_any_thread or threading.current_thread() is threading.main_thread()):
        return []
    return [setpriv, "--pdeathsig", "KILL", "--", "/bin/sh", "-c", _CHECK_PARENT, "die-with-parent",
            str(os.getpid())]
