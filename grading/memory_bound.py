"""Memory bound per submission: the memory of a whole process tree, not of one process.

``RLIMIT_AS`` (set by :func:`grading.sandbox.limit_args`) bounds each process; a submission that
forks twenty children of 300 MiB each stays under it while taking 6 GiB of the grading machine.
Each process tree that runs a submission's code (the kernel's, the sealed worker's: they run one
after the other, so a bound per tree is a bound per submission) is bounded by one of two
mechanisms (:class:`Mechanism`), chosen by ``c.SubmissionLimits.mechanism``:

* a cgroup of its own (:mod:`grading.cgroup`) with a memory and a process limit, where the grading
  machine lets the grader make one (cgroup v2 delegated, or v1 writable); the kernel enforces the
  limits and the whole tree is ended once its OOM killer strikes;
* elsewhere :class:`TreeWatchdog`, which samples the resident memory of every process of the tree
  and kills the whole tree when the sum passes the bound.

:meth:`SubmissionLimits.in_force` says which one is in force (a :class:`MemoryBound`, which the
grading log and ``batch.json`` report); :class:`TreeBound` applies it to one process tree.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
from dataclasses import dataclass

import psutil
from traitlets import Enum, Float, Integer, Unicode
from traitlets.config import Configurable

from grading.cgroup import CgroupError, CgroupGuard, CgroupRoot, TreeCgroup, find_root
from grading.polling import Poller

log = logging.getLogger(__name__)

DEFAULT_SUBMISSION_MEMORY_BYTES = 6 * 1024**3
# Processes and threads of one tree in its cgroup: ipykernel runs about ten threads and NumPy's BLAS
# one per core; the sandbox's RLIMIT_NPROC (512 per sandbox uid) stays in force as well.
DEFAULT_SUBMISSION_PIDS = 1024
DEFAULT_POLL_SECONDS = 0.05


class Mechanism(enum.Enum):
    """What bounds the memory of a submission's process tree."""

    NONE = "none"  # per-process address-space limits only
    WATCHDOG = "watchdog"  # TreeWatchdog sums the tree's resident memory
    CGROUP_V1 = "cgroup-v1"
    CGROUP_V2 = "cgroup-v2"

    @property
    def is_cgroup(self) -> bool:
        return self in (Mechanism.CGROUP_V1, Mechanism.CGROUP_V2)


@dataclass(frozen=True)
class MemoryBound:
    """The bound per submission in force: its mechanism and limits."""

    mechanism: Mechanism
    memory_bytes: int | None
    pids: int | None = None  # enforced by a cgroup only
    poll_seconds: float = DEFAULT_POLL_SECONDS
    cgroup_root: CgroupRoot | None = None

    def describe(self) -> str:
        """One line for the grading log and the summary."""
        memory = "not bounded" if self.memory_bytes is None else f"{self.memory_bytes / 1024**3:.2f} GiB"
        if self.mechanism is Mechanism.NONE:
            return "memory per submission: not bounded (per-process address-space limits only)"
        if self.mechanism is Mechanism.WATCHDOG:
            return (f"memory per submission: {memory}, enforced by a watchdog summing the resident memory of the "
                    "process tree (no delegated cgroup)")
        assert self.cgroup_root is not None
        pids = "not bounded" if self.pids is None else str(self.pids)
        return (f"memory per submission: {memory}, processes: {pids}, enforced by a cgroup "
                f"v{self.cgroup_root.version} per process tree under {', '.join(map(str, self.cgroup_root.parents))}")

    def record(self) -> dict[str, object]:
        """The bound as JSON data (``batch.json``)."""
        return {"mechanism": self.mechanism.value, "memory_bytes": self.memory_bytes,
                "pids": self.pids if self.mechanism.is_cgroup else None, "description": self.describe()}

    def tree(self) -> TreeBound:
        """A fresh bound for one process tree."""
        return TreeBound(self)


