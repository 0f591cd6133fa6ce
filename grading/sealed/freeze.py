"""Stopping the sealed worker's whole process tree while the checker times a reference.

In the sealed re-check a speed check times the student's function in the worker and the reference
here, in the checker, on the same (2-core) machine. Student code could start processes or threads
that burn the CPU whenever the worker waits for a request and pause while it serves one: the
reference would be timed on a loaded machine and the student's ratio deflated. So for the whole of
a speed check (:func:`quiet`, used by :func:`grading.timing.check_speed` and
:func:`grading.timing.speed_ratio`) every process of the worker's tree is stopped (``SIGSTOP``),
and it runs (``SIGCONT``) only while a request to the worker is in flight (the student's timed
calls, :func:`running`); afterwards it is always resumed (``finally``), so a stopped tree never
outlives a speed check, its test cell, or a failure of either.

The tree is the worker's root process (the sandbox's ``bwrap`` or the worker itself) and its
descendants, found through ``/proc/<pid>/task/<tid>/children`` (:func:`grading.memory_bound.tree_pids`).
No student process can leave it inside the sandbox: ``bwrap --unshare-pid`` gives the worker a
pid namespace whose init (bubblewrap's own pid 1) is in the tree, and an orphan is re-parented to
that init (or to a subreaper below it), never outside; ``setsid`` changes the session, not the
parent. Without the sandbox (development only) a double-forked orphan re-parents outside the tree
and is not stopped.

A stopped process cannot fork (a pending stop aborts ``fork``), so walking the tree again after
stopping what was found, until a walk finds nothing new, stops every process.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import signal
import time
from collections.abc import Iterator

from grading.memory_bound import tree_pids

log = logging.getLogger(__name__)

# Seconds to wait for the processes signalled to be stopped: one running on another core stops at
# once; one waiting for the CPU, or in the kernel (state D), runs no student code until it stops.
STOP_WAIT = 0.05
SETTLE_WAIT = 0.002  # seconds to let resumed processes go back to waiting (spinners never do)
MAX_ROUNDS = 64      # walks of the tree while stopping (each finds the children of the last)
_STOPPED_STATES = frozenset("TtZX")  # stopped, traced, or gone (zombie, dead)


def _task_states(pid: int) -> list[str]:
    """State letter of every thread of ``pid`` (``[]`` once it is gone)."""
    states: list[str] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, IndexError), open(f"/proc/{pid}/task/{task}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
    return states


def is_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped (or the process is gone)."""
    return all(state in _STOPPED_STATES for state in _task_states(pid))


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def stop_tree(root: int, wait: float = STOP_WAIT) -> list[int]:
    """``SIGSTOP`` ``root`` and every descendant, parents first; return the pids stopped.

    Each round signals the processes not yet signalled and waits (at most ``wait`` seconds in all)
    until they are stopped, then walks the tree again; it ends when a walk finds nothing new.
    """
    stopped: list[int] = []
    seen: set[int] = set()
    deadline = time.monotonic() + wait
    for _ in range(MAX_ROUNDS):
        new = [pid for pid in tree_pids(root) if pid not in seen]
        if not new:
            break
        _signal(new, signal.SIGSTOP)
        seen.update(new)
        stopped.extend(new)
        for pid in new:  # a busy wait: giving up the CPU would cost a time slice of a busy machine
            while not is_stopped(pid) and time.monotonic() < deadline:
                pass
    else:
        log.warning("process tree %d still grew after %d rounds of stopping", root, MAX_ROUNDS)
    return stopped


def resume_tree(root: int, wait: float = STOP_WAIT) -> None:
    """``SIGCONT`` ``root`` and every descendant (only processes of the tree now: never a pid
    recorded earlier, which may belong to someone else by now), and wait (at most ``wait``
    seconds) until none of their threads is stopped, and (at most :data:`SETTLE_WAIT`) until
    they are back to waiting, so a timed request that follows does not pay for waking them."""
    pids = tree_pids(root)
    _signal(pids, signal.SIGCONT)
    deadline = time.monotonic() + wait
    settle = time.monotonic() + SETTLE_WAIT
    for pid in pids:
        while time.monotonic() < deadline:
            states = _task_states(pid)
            if any(state in "Tt" for state in states):
                continue
            if "R" not in states or time.monotonic() > settle:
                break


class TreeFreezer:
    """Stops and resumes the process tree under ``root`` (the sealed worker's root process).

    :meth:`quiet` stops the tree for its block (nested blocks stop it once); :meth:`running`
    resumes it for its block when it is stopped and stops it again afterwards. Both always leave
    the tree as they found it, whatever their block raises.
    """

    def __init__(self, root: int):
        self.root: int | None = root
        self.depth = 0          # nesting of quiet() blocks
        self.stopped = False    # whether the tree is stopped now

    def _stop(self) -> None:
        if self.root is not None:
            stop_tree(self.root)
            self.stopped = True

    def _resume(self) -> None:
        self.stopped = False
        if self.root is not None:
            resume_tree(self.root)

    def forget(self) -> None:
        """The tree is being killed: never signal its root's pid again (it may be reused)."""
        self.root = None
        self.stopped = False

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Keep the tree stopped for the block (except inside :meth:`running`)."""
        if self.depth == 0:
            try:
                self._stop()
            except BaseException:
                self._resume()
                raise
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0:
                self._resume()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Let the tree run for the block (a request to the worker), then stop it again if a
        :meth:`quiet` block is still open."""
        if not self.stopped:
            yield
            return
        self._resume()
        try:
            yield
        finally:
            if self.depth > 0 and not self.stopped:
                self._stop()

    def release(self) -> None:
        """Resume the tree for good (end of a test cell, or a worker that is being killed)."""
        self.depth = 0
        if self.stopped:
            self._resume()


_CURRENT: contextvars.ContextVar[TreeFreezer | None] = contextvars.ContextVar("sealed_worker_freezer", default=None)


@contextlib.contextmanager
def serving(freezer: TreeFreezer | None) -> Iterator[None]:
    """Make ``freezer`` the one :func:`quiet` and :func:`running` use during the block (the
    checker's test cell); the tree is resumed when the block ends, however it ends."""
    token = _CURRENT.set(freezer)
    try:
        yield
    finally:
        _CURRENT.reset(token)
        if freezer is not None:
            freezer.release()


def quiet() -> contextlib.AbstractContextManager[None]:
    """Stop the current sealed worker's tree for the block (no-op outside the sealed checker,
    e.g. in a kernel, where student code shares the process and nothing can be stopped)."""
    freezer = _CURRENT.get()
    return contextlib.nullcontext() if freezer is None else freezer.quiet()


def running() -> contextlib.AbstractContextManager[None]:
    """Let the current sealed worker's tree run for the block (the student's timed calls)."""
    freezer = _CURRENT.get()
    return contextlib.nullcontext() if freezer is None else freezer.running()
