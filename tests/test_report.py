"""The class report and Gradescope output, from results built here (no grading run)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from grading.report import GradedCell, gradescope_results, hidden_source_lines, scrub, write_gradescope, write_report
from grading.results import CellRecord, CellRun, GradebookRecord
from grading.run_one import Status, StudentResult

CELLS = [GradedCell("test_a", "nb", 2.0, "Part 1: lookups", hidden_source_lines(
             "assert f(1) == 1\n### BEGIN HIDDEN TESTS\nassert f(7) == 49, 'SECRET-MESSAGE'\n### END HIDDEN TESTS")),
         GradedCell("test_b", "nb", 1.0, "Part 2: positions")]


def graded(student: str, a: float, b: float, tampered: list[str] | None = None) -> StudentResult:
    record = GradebookRecord(student, None, {"nb": None}, [
        CellRecord("nb", "test_a", auto_score=a, is_grade=True), CellRecord("nb", "test_b", auto_score=b, is_grade=True)])
    return StudentResult(student, Status.GRADED, 3.0, a + b, 3.0, record=record, tampered=tampered or [],
                         cell_runs={"test_a": CellRun(0.5, "ok\nAssertionError: SECRET-MESSAGE\nf(7) == 49"),
                                    "test_b": CellRun(1.5, "fine")})


RESULTS = [graded("ann", 2, 1), graded("bob", 0, 1, ["deleted test_b"]), graded("cy", 2, 0),
           StudentResult("dan", Status.TIMEOUT, 150.0, note="killed after 150 s"),
           StudentResult("eve", Status.ERROR, 0.0, note="cannot extract eve.zip"),
           StudentResult("fay", Status.CRASHED, 2.0, attempts=2, note="nbgrader died of signal 9")]


def test_hidden_source_never_reaches_gradescope_output() -> None:
    assert CELLS[0].hidden_lines == ("assert f(7) == 49, 'SECRET-MESSAGE'",)
    assert scrub("ok\nAssertionError: SECRET-MESSAGE", CELLS[0].hidden_lines) == "ok"
    data = gradescope_results(RESULTS[0], CELLS)
    assert data["score"] == 3 and data["execution_time"] == 3.0
    assert [(t["name"], t["score"], t["max_score"], t["status"]) for t in data["tests"]] == [
        ("Part 1: lookups: test_a", 2.0, 2.0, "passed"), ("Part 2: positions: test_b", 1.0, 1.0, "passed")]
    assert "SECRET" not in json.dumps(data) and data["tests"][0]["output"] == "ok"


def test_gradescope_results_for_every_submission_even_ungraded(tmp_path: Path) -> None:
    write_gradescope(tmp_path, RESULTS, CELLS)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(r.student for r in RESULTS)
    timeout = json.loads((tmp_path / "dan" / "results.json").read_text())
    assert timeout["score"] == 0 and all(t["status"] == "failed" and "timeout" in t["output"] for t in timeout["tests"])
    bob = json.loads((tmp_path / "bob" / "results.json").read_text())
    assert bob["score"] == 1 and "deleted test_b" in bob["output"]


def test_report_names_every_cell_and_status_with_exact_pass_rates(tmp_path: Path) -> None:
    page = write_report(tmp_path, "a1", RESULTS, CELLS).read_text()
    for cell in CELLS:
        assert cell.grade_id in page and cell.part in page
    for student, status in (("ann", "graded"), ("bob", "graded (tampered)"), ("dan", "timeout"), ("eve", "error"),
                            ("fay", "crashed")):
        assert f"<td>{student}</td><td>{status}</td>" in page, student
    with open(tmp_path / "per_cell.csv") as fin:
        rows = {r["grade_id"]: r for r in csv.DictReader(fin)}
    assert (rows["test_a"]["graded"], rows["test_a"]["full_marks"], rows["test_a"]["pass_rate"]) == ("3", "2", "0.667")
    assert (rows["test_b"]["full_marks"], rows["test_b"]["median_kernel_seconds"]) == ("2", "1.500")
    for png in ("score_distribution.png", "pass_rate.png", "slowest_cells.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
