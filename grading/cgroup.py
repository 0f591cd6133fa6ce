"""A cgroup per sandboxed process tree: memory and process limits enforced by the kernel.

Where the grading machine lets the grader make cgroups (:func:`find_root`), each process tree that
runs student code (the notebook kernel's launcher, the sealed worker) gets a cgroup of its own
(:class:`TreeCgroup`), made under a parent cgroup:

* cgroup v2: a directory of the unified hierarchy whose ``cgroup.subtree_control`` enables
  ``memory`` and ``pids`` (a delegated subtree: by default the grader's own cgroup, as systemd's
  ``Delegate=yes`` hands it over); limits ``memory.max`` (``memory.swap.max`` 0,
  ``memory.oom.group`` 1: an out-of-memory kill ends the whole group) and ``pids.max``;
* cgroup v1: writable ``memory`` and ``pids`` hierarchies (by default their roots: v1 has no
  delegation, so it is usable when the grader runs as root); limits ``memory.limit_in_bytes`` and
  ``memory.memsw.limit_in_bytes`` (memory and swap together), and ``pids.max``.

The process joins its cgroup before it runs anything else: :meth:`TreeCgroup.join_prefix` is a
``/bin/sh`` prefix that writes its own pid into ``cgroup.procs`` and then execs the command
(bubblewrap), so every process of the tree is born inside.  A :class:`CgroupGuard` ends the whole
group once the kernel's OOM killer has struck in it (v1 kills one process only, which would leave
the rest of a forking submission running), and :meth:`TreeCgroup.remove` kills whatever is left
and removes the directory.  Cgroups are named ``nbgrader-<pid namespace>-<grader pid>-<random>``
(the hierarchy may be shared by containers with pid namespaces of their own); those of a grader
of the same namespace that died without removing them are removed by the next one, which kills what is still
inside first (:func:`sweep_stale`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from grading.polling import Poller

log = logging.getLogger(__name__)

CGROUP_MOUNT = Path("/sys/fs/cgroup")
NAME_PREFIX = "nbgrader-"
_NAME = re.compile(rf"^{NAME_PREFIX}(\d+)-(\d+)-[0-9a-f]+$")  # pid namespace, grader pid, random
KILL_ROUNDS = 200
STALE_SECONDS = 60.0
KILL_PAUSE_SECONDS = 0.01
# The join prefix: for each ``cgroup.procs`` file given before ``--``, write the shell's own pid
# into it (exit 126 if that fails: nothing runs unbounded), then exec the command after ``--``.
_JOIN_SCRIPT = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@"'


class CgroupError(OSError):
    """A cgroup could not be made, limited or joined."""


@dataclass(frozen=True)
class CgroupRoot:
    """Where the trees' cgroups are made: one directory (v2) or the memory and pids directories (v1)."""

    version: int
    parents: tuple[Path, ...]


def _mounts() -> list[tuple[str, Path, set[str]]]:
    """``(fstype, mount point, options)`` of the cgroup mounts of this process."""
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
                found.append((fields[2], Path(fields[1]), set(fields[3].split(","))))
    return found


def _own_cgroups() -> dict[str, str]:
    """Controller (``""`` for v2) -> this process's cgroup path, from ``/proc/self/cgroup``."""
    own: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                own[name] = path
    return own


def _under(mount: Path, path: str) -> Path:
    return mount / path.lstrip("/")


def _v2_parent(parent: str) -> Path | None:
    """The v2 directory to make cgroups in (``parent``, else this process's cgroup), if it enables
    memory and pids for its children."""
    mount = next((m for t, m, _ in _mounts() if t == "cgroup2"), None)
    if mount is None:
        return None
    where = _under(mount, parent or _own_cgroups().get("", "/"))
    with contextlib.suppress(OSError):
        enabled = (where / "cgroup.subtree_control").read_text().split()
        if {"memory", "pids"} <= set(enabled) and os.access(where, os.W_OK):
            return where
    return None


