"""Class-scale grading: the same class graded serially and in parallel ends up the same.

One small course (``a1``, three 1-point tests, from ``support.courses``) and a class of
submissions that pass, fail, kill their kernel, cheat, paste test cells and delete cells, one with
an nbgrader ``timestamp.txt``.  It is graded twice by ``python -m grading.grade``, with
``--workers 1`` and ``--workers 2``; every field nbgrader's gradebook records (except ids) is read
back with ``nbgrader.api.Gradebook`` and compared, as are the result files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nbformat
import pytest

from grading import grade, scratch, warm
from grading.batch import grade_all
from grading.memory_bound import DEFAULT_SUBMISSION_MEMORY_BYTES, SubmissionLimits
from grading.run_one import Job, Status, StudentResult
from support import PYTHON, REPO, bwrap_usable, pgserver
from support.courses import nbgrader_meta, run_grade, small_course, write_course, write_dummy_class

CLASS = ("good", "dies", "cheater", "chatty")
TIMESTAMP = "2026-11-30 12:34:56.000000 UTC"


def write_class(course: Path, dest: Path) -> Path:
    """The class, a deleted answer and test cell ("gutted") included; "good" has an nbgrader timestamp."""
    write_dummy_class(course, dest, [*CLASS, "gutted"])
    (dest / "good" / "a1" / "timestamp.txt").write_text(TIMESTAMP)
    return dest


def gradebook_fields(url: str, course_id: str = "ml-systems") -> dict[str, Any]:
    """Every timestamp-independent field of every submission of ``a1`` (ids left out)."""
    from nbgrader.api import Gradebook

    fields: dict[str, Any] = {}
    with Gradebook(url, course_id) as gb:
        for sub in gb.find_assignment("a1").submissions:
            notebooks = {}
            for nb in sub.notebooks:
                notebooks[nb.name] = {
                    "flagged": nb.flagged, "late_submission_penalty": nb.late_submission_penalty,
                    "grades": {g.name: (g.auto_score, g.manual_score, g.extra_credit, g.needs_manual_grade,
                                        g.max_score) for g in nb.grades},
                    "comments": {c.name: (c.auto_comment, c.manual_comment) for c in nb.comments},
                }
            fields[sub.student.id] = {
                "timestamp": sub.timestamp, "extension": sub.extension, "score": sub.score,
                "max_score": sub.max_score, "code_score": sub.code_score, "needs_manual_grade": sub.needs_manual_grade,
                "notebooks": notebooks,
            }
    return fields


def result_files(out: Path) -> dict[str, Any]:
    """Names of the result files, and the graded cells' sources and output kinds."""
    found: dict[str, Any] = {}
    for kind in ("autograded", "feedback"):
        for path in sorted((out / kind).rglob("*")):
            if not path.is_file():
                continue
            rel = str(path.relative_to(out))
            if path.suffix == ".ipynb":
                nb = nbformat.read(path, as_version=4)
                found[rel] = [(c.cell_type, c.source, [o.get("output_type") for o in c.get("outputs", [])])
                              for c in nb.cells]
            else:
                found[rel] = "feedback page" if b"<html" in path.read_bytes()[:2000].lower() else "?"
    return found


@pytest.fixture(scope="module")
def graded_twice(tmp_path_factory: pytest.TempPathFactory, dummy_course: Path) -> dict[str, Any]:
    """The class graded with --workers 1 and with --workers 2, both batches at the same time (the
    serial one leaves a core idle), each in its own copy of the course (grading regenerates the
    release in the course it is given)."""
    if not bwrap_usable():
        pytest.skip("bubblewrap is not usable here")
    base = tmp_path_factory.mktemp("batch")
    subs = write_class(dummy_course, base / "class")
    runs: dict[str, Any] = {"course": dummy_course, "subs": subs, "base": base}

    def run(workers: str) -> dict[str, Any]:
        course = shutil.copytree(dummy_course, base / f"course-{workers}")
        out = base / f"out-{workers}"
        extra = ["--report", str(base / "report"), "--gradescope", str(base / "gradescope")] if workers == "2" else []
        proc = run_grade(course, subs, out, "--feedback", "--workers", workers, *extra)
        record = json.loads((out / "grading_logs" / "a1" / "batch.json").read_text())
        return {"proc": proc, "out": out, "record": record,
                "fields": gradebook_fields(grade.gradebook_url(out / "gradebook.db"))}

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {workers: pool.submit(run, workers) for workers in ("1", "2")}
        runs.update({workers: future.result() for workers, future in futures.items()})
    return runs


