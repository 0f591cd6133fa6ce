"""Class-scale grading: the same class graded serially and in parallel ends up the same.

One small course (``a1``, three 1-point tests, from ``test_grading_infra``) and a class of
submissions that pass, fail, kill their kernel, cheat, paste test cells and delete cells, one with
an nbgrader ``timestamp.txt``.  It is graded twice by ``python -m grading.grade``, with
``--workers 1`` and ``--workers 2``; every field nbgrader's gradebook records (except ids) is read
back with ``nbgrader.api.Gradebook`` and compared, as are the result files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

from grading import grade, sandbox
from test_grading_infra import make_dummy_course, student_notebook, SUBMISSIONS, GOOD

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CLASS = ("good", "dies", "cheater", "chatty")
TIMESTAMP = "2026-11-30 12:34:56.000000 UTC"


def write_class(course: Path, dest: Path) -> Path:
    release = course / "release" / "a1" / "dummy.ipynb"
    for student in CLASS:
        folder = dest / student / "a1"
        folder.mkdir(parents=True)
        nbformat.write(student_notebook(release, SUBMISSIONS[student]), folder / "dummy.ipynb")
    (dest / "good" / "a1" / "timestamp.txt").write_text(TIMESTAMP)
    # a deleted answer and test cell
    nb = student_notebook(release, GOOD)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") not in ("answer", "test_add")]
    (dest / "gutted" / "a1").mkdir(parents=True)
    nbformat.write(nb, dest / "gutted" / "a1" / "dummy.ipynb")
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


def run_grade(course: Path, subs: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "grading.grade", "--course", str(course), "--assignment", "a1",
                           str(subs), "--out", str(out), "--feedback", *extra],
                          cwd=REPO, env=grade.nbgrader_env(), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def graded_twice(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not sandbox.bwrap_available():
        pytest.skip("bubblewrap is not usable here")
    base = tmp_path_factory.mktemp("batch")
    course = make_dummy_course(base / "course")
    subs = write_class(course, base / "class")
    runs = {}
    for workers in ("1", "2"):
        out = base / f"out-{workers}"
        proc = run_grade(course, subs, out, "--workers", workers)
        record = json.loads((out / "grading_logs" / "a1" / "batch.json").read_text())
        runs[workers] = {"proc": proc, "out": out, "record": record,
                         "fields": gradebook_fields(grade.gradebook_url(out / "gradebook.db"))}
    return runs


@pytest.mark.slow
def test_both_batches_grade_everyone(graded_twice: dict[str, Any]) -> None:
    for workers, run in graded_twice.items():
        assert run["proc"].returncode == 0, run["proc"].stdout + run["proc"].stderr
        assert sorted(run["fields"]) == sorted([*CLASS, "gutted"]), workers


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
    assert len([name for name in serial if name.startswith("feedback/")]) == len(CLASS) + 1
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
