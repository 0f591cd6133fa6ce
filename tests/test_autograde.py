"""End-to-end grading of realistic students with ``python -m grading.grade`` (one batch, with
feedback and a CSV export), checked cell by cell against the gradebook."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from fixtures.students import (BLANK, CORRECT_DIFFERENTLY, MAX_SCORE, PARTIAL, POINTS, REFERENCE, REFLECTIONS,
                               STUDENTS, TOTAL_POINTS, TYPICAL_BUGS, Student)
from support import ASSIGNMENT, NOTEBOOK
from support.pipeline import GradeRun, grade, hidden_test_lines, repo_state, visible_text

pytestmark = pytest.mark.slow

STUDENT_IDS = [s.name for s in STUDENTS]


@pytest.fixture(scope="module")
def repo_before() -> dict[str, object]:
    return repo_state()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, repo_before: dict[str, object]) -> GradeRun:
    submissions = {s.name: s.notebook() for s in STUDENTS}
    return grade(tmp_path_factory.mktemp("autograde"), submissions, feedback=True, export=True)


def feedback_html(run: GradeRun, student: str) -> Path:
    return run.out / "feedback" / student / ASSIGNMENT / f"{NOTEBOOK}.html"


def differences(got: dict[str, float], want: dict[str, float]) -> dict[str, tuple[float | None, float | None]]:
    return {gid: (got.get(gid), want.get(gid)) for gid in sorted(set(got) | set(want)) if got.get(gid) != want.get(gid)}


# ------------------------------------------------------------------------------------ the run


def test_every_submission_is_graded(run: GradeRun):
    """Does one grading call grade every student and exit with status 0?"""
    assert run.returncode == 0, run.stdout
    assert sorted(run.scores) == sorted(STUDENT_IDS), run.stdout


def test_table_lists_every_student_as_graded(run: GradeRun):
    """Does the printed score table show each student as graded with the expected score?"""
    for student in STUDENTS:
        row = re.search(rf"^{re.escape(student.name)}\s+(\S+)\s+(\S+)", run.stdout, re.MULTILINE)
        assert row is not None, f"{student.name} missing from the table:\n{run.stdout}"
        assert row.groups() == ("graded", f"{student.total:g}/{MAX_SCORE:g}"), row.group(0)


# --------------------------------------------------------------------------------- the scores


@pytest.mark.parametrize("student", STUDENTS, ids=STUDENT_IDS)
def test_cell_scores_are_exact(run: GradeRun, student: Student):
    """Does every graded cell of every student get exactly the expected score?"""
    diff = differences(run.scores.get(student.name, {}), dict(student.scores))
    assert not diff, f"{student.name}: cell -> (got, expected): {diff}"


@pytest.mark.parametrize("student", STUDENTS, ids=STUDENT_IDS)
def test_totals_are_exact(run: GradeRun, student: Student):
    """Is each student's total the sum of the expected cell scores?"""
    assert run.totals[student.name] == student.total


def test_blank_submission_scores_zero(run: GradeRun):
    """Does a blank submission (the release unchanged) score zero in every cell?"""
    assert run.totals[BLANK.name] == 0.0
    assert set(run.scores[BLANK.name].values()) == {0.0}
    assert set(run.scores[BLANK.name]) == set(POINTS) | set(REFLECTIONS)


def test_reference_solution_scores_full_marks(run: GradeRun):
    """Does the reference solution get every autograded point (100), reflections left at 0?"""
    assert run.totals[REFERENCE.name] == TOTAL_POINTS
    assert all(run.scores[REFERENCE.name][gid] == pts for gid, pts in POINTS.items())


def test_correct_but_different_solution_scores_full_marks(run: GradeRun):
    """Does a correct solution written unlike the reference (fancy indexing, np.add.at, loops over
    columns and rows, numpy integers) also get all 100 points?"""
    assert run.totals[CORRECT_DIFFERENTLY.name] == TOTAL_POINTS


def test_written_reflections_are_left_for_the_instructor(run: GradeRun):
    """Are answered reflection cells left without an automatic score, and unanswered ones scored 0?"""
    assert not set(REFLECTIONS) & set(run.scores[CORRECT_DIFFERENTLY.name])
    assert all(run.scores[REFERENCE.name][gid] == 0.0 for gid in REFLECTIONS)