def _v1_parents(parent: str) -> tuple[Path, ...] | None:
    """The v1 memory and pids directories to make cgroups in (``parent`` in each, else the roots)."""
    mounts = {opt: m for t, m, opts in _mounts() if t == "cgroup" for opt in opts & {"memory", "pids"}}
    if set(mounts) != {"memory", "pids"}:
        return None
    dirs = tuple(_under(mounts[c], parent or "/") for c in ("memory", "pids"))
    return dirs if all(d.is_dir() and os.access(d, os.W_OK) for d in dirs) else None


@functools.lru_cache(maxsize=8)
def find_root(parent: str = "") -> CgroupRoot | None:
    """The usable cgroup parent of this machine (v2 first), checked by making and removing one
    cgroup with limits; ``None`` when there is none.  ``parent`` is a path in the hierarchy
    (``SubmissionLimits.cgroup_parent``); empty: v2 the grader's own cgroup, v1 the roots."""
    candidates = []
    v2 = _v2_parent(parent)
    if v2 is not None:
        candidates.append(CgroupRoot(2, (v2,)))
    v1 = _v1_parents(parent)
    if v1 is not None:
        candidates.append(CgroupRoot(1, v1))
    for root in candidates:
        try:
            TreeCgroup.create(root, memory_bytes=64 * 1024**2, pids=8).remove()
        except OSError as exc:
            log.info("cgroup v%d under %s is not usable: %s", root.version, root.parents[0], exc)
            continue
        return root
    return None


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise CgroupError(exc.errno, f"cannot write {value!r} to {path}: {exc.strerror}") from exc


