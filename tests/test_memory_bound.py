"""The memory bound per submission: a cgroup per process tree (kernel or sealed worker, children
included) with a memory and a process limit where the machine has one, else a watchdog that sums the
resident memory of the tree; either ends the tree past the bound.  The tests of a mechanism that this
machine cannot provide are skipped."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from grading import cgroup, grade, sandbox
from grading.cgroup import NAME_PREFIX, find_root
from grading.memory_bound import Mechanism, SubmissionLimits, TreeWatchdog, tree_rss
from grading.sealed import VerdictStatus, run_sealed
from support import alive, bwrap_usable
from support.courses import notebook_of, run_grade, small_course

MiB = 1024**2
MECHANISMS = [pytest.param("cgroup", marks=pytest.mark.skipif(
                  find_root() is None, reason="no usable cgroup here (cgroup v2 with memory and pids delegated, "
                  "or writable cgroup v1 memory and pids hierarchies)")),
              "watchdog"]
needs_cgroup = MECHANISMS[0].marks[0]


def our_cgroups() -> set[Path]:
    """The cgroups named like the grader's under the default parent (empty without one)."""
    root = find_root()
    return set() if root is None else {p for parent in root.parents for p in parent.glob(f"{NAME_PREFIX}*")}


FORK_AND_ALLOCATE = """\
import os
import time
import numpy as np

_children = []
for _ in range({children}):
    pid = os.fork()
    if pid == 0:
        block = np.ones({mib} * 2**20, dtype=np.uint8)   # resident: every page is written
        time.sleep(60)
        os._exit(0)
    _children.append(pid)
for pid in _children:
    os.waitpid(pid, 0)
"""


def test_tree_memory_counts_every_process_and_the_watchdog_ends_the_tree():
    """Does the watchdog sum the children's memory (each far under the bound alone) and kill the
    whole tree once the sum passes it?"""
    code = FORK_AND_ALLOCATE.format(children=4, mib=100)
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    watchdog = TreeWatchdog(proc.pid, 250 * MiB).start()
    try:
        proc.wait(timeout=60)
    finally:
        watchdog.stop()
        if proc.poll() is None:
            proc.kill()
    assert watchdog.exceeded and watchdog.peak > 250 * MiB, watchdog.peak
    assert proc.returncode == -9
    time.sleep(0.2)
    assert tree_rss(proc.pid) == 0


@pytest.mark.parametrize("how", MECHANISMS)
def test_sealed_worker_past_the_bound_fails_only_the_cells_that_need_its_code(tmp_path: Path, how: str):
    """Does a student cell that forks children past the bound get skipped in the sealed re-check
    (the worker is ended and restarted without it), with the reason in the verdict, while code in
    other cells still passes, under either mechanism?"""
    bound = SubmissionLimits(memory_bytes=300 * MiB, mechanism=how).in_force()
    assert bound.mechanism.is_cgroup == (how == "cgroup"), bound
    before = our_cgroups()
    nb = notebook_of(
        ("answer", "def f():\n    return 1"),
        ("answer", FORK_AND_ALLOCATE.format(children=6, mib=100) + "\ndef g():\n    return 2"),
        ("test", "assert f() == 1"),
        ("test", "assert g() == 2"),
    )
    verdicts = run_sealed(nb, student_names=["f", "g"], memory_bound=bound, workdir=str(tmp_path))
    assert verdicts["t1"].status is VerdictStatus.PASSED, verdicts["t1"]
    assert verdicts["t2"].status is VerdictStatus.FAILED and verdicts["t2"].ename == "NameError", verdicts["t2"]
    assert our_cgroups() <= before, f"cgroups left behind: {sorted(our_cgroups() - before)}"


FORK_BOMB = """\
import os, time
for _ in range(100_000):
    try:
        os.fork()            # parent and child both go on forking
    except OSError:
        time.sleep(60)       # refused: hold the slot
"""


