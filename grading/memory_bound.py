"""Memory bound per submission: the resident memory of a whole process tree, not of one process.

``RLIMIT_AS`` (set by :func:`grading.sandbox.limit_args`) bounds each process; a submission that
forks twenty children of 300 MiB each stays under it while taking 6 GiB of the grading machine.
:class:`TreeWatchdog` samples the resident memory of every process below the root of a sandbox
(the kernel's or the sealed worker's: both run one after the other for a submission) and kills the
whole tree when the sum passes the bound.  A cgroup memory limit would do the same in the kernel;
it needs a cgroup hierarchy delegated to the grader (cgroup v2 or ``systemd-run --scope``), which
grading machines seldom offer, so the watchdog is what is in force (:func:`mechanism` says so).

The bound is one setting for both processes of a submission: ``c.SubmissionLimits.memory_bytes``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

import psutil
from traitlets import Float, Integer
from traitlets.config import Configurable

log = logging.getLogger(__name__)

DEFAULT_SUBMISSION_MEMORY_BYTES = 6 * 1024**3


class SubmissionLimits(Configurable):
    """Limits of one submission as a whole (all the processes its code starts)."""

    memory_bytes = Integer(
        DEFAULT_SUBMISSION_MEMORY_BYTES,
        allow_none=True,
        help="Resident memory (bytes) the processes of one submission may hold together, in the kernel "
        "and in the sealed worker; past it the process tree is killed. None: no bound per submission.",
    ).tag(config=True)
    poll_seconds = Float(0.05, help="How often the watchdog sums the resident memory of the tree.").tag(config=True)


def mechanism(limit_bytes: int | None) -> str:
    """One line for the grading log: which bound per submission is in force."""
    if limit_bytes is None:
        return "memory per submission: not bounded (per-process address-space limits only)"
    return (f"memory per submission: {limit_bytes / 1024**3:.2f} GiB, enforced by a watchdog summing the "
            "resident memory of the process tree (no delegated cgroup)")


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    """Child pids of ``pid`` from ``/proc/<pid>/task/<tid>/children`` (no scan of every process)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(n) for n in f.read().split())
    return found


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (Linux ``/proc``; psutil's full scan where unavailable)."""
    if not os.path.exists(f"/proc/{root}/task/{root}/children"):
        with contextlib.suppress(psutil.Error):
            return [root, *(p.pid for p in psutil.Process(root).children(recursive=True))]
        return []
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(_children(pid))
    return pids


def _rss(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).memory_info().rss
    return 0


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants (processes that vanish count 0)."""
    return sum(_rss(pid) for pid in tree_pids(root))


def kill_tree(root: int) -> None:
    """SIGKILL ``root`` and every descendant (children first found, then killed, so none escapes
    by being re-parented while the tree is walked: a killed process can no longer fork)."""
    for _ in range(3):
        pids = tree_pids(root)
        if not pids:
            return
        for pid in reversed(pids):  # the deepest first: a parent killed first would orphan its children
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


class TreeWatchdog:
    """Kill the process tree under ``pid`` when its resident memory passes ``limit_bytes``."""

    def __init__(self, pid: int, limit_bytes: int, poll_seconds: float = 0.05):
        self.root = pid
        self.limit_bytes = limit_bytes
        self.poll_seconds = poll_seconds
        self.exceeded = False
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"memory-watchdog-{pid}", daemon=True)

    def start(self) -> TreeWatchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            if not psutil.pid_exists(self.root):
                return
            used = tree_rss(self.root)
            self.peak = max(self.peak, used)
            if used > self.limit_bytes:
                self.exceeded = True
                log.warning("process tree %d holds %d MiB, past the bound of %d MiB per submission: killed",
                            self.root, used >> 20, self.limit_bytes >> 20)
                kill_tree(self.root)
                return

    def describe(self) -> str:
        """Why the tree was killed, for a failure message."""
        return (f"the code under test held more than {self.limit_bytes >> 20} MiB of memory across its processes "
                "(the bound per submission) and was stopped")
