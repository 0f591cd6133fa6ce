"""Release: the committed student notebook is exactly what nbgrader generates, leaks nothing, and runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import ASSIGNMENT, NOTEBOOK, RELEASE_NB, REPO, SOURCE_NB, venv_env
from support.submissions import grade_id, read

UPDATE_HINT = "regenerate with `nbgrader generate_assignment 12_embeddings --force` and commit release/"


def regions(source: str, begin: str, end: str) -> list[str]:
    return re.findall(re.escape(begin) + r"\n(.*?)\n[ \t]*" + re.escape(end), source, flags=re.S)


def substantive_lines(text: str) -> set[str]:
    """Lines long enough that finding one elsewhere is not a coincidence."""
    return {line.strip() for line in text.splitlines() if len(line.strip()) >= 25}


def public_lines() -> set[str]:
    """Lines of the source that students may see: everything outside solution and hidden regions."""
    text = "\n".join(c.source for c in read(SOURCE_NB).cells)
    for begin, end in [("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")]:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), "", text, flags=re.S)
    return {line.strip() for line in text.splitlines()}


def leaked_lines(region: str, release: str) -> list[str]:
    """Lines of a private region that appear in the release and nowhere public in the source."""
    public = public_lines()
    return sorted(line for line in substantive_lines(region) - public if json.dumps(line)[1:-1] in release)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """Run the real `nbgrader generate_assignment` in a scratch copy of the course."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(REPO / "nbgrader_config.py", course)
    shutil.copytree(REPO / "source", course / "source")
    env = venv_env()
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT, "--force",
                    f"--CourseDirectory.root={course}"], cwd=course, env=env, check=True, capture_output=True)
    return course / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"


@pytest.mark.slow
def test_committed_release_equals_generated_release(generated):
    """Is release/ byte-for-byte what nbgrader generates from source/ (so it can never drift)?"""
    assert generated.read_text() == RELEASE_NB.read_text(), f"release/ is out of date: {UPDATE_HINT}"


def test_release_contains_no_solution_text():
    """Does no line of any reference solution reach the students?"""
    release = RELEASE_NB.read_text()
    for cell in read(SOURCE_NB).cells:
        for region in regions(cell.source, "### BEGIN SOLUTION", "### END SOLUTION"):
            leaked = leaked_lines(region, release)
            assert not leaked, f"solution text of {grade_id(cell)} leaked into the release: {leaked[:3]}"
    assert "BEGIN SOLUTION" not in release


def test_release_contains_no_hidden_tests():
    """Does no hidden-test line reach the students?"""
    release = RELEASE_NB.read_text()
    assert "HIDDEN TESTS" not in release and "_hidden_" not in release
    for cell in read(SOURCE_NB).cells:
        for region in regions(cell.source, "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"):
            leaked = leaked_lines(region, release)
            assert not leaked, f"hidden tests of {grade_id(cell)} leaked into the release: {leaked[:3]}"


def test_every_stub_raises_not_implemented():
    """Does every answer method or function in the release raise NotImplementedError?"""
    source = {grade_id(c): c for c in read(SOURCE_NB).cells if grade_id(c)}
    for cell in read(RELEASE_NB).cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution"):
            stubs = cell.source.count("raise NotImplementedError()")
            solutions = source[grade_id(cell)].source.count("### BEGIN SOLUTION")
            assert stubs == solutions > 0, f"{grade_id(cell)}: {solutions} solution regions but {stubs} stubs"


@pytest.mark.slow
def test_release_runs_top_to_bottom_failing_only_where_students_work(tmp_path):
    """Does the release execute in a real kernel with NotImplementedError as the only failure?"""
    from nbclient import NotebookClient

    nb = read(RELEASE_NB)
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    failures = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                failures[grade_id(cell) or cell.id] = out.ename
    others = {k: v for k, v in failures.items() if v != "NotImplementedError"}
    assert not others, f"the release fails with something other than NotImplementedError: {others}"
    answers = [grade_id(c) for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"]
    assert not set(answers) & set(failures), "stub cells must define cleanly (their bodies raise only when called)"
    assert failures, "a blank release should fail its visible tests"