def test_partial_submission_scores_parts_1_and_4_only(run: GradeRun):
    """Does a student who did Parts 1 and 4 only get exactly their 23 + 8 points?"""
    scores = run.scores[PARTIAL.name]
    assert run.totals[PARTIAL.name] == 31.0
    assert {gid for gid, score in scores.items() if score > 0} == {
        "test_embedding_init", "test_embedding_init_errors", "test_embedding_forward", "test_embedding_forward_errors",
        "test_embedding_forward_vectorised", "test_embedding_backward", "test_embedding_backward_accumulates",
        "test_embedding_backward_padding", "test_embedding_api", "test_embedding_backward_errors",
        "test_embedding_backward_vectorised",
        "test_embedding_memory", "test_training_memory", "test_training_memory_errors", "test_param_counts",
    }


def test_typical_bugs_lose_exactly_the_cells_they_break(run: GradeRun):
    """Do four classic mistakes (fancy += backward, no batch sum, Adam as 3 copies, truncation)
    cost exactly the cells that exercise them, and nothing else?"""
    scores = run.scores[TYPICAL_BUGS.name]
    assert run.totals[TYPICAL_BUGS.name] == 78.0
    assert sorted(gid for gid in POINTS if scores[gid] == 0.0) == sorted([
        "test_embedding_backward", "test_embedding_backward_vectorised",
        "test_learned_pe_backward",
        "test_layer_backward", "test_training_memory", "test_quantize", "test_dequantize",
    ])


# ------------------------------------------------------------------------------------ feedback


@pytest.mark.parametrize("student", STUDENTS, ids=STUDENT_IDS)
def test_feedback_shows_the_score(run: GradeRun, student: Student):
    """Is there a feedback page for each student, showing the total score out of 106?"""
    page = feedback_html(run, student.name)
    assert page.is_file(), f"no feedback at {page}"
    assert f"Score: {student.total:.1f} / {MAX_SCORE:.1f}" in visible_text(page)


@pytest.mark.parametrize("student", STUDENTS, ids=STUDENT_IDS)
def test_feedback_never_shows_hidden_tests(run: GradeRun, student: Student):
    """Does the feedback leave out the hidden tests: no markers, no `_hidden_` helpers, none of
    their code lines?"""
    raw = feedback_html(run, student.name).read_text(encoding="utf-8")
    text = visible_text(feedback_html(run, student.name))
    assert "BEGIN HIDDEN TESTS" not in raw and "END HIDDEN TESTS" not in raw
    assert "_hidden_" not in raw
    own_code = {line.strip() for cell in student.notebook().cells for line in cell.source.splitlines()}
    leaked = sorted(line for line in hidden_test_lines() - own_code if line in text)
    assert not leaked, f"hidden test code in {student.name}'s feedback: {leaked[:5]}"


def test_feedback_explains_a_failed_hidden_test(run: GradeRun):
    """Does the feedback of a buggy submission show the hidden test's message (not its code)?"""
    text = visible_text(feedback_html(run, TYPICAL_BUGS.name))
    assert "q differs from round(w / scale)" in text
    assert "training_memory_bytes(50257, 768, float32, 'adam') is wrong" in text


# -------------------------------------------------------------------------------------- export


def test_export_has_one_row_per_student_with_the_scores(run: GradeRun):
    """Does the exported CSV hold one row per student with the expected score out of 106?"""
    with open(run.out / "grades.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["student_id"] for row in rows) == sorted(STUDENT_IDS)
    for row in rows:
        student = next(s for s in STUDENTS if s.name == row["student_id"])
        assert row["assignment"] == ASSIGNMENT
        assert (float(row["score"]), float(row["max_score"])) == (student.total, MAX_SCORE), row


# ---------------------------------------------------------------------------------- repository


def test_repository_is_untouched(run: GradeRun, repo_before: dict[str, object]):
    """Does grading leave the repository as it was: tracked files unchanged, no gradebook, feedback,
    autograded work or logs written into it?"""
    after = repo_state()
    assert after["git status"] == repo_before["git status"]
    assert after["files"] == repo_before["files"]


def test_results_are_written_to_out(run: GradeRun):
    """Are the autograded notebooks, the gradebook and the logs all under --out?"""
    for student in STUDENT_IDS:
        assert (run.out / "autograded" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb").is_file()
        assert (run.out / "grading_logs" / ASSIGNMENT / f"{student}.log").is_file()
    assert (run.out / "gradebook.db").is_file()