def _read_keyed(path: Path) -> dict[str, int]:
    """``key value`` lines of a cgroup file (``memory.events``, ``memory.oom_control``)."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            values[key] = int(value)
    return values


@dataclass
class TreeCgroup:
    """The cgroup of one process tree: its directories (v2 one, v1 memory then pids)."""

    version: int
    dirs: tuple[Path, ...]
    oom_kills: int = 0  # kept after removal: how often the memory limit ended a process
    pids_refused: int = 0  # kept after removal: forks the process limit refused

    @classmethod
    def create(cls, root: CgroupRoot, memory_bytes: int | None, pids: int | None) -> TreeCgroup:
        """Make a fresh cgroup under ``root`` with these limits (``None``: that one unlimited)."""
        name = f"{NAME_PREFIX}{_pid_namespace()}-{os.getpid()}-{secrets.token_hex(6)}"
        for parent in root.parents:
            sweep_stale(parent, root.version)
        made = cls(root.version, tuple(parent / name for parent in root.parents))
        try:
            for path in made.dirs:
                path.mkdir()
            made._limit(memory_bytes, pids)
        except OSError:
            made.remove()
            raise
        return made

    def _limit(self, memory_bytes: int | None, pids: int | None) -> None:
        if self.version == 2:
            top = self.dirs[0]
            if memory_bytes is not None:
                _write(top / "memory.max", str(memory_bytes))
                if (top / "memory.swap.max").exists():
                    _write(top / "memory.swap.max", "0")
                _write(top / "memory.oom.group", "1")
            if pids is not None:
                _write(top / "pids.max", str(pids))
            return
        memory, pid_dir = self.dirs
        if memory_bytes is not None:
            _write(memory / "memory.limit_in_bytes", str(memory_bytes))
            if (memory / "memory.memsw.limit_in_bytes").exists():  # swap accounting on: bound both
                _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
        if pids is not None:
            _write(pid_dir / "pids.max", str(pids))

    def join_prefix(self) -> list[str]:
        """Command prefix that moves the process into this cgroup before it execs the command."""
        return ["/bin/sh", "-c", _JOIN_SCRIPT, "cgroup-join", *(str(d / "cgroup.procs") for d in self.dirs), "--"]

    def pids(self) -> set[int]:
        """Processes in the cgroup now (in every hierarchy, for v1)."""
        found: set[int] = set()
        for path in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(n) for n in (path / "cgroup.procs").read_text().split())
        return found

    def read_oom_kills(self) -> int:
        """Processes the kernel's OOM killer has ended in this cgroup so far (kept in :attr:`oom_kills`)."""
        if self.dirs[0].is_dir():
            name = "memory.events" if self.version == 2 else "memory.oom_control"
            self.oom_kills = max(self.oom_kills, _read_keyed(self.dirs[0] / name).get("oom_kill", 0))
        return self.oom_kills

    def read_pids_refused(self) -> int:
        """Forks the process limit has refused so far (kept in :attr:`pids_refused`)."""
        path = self.dirs[0] if self.version == 2 else self.dirs[1]
        if path.is_dir():
            self.pids_refused = max(self.pids_refused, _read_keyed(path / "pids.events").get("max", 0))
        return self.pids_refused

    def kill(self) -> None:
        """SIGKILL every process in the cgroup until none is left (``cgroup.kill`` where v2 has it)."""
        if self.version == 2 and (self.dirs[0] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(self.dirs[0] / "cgroup.kill", "1")
        for _ in range(KILL_ROUNDS):
            left = self.pids()
            if not left:
                return
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(KILL_PAUSE_SECONDS)
        log.error("processes %s are still in %s after being killed", sorted(self.pids()), self.dirs[0])

    def remove(self) -> None:
        """Kill what is left in the cgroup and remove its directories (the counts are kept)."""
        self.read_oom_kills()
        self.read_pids_refused()
        self.kill()
        self._remove_dirs()

    def _remove_dirs(self) -> None:
        for path in self.dirs:
            for _ in range(KILL_ROUNDS):  # a killed process leaves the cgroup a moment after it dies
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(KILL_PAUSE_SECONDS)
            else:
                log.error("cannot remove the cgroup %s", path)


def _pid_namespace() -> int:
    """Inode of this process's pid namespace (0 if unknown): a grader pid in a cgroup's name means
    something only in the namespace it was taken in."""
    try:
        return int(os.readlink("/proc/self/ns/pid").partition("[")[2].rstrip("]"))
    except (OSError, ValueError):
        return 0


def sweep_stale(parent: Path, version: int, min_age_seconds: float = STALE_SECONDS) -> list[Path]:
    """Remove the cgroups under ``parent`` (of cgroup ``version``) left by graders that are gone
    (their pid is not running and the cgroup is older than ``min_age_seconds``), killing first
    whatever is still inside: a grader killed by ``SIGKILL`` could not end its process trees."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            match = _NAME.match(entry.name)
            if match is None or int(match.group(1)) != _pid_namespace() or Path(f"/proc/{match.group(2)}").exists():
                continue  # another machine's or container's pids, or its grader is running
            with contextlib.suppress(OSError):
                if time.time() - entry.stat().st_mtime <= min_age_seconds:
                    continue
                stale = TreeCgroup(version, (entry,))
                if stale.pids():
                    log.warning("killing processes %s left in %s by a grader that is gone", sorted(stale.pids()), entry)
                stale.kill()
                stale._remove_dirs()
                if not entry.exists():
                    removed.append(entry)
    return removed


class CgroupGuard(Poller):
    """End the whole cgroup once the OOM killer has struck in it (checked every ``poll_seconds``)."""

    def __init__(self, cgroup: TreeCgroup, poll_seconds: float = 0.05):
        super().__init__(f"cgroup-guard-{cgroup.dirs[0].name}", poll_seconds)
        self.cgroup = cgroup

    def check(self) -> bool:
        if not self.cgroup.read_oom_kills():
            return False
        log.warning("the memory limit of %s ended a process: the whole tree is killed", self.cgroup.dirs[0])
        self.cgroup.kill()
        return True