@pytest.mark.slow
def test_both_batches_grade_everyone(graded_twice: dict[str, Any]) -> None:
    for workers in ("1", "2"):
        run = graded_twice[workers]
        assert run["proc"].returncode == 0, run["proc"].stdout + run["proc"].stderr
        assert sorted(run["fields"]) == sorted([*CLASS, "gutted"]), workers
        # the summary says which memory bound per submission was in force (the course sets none: the default)
        bound = SubmissionLimits().in_force()
        assert bound.memory_bytes == DEFAULT_SUBMISSION_MEMORY_BYTES, bound
        want = f"memory bound:         {bound.describe()}"
        assert want in run["proc"].stdout, f"expected {want!r} in the summary, got:\n{run['proc'].stdout[-2000:]}"
        assert run["record"]["memory_bound"] == bound.record(), run["record"]


@pytest.mark.slow
def test_parallel_gradebook_equals_serial(graded_twice: dict[str, Any]) -> None:
    serial, parallel = graded_twice["1"]["fields"], graded_twice["2"]["fields"]
    for student in serial:
        assert parallel[student] == serial[student], f"{student}: serial {serial[student]}, parallel {parallel[student]}"
    # the comparison has teeth: the class's scores differ, and the submitted timestamp was recorded
    totals = {s: f["score"] for s, f in serial.items()}
    assert len(set(totals.values())) >= 2, totals
    assert serial["good"]["timestamp"] is not None and serial["dies"]["timestamp"] is None
    points = {s: {name: g[0] for name, g in f["notebooks"]["dummy"]["grades"].items()} for s, f in serial.items()}
    assert points["cheater"]["test_add"] == 0 and points["good"]["test_add"] == 1, points


@pytest.mark.slow
def test_parallel_result_files_equal_serial(graded_twice: dict[str, Any]) -> None:
    serial, parallel = result_files(graded_twice["1"]["out"]), result_files(graded_twice["2"]["out"])
    assert sorted(parallel) == sorted(serial)
    assert len([name for name in serial if name.startswith("feedback/") and name.endswith(".html")]) == len(CLASS) + 1
    for name in serial:
        assert parallel[name] == serial[name], name


@pytest.mark.slow
def test_two_workers_graded_at_the_same_time(graded_twice: dict[str, Any]) -> None:
    """The parallel batch really overlapped submissions; the serial one never did."""
    def most_at_once(record: dict[str, Any]) -> int:
        spans = [(r["started"], r["started"] + r["seconds"]) for r in record["submissions"]]
        return max(sum(1 for a, b in spans if a <= start < b) for start, _ in spans)

    assert most_at_once(graded_twice["1"]["record"]) == 1
    assert most_at_once(graded_twice["2"]["record"]) == 2
    assert graded_twice["2"]["record"]["workers"] == 2


# --------------------------------------------------------------------------- retries and resuming


# --------------------------------------------------------------------------- the scratch-course template


def definition_fields(url: str, assignment: str, course_id: str = "ml-systems") -> dict[str, Any]:
    """Every field of an assignment's definition in a gradebook (ids left out), and what else it holds."""
    from nbgrader.api import Gradebook

    with Gradebook(url, course_id) as gb:
        found = gb.find_assignment(assignment)
        notebooks = {nb.name: {
            "kernelspec": nb.kernelspec,
            "grade": sorted((c.name, c.max_score, c.cell_type) for c in nb.grade_cells),
            "solution": sorted(c.name for c in nb.solution_cells),
            "task": sorted((c.name, c.max_score, c.cell_type) for c in nb.task_cells),
            "source": sorted((c.name, c.cell_type, c.locked, c.source, c.checksum) for c in nb.source_cells),
        } for nb in found.notebooks}
        return {"duedate": found.duedate, "course": found.course_id, "notebooks": notebooks,
                "assignments": [a.name for a in gb.assignments], "students": [s.id for s in gb.students],
                "submissions": len(found.submissions)}