class SubmissionLimits(Configurable):
    """Limits of one submission as a whole (all the processes its code starts)."""

    memory_bytes = Integer(
        DEFAULT_SUBMISSION_MEMORY_BYTES,
        allow_none=True,
        help="Memory (bytes) the processes of one submission may hold together, in the kernel and in the "
        "sealed worker; past it the process tree is killed. None: no bound per submission.",
    ).tag(config=True)
    pids = Integer(
        DEFAULT_SUBMISSION_PIDS,
        allow_none=True,
        help="Processes and threads one submission's process tree may hold at once (cgroup only; the "
        "sandbox's per-uid process limit applies everywhere). None: no cgroup process limit.",
    ).tag(config=True)
    mechanism = Enum(
        ["auto", "cgroup", "watchdog"],
        "auto",
        help="What enforces the bound: 'cgroup' (refuse to grade without a usable cgroup), 'watchdog' "
        "(sum the resident memory of the tree), 'auto' (a cgroup where the machine has one, else the watchdog).",
    ).tag(config=True)
    cgroup_parent = Unicode(
        "",
        help="Cgroup (a path in the hierarchy, e.g. '/grading') under which each process tree gets its "
        "cgroup. Empty: cgroup v2 the grader's own cgroup (delegated), cgroup v1 the hierarchies' roots.",
    ).tag(config=True)
    poll_seconds = Float(
        DEFAULT_POLL_SECONDS,
        help="How often the watchdog sums the resident memory of the tree (or the cgroup's OOM count is read).",
    ).tag(config=True)

    def in_force(self) -> MemoryBound:
        """The bound these settings give on this machine (:class:`CgroupError` if 'cgroup' is asked
        for and none is usable)."""
        root = None if self.mechanism == "watchdog" else find_root(self.cgroup_parent)
        if self.mechanism == "cgroup" and root is None:
            raise CgroupError(f"SubmissionLimits.mechanism is 'cgroup' but no usable cgroup (v2 with memory and "
                              f"pids delegated, or writable v1 hierarchies) is found under {self.cgroup_parent!r}")
        if root is not None and (self.memory_bytes is not None or self.pids is not None):
            kind = Mechanism.CGROUP_V2 if root.version == 2 else Mechanism.CGROUP_V1
            return MemoryBound(kind, self.memory_bytes, self.pids, self.poll_seconds, root)
        if self.memory_bytes is None:
            return MemoryBound(Mechanism.NONE, None)
        return MemoryBound(Mechanism.WATCHDOG, self.memory_bytes, None, self.poll_seconds)


class TreeBound:
    """The bound on one process tree: call :meth:`prefix` for its command, :meth:`started` with its
    pid, :meth:`close` after it ended (removes its cgroup); :attr:`exceeded` says whether it was hit."""

    def __init__(self, bound: MemoryBound):
        self.bound = bound
        self.cgroup: TreeCgroup | None = None
        self._watch: TreeWatchdog | CgroupGuard | None = None

    def prefix(self) -> list[str]:
        """Command prefix putting the tree into its cgroup before anything runs (made here)."""
        if not self.bound.mechanism.is_cgroup:
            return []
        assert self.bound.cgroup_root is not None
        self.close()
        self.cgroup = TreeCgroup.create(self.bound.cgroup_root, self.bound.memory_bytes, self.bound.pids)
        return self.cgroup.join_prefix()

    def started(self, pid: int) -> None:
        """Watch the tree whose root is ``pid``."""
        if self.cgroup is not None:
            self._watch = CgroupGuard(self.cgroup, self.bound.poll_seconds).start()
        elif self.bound.mechanism is Mechanism.WATCHDOG and self.bound.memory_bytes is not None:
            self._watch = TreeWatchdog(pid, self.bound.memory_bytes, self.bound.poll_seconds).start()

    @property
    def exceeded(self) -> bool:
        """Whether the memory bound ended (part of) the tree."""
        if isinstance(self._watch, TreeWatchdog):
            return self._watch.exceeded
        return self.cgroup is not None and self.cgroup.read_oom_kills() > 0

    def describe(self) -> str:
        """Why the tree was ended, for a failure message."""
        limit = self.bound.memory_bytes or 0
        how = "its cgroup" if self.bound.mechanism.is_cgroup else "a watchdog"
        return (f"the code under test held more than {limit >> 20} MiB of memory across its processes "
                f"(the bound per submission, enforced by {how}) and was stopped")

    def close(self) -> None:
        """Stop watching; kill what is left in the cgroup and remove it (its counts stay readable)."""
        if self._watch is not None:
            self._watch.stop()
        if self.cgroup is not None:
            self.cgroup.remove()


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


class TreeWatchdog(Poller):
    """Kill the process tree under ``pid`` when its resident memory passes ``limit_bytes``."""

    def __init__(self, pid: int, limit_bytes: int, poll_seconds: float = DEFAULT_POLL_SECONDS):
        super().__init__(f"memory-watchdog-{pid}", poll_seconds)
        self.root = pid
        self.limit_bytes = limit_bytes
        self.exceeded = False
        self.peak = 0

    def check(self) -> bool:
        if not psutil.pid_exists(self.root):
            return True
        used = tree_rss(self.root)
        self.peak = max(self.peak, used)
        if used <= self.limit_bytes:
            return False
        self.exceeded = True
        log.warning("process tree %d holds %d MiB, past the bound of %d MiB per submission: killed",
                    self.root, used >> 20, self.limit_bytes >> 20)
        kill_tree(self.root)
        return True