@needs_cgroup
def test_the_process_limit_stops_a_fork_bomb_in_the_sandbox(tmp_path: Path):
    """Does the cgroup's process limit (32, far below the sandbox's RLIMIT_NPROC of 512) refuse the
    forks of a fork bomb in the real sandbox, and does teardown end every process and remove the
    cgroup?"""
    limit = 32
    tree = SubmissionLimits(memory_bytes=512 * MiB, pids=limit, mechanism="cgroup").in_force().tree()
    prefix = sandbox.sandbox_prefix(tmp_path) if bwrap_usable() else []
    proc = subprocess.Popen([*tree.prefix(), *prefix, sys.executable, "-c", FORK_BOMB], start_new_session=True)
    tree.started(proc.pid)
    assert tree.cgroup is not None
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while tree.cgroup.read_pids_refused() == 0 and time.monotonic() < deadline:
            seen |= tree.cgroup.pids()
            time.sleep(0.05)
        seen |= tree.cgroup.pids()
        assert tree.cgroup.read_pids_refused() > 0, "the fork bomb was never refused a fork by the cgroup"
        assert len(seen) <= limit + 8, f"expected at most {limit} processes at once, saw {len(seen)} over the run"
    finally:
        tree.close()
        proc.wait(timeout=10)
    assert not any(d.exists() for d in tree.cgroup.dirs), tree.cgroup.dirs
    assert not alive(seen), f"still running after teardown: {sorted(alive(seen))}"


ESCAPING_TREE = """\
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
for _ in range(3):
    if os.fork() == 0:
        time.sleep(120)
        os._exit(0)
if os.fork() == 0:           # a daemon: a new session, re-parented away from the tree
    os.setsid()
    if os.fork() == 0:
        time.sleep(120)
    os._exit(0)
print(os.getpid(), flush=True)
time.sleep(120)
"""


@needs_cgroup
def test_teardown_leaves_no_cgroup_and_no_process(tmp_path: Path):
    """Does closing a tree's bound kill every process in its cgroup (a daemon that left the process
    group and the tree, and processes that ignore SIGTERM, included) and remove the cgroup?"""
    tree = SubmissionLimits(mechanism="cgroup").in_force().tree()
    proc = subprocess.Popen([*tree.prefix(), sys.executable, "-c", ESCAPING_TREE], stdout=subprocess.PIPE, text=True)
    tree.started(proc.pid)
    assert tree.cgroup is not None
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == str(proc.pid)
        deadline = time.monotonic() + 30
        while True:
            inside = tree.cgroup.pids()
            escaped = inside - {proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))}
            if (len(inside) >= 5 and escaped) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(inside) >= 5, f"expected the root, 3 children and the daemon in the cgroup, got {sorted(inside)}"
        assert escaped, "the daemon did not leave the tree (the test proves nothing)"
    finally:
        tree.close()
        proc.wait(timeout=10)
    assert not any(d.exists() for d in tree.cgroup.dirs), f"cgroup left behind: {tree.cgroup.dirs}"
    assert not alive(inside), f"still running after teardown: {sorted(alive(inside))}"