def alembic_version(gradebook: Path) -> list[tuple[str]]:
    with sqlite3.connect(f"{gradebook.as_uri()}?mode=ro", uri=True) as db:
        return db.execute("SELECT version_num FROM alembic_version").fetchall()


@pytest.fixture(scope="module")
def defined_course(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A course whose assignment ``a1`` has every kind of cell nbgrader records, a due date, a data
    file, and a second assignment with a graded student (neither may reach a template)."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
    from nbgrader.api import Gradebook

    task = {"nbgrader": {"grade_id": "task_plan", "task": True, "grade": False, "solution": False, "locked": True,
                         "points": 2, "schema_version": 3}}
    nb = new_notebook(cells=[
        new_markdown_cell("# Definition", metadata=nbgrader_meta("intro", locked=True)),
        new_code_cell("def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION",
                      metadata=nbgrader_meta("answer", solution=True)),
        new_code_cell("assert add(1, 2) == 3", metadata=nbgrader_meta("test_add", grade=True, points=3)),
        new_markdown_cell("YOUR ANSWER HERE", metadata=nbgrader_meta("essay", grade=True, solution=True, points=4)),
        new_markdown_cell("Plan the work.", metadata=task),
    ])
    course = write_course(tmp_path_factory.mktemp("defined") / "course", nb, "nb", "", {"table.csv": "a,b\n1,2\n"})
    with Gradebook(grade.gradebook_url(course / "gradebook.db"), "ml-systems") as gb:
        gb.update_or_create_assignment("a1", duedate="2026-12-24 23:59:00 UTC")
        gb.add_assignment("a0")
        gb.add_student("zoe")
        gb.add_submission("a0", "zoe")
    return course


def test_the_template_holds_the_assignments_definition_and_nothing_else(defined_course: Path,
                                                                          tmp_path: Path) -> None:
    """Is the template's gradebook the course's definition of a1, field by field, with no other
    assignment or student, the course's alembic version, and beside it the data files and config only?"""
    url = grade.gradebook_url(defined_course / "gradebook.db")
    want = definition_fields(url, "a1")
    assert want["students"] == ["zoe"] and len(want["assignments"]) == 2  # the reference holds more
    want.update(assignments=["a1"], students=[], submissions=0)
    template = grade.build_template(defined_course, url, "ml-systems", "a1", tmp_path / "template")
    got = definition_fields(grade.gradebook_url(template / "gradebook.db"), "a1")
    assert got == want, f"expected {want}, got {got}"
    assert {c[0] for c in got["notebooks"]["nb"]["task"]} == {"task_plan"} and got["duedate"] is not None
    assert alembic_version(template / "gradebook.db") == alembic_version(defined_course / "gradebook.db")
    files = sorted(str(p.relative_to(template)) for p in template.rglob("*") if p.is_file())
    assert files == ["gradebook.db", "nbgrader_config.py", "source/a1/table.csv"], files


@pytest.mark.skipif(not warm.available(), reason="no fork server on this platform")
def test_the_definition_read_in_the_fork_server_is_the_one_read_here(defined_course: Path, tmp_path: Path) -> None:
    """Does ``read_definition`` give the same notebooks, stale cells, release checksums and template
    run in a fork of the fork server (as the grading command runs it) as run in this process?"""
    url = grade.gradebook_url(defined_course / "gradebook.db")
    args = (defined_course, url, "ml-systems", "a1")
    here = scratch.read_definition(*args, tmp_path / "here")
    there = warm.call(scratch.read_definition, *args, tmp_path / "there", timeout=300)
    assert here == there, f"expected {here}, got {there}"
    assert here is not None and here.notebooks == ["nb"] and set(here.released["nb"]) >= {"test_add", "intro"}
    assert definition_fields(grade.gradebook_url(tmp_path / "there" / "gradebook.db"), "a1") == \
        definition_fields(grade.gradebook_url(tmp_path / "here" / "gradebook.db"), "a1")
    assert scratch.read_definition(defined_course, url, "ml-systems", "a9", tmp_path / "none") is None
    assert not (tmp_path / "none").exists()


def result(student: str, status: str) -> StudentResult:
    return StudentResult(student, status, 1.0)


def job(student: str) -> Job:
    return Job(student=student, assignment="a1", notebooks=("nb",), files={}, template=b"", course_id="c")


def test_a_crashed_grading_is_retried_once_then_reported() -> None:
    """grade_all's own logic: crashed twice is reported, crashed once then graded is graded."""
    outcomes = {"once": [Status.CRASHED, Status.GRADED], "twice": [Status.CRASHED, Status.CRASHED],
                "fine": [Status.GRADED], "raises": [RuntimeError("worker lost"), Status.GRADED]}
    calls: list[str] = []

    def submit(j: Job) -> Future:
        calls.append(j.student)
        future: Future = Future()
        outcome = outcomes[j.student].pop(0)
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(result(j.student, outcome))
        return future

    accepted: dict[str, StudentResult] = {}
    items = [job("once"), job("twice"), job("fine"), result("unstageable", Status.ERROR), job("raises")]
    grade_all(iter(items), submit, 2, lambda r: accepted.__setitem__(r.student, r))
    assert sorted(calls) == sorted(["once", "once", "twice", "twice", "fine", "raises", "raises"])
    assert {s: (str(r.status), r.attempts) for s, r in accepted.items()} == {
        "once": ("graded", 2), "twice": ("crashed", 2), "fine": ("graded", 1), "unstageable": ("error", 1),
        "raises": ("graded", 2)}
    assert "first attempt crashed" in accepted["once"].note and "worker lost" in accepted["raises"].note


def ledger_rows(path: Path) -> list[tuple[str, int, str]]:
    if not path.is_file():
        return []
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30) as db:
        return db.execute("SELECT student, merged, result FROM graded ORDER BY student").fetchall()


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


