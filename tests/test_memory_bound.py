"""The memory bound per submission: a watchdog sums the resident memory of a submission's process
tree (kernel or sealed worker, children included) and ends the tree past the bound."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from grading import grade
from grading.memory_bound import TreeWatchdog, mechanism, tree_rss
from grading.sealed import VerdictStatus, run_sealed
from support.courses import notebook_of, run_grade, small_course

MiB = 1024**2

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


def test_sealed_worker_past_the_bound_fails_only_the_cells_that_need_its_code(tmp_path: Path):
    """Does a student cell that forks children past the bound get skipped in the sealed re-check
    (the worker is ended and restarted without it), with the reason in the verdict, while code in
    other cells still passes?"""
    nb = notebook_of(
        ("answer", "def f():\n    return 1"),
        ("answer", FORK_AND_ALLOCATE.format(children=6, mib=100) + "\ndef g():\n    return 2"),
        ("test", "assert f() == 1"),
        ("test", "assert g() == 2"),
    )
    verdicts = run_sealed(nb, student_names=["f", "g"], memory_bound=300 * MiB, workdir=str(tmp_path))
    assert verdicts["t1"].status is VerdictStatus.PASSED, verdicts["t1"]
    assert verdicts["t2"].status is VerdictStatus.FAILED and verdicts["t2"].ename == "NameError", verdicts["t2"]
    assert "memory" in mechanism(300 * MiB) and "watchdog" in mechanism(300 * MiB)


@pytest.mark.slow
@pytest.mark.needs_bwrap
def test_twenty_children_past_the_bound_cost_only_their_own_submission(tmp_path: Path):
    """With a 1 GiB bound per submission, does a submission that forks 20 children of 300 MiB each
    lose only its own point, while the next student is graded with full marks and the grading log
    says which mechanism bounded the memory?"""
    course = small_course(tmp_path / "course")
    with open(course / "nbgrader_config.py", "a", encoding="utf-8") as f:
        f.write("\nc.SubmissionLimits.memory_bytes = 1024**3\n")
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
    logs = "".join(p.read_text(errors="replace") for p in out.rglob("*.log"))
    assert "enforced by a watchdog" in logs + result.stdout + result.stderr, (logs + result.stdout)[-3000:]
    assert seconds < 600, f"grading took {seconds:.0f} s"