@needs_cgroup
def test_a_cgroup_left_by_a_grader_that_is_gone_is_swept_with_its_processes():
    """Does the next grader kill the processes in a cgroup left by a grader that died (SIGKILL:
    no teardown) and remove the cgroup, while it leaves alone the cgroup of a running grader and
    one named in another pid namespace (whose pids mean nothing here)?"""
    root = find_root()
    assert root is not None
    gone = subprocess.Popen(["true"])
    gone.wait()
    namespace = cgroup._pid_namespace()
    names = {"gone": f"{NAME_PREFIX}{namespace}-{gone.pid}-0a0a0a0a0a0a",
             "running": f"{NAME_PREFIX}{namespace}-{os.getpid()}-0b0b0b0b0b0b",
             "elsewhere": f"{NAME_PREFIX}{namespace + 1}-{gone.pid}-0c0c0c0c0c0c"}
    groups = {key: cgroup.TreeCgroup(root.version, tuple(parent / name for parent in root.parents))
              for key, name in names.items()}
    sleepers: dict[str, subprocess.Popen] = {}
    try:
        for key, group in groups.items():
            for path in group.dirs:
                path.mkdir()
            sleepers[key] = subprocess.Popen([*group.join_prefix(), "sleep", "600"])
        deadline = time.monotonic() + 10
        while not all(group.pids() for group in groups.values()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert all(group.pids() for group in groups.values()), "a sleeper did not join its cgroup"
        for parent in root.parents:
            cgroup.sweep_stale(parent, root.version, min_age_seconds=0)
        assert sleepers["gone"].wait(timeout=10) == -signal.SIGKILL
        assert not any(path.exists() for path in groups["gone"].dirs), "the stale cgroup was left"
        for key in ("running", "elsewhere"):
            assert sleepers[key].poll() is None and all(path.is_dir() for path in groups[key].dirs), key
    finally:
        for group in groups.values():
            group.remove()
        for sleeper in sleepers.values():
            sleeper.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.needs_bwrap
@pytest.mark.parametrize("how", MECHANISMS)
def test_twenty_children_past_the_bound_cost_only_their_own_submission(tmp_path: Path, how: str):
    """With a 1 GiB bound per submission, does a submission that forks 20 children of 300 MiB each
    lose only its own point, while the next student is graded with full marks, the grading output and
    batch.json say which mechanism bounded the memory, and no cgroup is left behind?"""
    course = small_course(tmp_path / "course")
    with open(course / "nbgrader_config.py", "a", encoding="utf-8") as f:
        f.write(f"\nc.SubmissionLimits.memory_bytes = 1024**3\nc.SubmissionLimits.mechanism = {how!r}\n")
    bound = SubmissionLimits(memory_bytes=1024**3, mechanism=how).in_force()
    before = our_cgroups()
    release = nbformat.read(course / "release" / "a1" / "nb.ipynb", as_version=4)
    subs = tmp_path / "subs"
    answers = {"forker": FORK_AND_ALLOCATE.format(children=20, mib=300) + "\ndef add(a, b):\n    return a + b",
               "next": "def add(a, b):\n    return a + b"}
    for student, answer in answers.items():
        nb = nbformat.from_dict(release)
        nb.cells[1].source = answer
        (subs / student / "a1").mkdir(parents=True)
        nbformat.write(nb, subs / student / "a1" / "nb.ipynb")
    out = tmp_path / "out"
    start = time.monotonic()
    result = run_grade(course, subs, out)
    seconds = time.monotonic() - start
    for student in answers:
        assert re.search(rf"^{student}\s+graded\s", result.stdout, flags=re.M), result.stdout + result.stderr
    from nbgrader.api import Gradebook

    with Gradebook(grade.gradebook_url(out / "gradebook.db")) as gb:
        scores = {s: gb.find_submission("a1", s).score for s in answers}
    assert scores == {"forker": 0.0, "next": 1.0}, result.stdout
    graded = nbformat.read(out / "autograded" / "forker" / "a1" / "nb.ipynb", as_version=4)
    died = [o for o in graded.cells[1].outputs if o.get("output_type") == "error"]
    assert died and died[0].ename == "DeadKernelError", graded.cells[1].outputs  # ended, not timed out
    assert "the bound per submission" in died[0].evalue, died[0].evalue  # the reason, not just "died"
    logs = "".join(p.read_text(errors="replace") for p in out.rglob("*.log"))
    assert f"Kernel: {bound.describe()}" in logs, logs[-3000:]
    assert f"memory bound:         {bound.describe()}" in result.stdout, result.stdout[-3000:]
    record = json.loads((out / "grading_logs" / "a1" / "batch.json").read_text())["memory_bound"]
    assert bound.mechanism.is_cgroup == (how == "cgroup"), bound
    assert Mechanism(record["mechanism"]) is bound.mechanism and record["memory_bytes"] == 1024**3, record
    assert our_cgroups() <= before, f"cgroups left behind: {sorted(our_cgroups() - before)}"
    assert seconds < 600, f"grading took {seconds:.0f} s"