# An answer that sleeps in the kernel or in the sealed worker only (the worker names itself in argv).
SLEEPS_IN = """\
import sys, time
if (sys.argv == ["sealed-worker"]) == {sealed}:
    time.sleep(600)

def add(a, b):
    return a + b
"""


@pytest.mark.slow
@pytest.mark.needs_bwrap
@pytest.mark.parametrize("where", ["kernel", "sealed worker"])
def test_a_killed_grading_command_leaves_no_student_process(tmp_path: Path, where: str) -> None:
    """Does SIGKILL of the whole grading command, while a student's code runs in the sandboxed
    kernel or sealed worker, end every process it started, the sandboxes included?"""
    import psutil

    course = small_course(tmp_path / "course")
    nb = nbformat.read(course / "release" / "a1" / "nb.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "answer":
            cell.source = SLEEPS_IN.format(sealed=where == "sealed worker")
    (tmp_path / "subs" / "sleeper" / "a1").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "subs" / "sleeper" / "a1" / "nb.ipynb")
    marker = "ipykernel_launcher" if where == "kernel" else "grading.sealed.worker"
    proc = subprocess.Popen([PYTHON, "-m", "grading.grade", "--course", str(course), "--assignment", "a1",
                             str(tmp_path / "subs"), "--out", str(tmp_path / "out"), "--workers", "1"],
                            cwd=REPO, env=grade.nbgrader_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)

    def started() -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return psutil.Process(proc.pid).children(recursive=True)
        return []

    def running(procs: list[psutil.Process]) -> list[psutil.Process]:
        with_state = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                if p.status() != psutil.STATUS_ZOMBIE:
                    with_state.append(p)
        return with_state

    def cmdlines(procs: list[psutil.Process]) -> list[str]:
        lines = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                lines.append(" ".join(p.cmdline()))
        return lines

    procs: list[psutil.Process] = []
    try:
        wait_for(lambda: any(marker in line for line in cmdlines(started())), 300, f"the student's {where}")
        time.sleep(1.0)
        procs = started()
        assert any("bwrap" in line for line in cmdlines(procs)), cmdlines(procs)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 10
        while running(procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = running(procs)
        assert not left, f"still running after the grading command was killed: {cmdlines(left)}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        for p in running(procs):  # what this test would otherwise leave behind
            p.kill()


@pytest.mark.slow
def test_a_killed_batch_resumes_with_nothing_lost_or_graded_twice(graded_twice: dict[str, Any]) -> None:
    """Kill one nbgrader process (retried), then the whole command mid-batch; re-run; compare with serial."""
    import psutil

    course, subs, base = graded_twice["course"], graded_twice["subs"], graded_twice["base"]
    out = base / "out-killed"
    ledger = out / "grading_ledger.sqlite"
    cmd = [PYTHON, "-m", "grading.grade", "--course", str(course), "--assignment", "a1", str(subs), "--out",
           str(out), "--feedback", "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=grade.nbgrader_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        def autograde_of(student: str) -> list[psutil.Process]:
            """The student's nbgrader process: started in its scratch course (a fork of the grading
            command's fork server, so its command line is the server's; kernels start deeper down)."""
            found = []
            for child in psutil.Process(proc.pid).children(recursive=True):
                try:
                    cwd = Path(child.cwd())
                except psutil.Error:
                    continue
                if cwd.name.startswith(f"nbgrader-sealed-{student}-"):
                    found.append(child)
            return found

        first = sorted(CLASS)[0]
        wait_for(lambda: autograde_of(first), 300, f"nbgrader autograde of {first}")
        time.sleep(1.0)
        for child in autograde_of(first):
            child.kill()  # the grading process dies mid-submission
        wait_for(lambda: sum(row[1] for row in ledger_rows(ledger)) >= 2, 600, "two merged results")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    before = {row[0]: json.loads(row[2]) for row in ledger_rows(ledger)}
    assert 2 <= len(before) < len(CLASS) + 1, sorted(before)
    assert before[first]["attempts"] == 2 and before[first]["status"] == "graded", before[first]
    again = subprocess.run(cmd, cwd=REPO, env=grade.nbgrader_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    record = {r["student"]: r for r in json.loads((out / "grading_logs" / "a1" / "batch.json").read_text())["submissions"]}
    merged_before = {s for s, r in before.items() if r["status"] == "graded"}
    for student in merged_before:
        assert "graded before" in record[student]["note"], record[student]  # not graded twice
    assert all("graded before" not in record[s]["note"] for s in set(record) - set(before))
    assert gradebook_fields(grade.gradebook_url(out / "gradebook.db")) == graded_twice["1"]["fields"]
    assert len(ledger_rows(ledger)) == len(CLASS) + 1


# --------------------------------------------------------------------------- Dask


@pytest.mark.slow
@pytest.mark.dask
def test_a_dask_cluster_grades_the_class_like_serial(graded_twice: dict[str, Any]) -> None:
    """A real two-process LocalCluster on 127.0.0.1, started and stopped here, through --scheduler."""
    distributed = pytest.importorskip("distributed")

    out = graded_twice["base"] / "out-dask"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, worker_dashboard_address=None,
                                  death_timeout=60) as cluster:
        proc = run_grade(graded_twice["course"], graded_twice["subs"], out, "--feedback", "--scheduler",
                         cluster.scheduler_address)
        worker_pids = {w.pid for w in cluster.workers.values() if hasattr(w, "pid")}
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert gradebook_fields(grade.gradebook_url(out / "gradebook.db")) == graded_twice["1"]["fields"]
    assert result_files(out) == result_files(graded_twice["1"]["out"])
    record = json.loads((out / "grading_logs" / "a1" / "batch.json").read_text())
    ran_on = {r["worker"] for r in record["submissions"]}
    assert len(ran_on) == 2, ran_on  # both cluster workers graded, none of it in the coordinator
    if worker_pids:
        assert {int(w.rsplit(":", 1)[1]) for w in ran_on} <= worker_pids


# --------------------------------------------------------------------------- PostgreSQL


def course_on_postgres(course: Path, dest: Path, url: str) -> Path:
    """A copy of ``course`` whose gradebook is the PostgreSQL database at ``url``."""
    shutil.copytree(course, dest, ignore=shutil.ignore_patterns("gradebook.db*", "grading_ledger*"))
    with open(dest / "nbgrader_config.py", "a") as config:
        config.write(f"\nc.CourseDirectory.db_url = {url!r}\n")
    return dest


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_gradebook_serial_and_parallel(graded_twice: dict[str, Any]) -> None:
    """CourseDirectory.db_url on a real PostgreSQL server started here: the same grades as SQLite."""
    pytest.importorskip("psycopg2")
    if pgserver.pg_bin() is None:
        pytest.skip("PostgreSQL server binaries are not installed (scripts/setup.sh installs them)")
    base = graded_twice["base"]

    def run(workers: str, url: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        course = course_on_postgres(graded_twice["course"], base / f"course-pg-{workers}", url)
        out = base / f"out-pg-{workers}"
        return run_grade(course, graded_twice["subs"], out, "--feedback", "--workers", workers), out

    with pgserver.postgres_server() as server:
        urls = {workers: server.create_database(f"gradebook_{workers}") for workers in ("1", "2")}
        with ThreadPoolExecutor(max_workers=2) as pool:  # both batches at the same time, as in graded_twice
            futures = {workers: pool.submit(run, workers, url) for workers, url in urls.items()}
            runs = {workers: future.result() for workers, future in futures.items()}
        for workers, (proc, out) in runs.items():
            url = urls[workers]
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert not (out / "gradebook.db").exists() and f"gradebook:            {url}" in proc.stdout
            assert gradebook_fields(url) == graded_twice["1"]["fields"], f"--workers {workers}"
            assert result_files(out) == result_files(graded_twice["1"]["out"])


# --------------------------------------------------------------------------- report and Gradescope


def grade_cells(url: str) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(url, "ml-systems") as gb:
        return {c.name: c.max_score for nb in gb.find_assignment("a1").notebooks for c in nb.grade_cells}


@pytest.mark.slow
def test_class_report_names_every_cell_and_status(graded_twice: dict[str, Any]) -> None:
    import csv

    folder = graded_twice["base"] / "report"
    page = (folder / "report.html").read_text()
    cells = grade_cells(grade.gradebook_url(graded_twice["2"]["out"] / "gradebook.db"))
    for gid in cells:
        assert gid in page, f"{gid} missing from the report"
    record = graded_twice["2"]["record"]["submissions"]
    fields = graded_twice["2"]["fields"]
    tampered = {row["student"]: row["tampered"] for row in record}
    assert tampered["gutted"] and not any(t for s, t in tampered.items() if s != "gutted"), tampered
    for row in record:
        status = "graded (tampered)" if row["student"] == "gutted" else row["status"]
        assert re.search(rf"<td>{row['student']}</td><td>{re.escape(status)}</td>", page), (row["student"], status)
    for png in ("score_distribution.png", "pass_rate.png", "slowest_cells.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    with open(folder / "per_cell.csv") as fin:
        rows = {r["grade_id"]: r for r in csv.DictReader(fin)}
    assert sorted(rows) == sorted(cells)
    for gid, max_score in cells.items():  # pass rates recomputed from the gradebook
        scores = [f["notebooks"]["dummy"]["grades"][gid][0] for f in fields.values()]
        full = sum(1 for s in scores if s is not None and s >= max_score)
        assert int(rows[gid]["full_marks"]) == full, (gid, rows[gid], scores)
        assert int(rows[gid]["graded"]) == len([s for s in scores if s is not None])


@pytest.mark.slow
def test_gradescope_results_match_the_gradebook(graded_twice: dict[str, Any]) -> None:
    folder = graded_twice["base"] / "gradescope"
    fields = graded_twice["2"]["fields"]
    cells = grade_cells(grade.gradebook_url(graded_twice["2"]["out"] / "gradebook.db"))
    assert sorted(p.name for p in folder.iterdir()) == sorted(fields)
    for student, f in fields.items():
        data = json.loads((folder / student / "results.json").read_text())
        assert data["score"] == pytest.approx(f["score"]), student
        assert data["execution_time"] > 0
        by_name = {t["name"].rsplit(": ", 1)[-1]: t for t in data["tests"]}
        assert sorted(by_name) == sorted(cells), student
        for gid, test in by_name.items():
            auto = f["notebooks"]["dummy"]["grades"][gid][0]
            assert test["score"] == pytest.approx(auto or 0.0) and test["max_score"] == cells[gid], (student, gid)
            assert test["status"] == ("passed" if auto is not None and auto >= cells[gid] else "failed")
            assert "HIDDEN-CHECK-MARKER" not in test["output"] and "add(20, 22)" not in test["output"], test
    dies = json.loads((folder / "dies" / "results.json").read_text())  # the kernel died: still a results.json
    assert [t["status"] for t in dies["tests"]].count("failed") >= 2
