"""Mutation testing of the hidden tests: every single-bug variant of the reference solution must
lose points, in exactly the test cells named for it. All mutants and the reference are graded in
one batch with ``python -m grading.grade``."""

from __future__ import annotations

import pytest

from fixtures.mutants import MUTANTS, Mutant
from fixtures.students import POINTS, REFERENCE, TOTAL_POINTS
from support.pipeline import GradeRun, grade

pytestmark = pytest.mark.slow

# Mutants the hidden tests do not catch yet: name -> what is missing. Each is an expected failure
# (strict: once the test is strengthened, the entry must be removed).
KNOWN_SURVIVORS: dict[str, str] = {}


def mutant_params() -> list:
    return [
        pytest.param(m, id=m.name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_SURVIVORS[m.name]))
        if m.name in KNOWN_SURVIVORS else pytest.param(m, id=m.name)
        for m in MUTANTS
    ]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> GradeRun:
    submissions = {m.name: m.submission().notebook() for m in MUTANTS}
    submissions[REFERENCE.name] = REFERENCE.notebook()
    return grade(tmp_path_factory.mktemp("mutants"), submissions)


def lost_cells(run: GradeRun, student: str) -> list[str]:
    """Test cells in which ``student`` did not get full points."""
    scores = run.scores[student]
    return sorted(gid for gid, pts in POINTS.items() if scores.get(gid) != pts)


def test_batch_grades_every_mutant(run: GradeRun):
    """Does one grading call grade the reference and every mutant (exit status 0)?"""
    assert run.returncode == 0, run.stdout
    assert sorted(run.scores) == sorted([REFERENCE.name, *(m.name for m in MUTANTS)]), run.stdout


def test_reference_keeps_full_marks(run: GradeRun):
    """Does the unmutated reference, graded in the same batch, keep all 100 points?"""
    assert run.totals[REFERENCE.name] == TOTAL_POINTS, lost_cells(run, REFERENCE.name)


def test_each_mutant_changes_one_answer_cell(reference_answers: dict[str, str]):
    """Does the catalogue hold at least 25 mutants, each differing from the reference in exactly one
    answer cell?"""
    assert len(MUTANTS) >= 25
    for mutant in MUTANTS:
        answers = mutant.submission().answers
        assert list(answers) == [mutant.grade_id]
        assert answers[mutant.grade_id] != reference_answers[mutant.grade_id], mutant.name


@pytest.mark.parametrize("mutant", mutant_params())
def test_mutant_is_killed(run: GradeRun, mutant: Mutant):
    """Does the mutant lose points, with a zero in every test cell named for it?"""
    assert mutant.name in run.scores, f"{mutant.name} was not graded:\n{run.stdout}"
    scores = run.scores[mutant.name]
    survived = [gid for gid in mutant.kills if scores.get(gid) != 0.0]
    assert run.totals[mutant.name] < TOTAL_POINTS and not survived, (
        f"mutant {mutant.name!r} survived ({mutant.bug}): total {run.totals[mutant.name]:g}/100; "
        f"these cells should catch it but kept their points: {survived}")


@pytest.mark.parametrize("mutant", mutant_params())
def test_mutant_costs_only_its_cells(run: GradeRun, mutant: Mutant):
    """Does the mutant keep full points in every cell not named for it (no collateral damage)?"""
    lost = lost_cells(run, mutant.name)
    assert lost == sorted(mutant.kills), (
        f"mutant {mutant.name!r} ({mutant.bug}) lost points in {lost}, expected exactly {sorted(mutant.kills)}")
