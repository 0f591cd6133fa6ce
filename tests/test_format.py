"""Notebook format: nbgrader metadata, delimiters, points, ids and committed outputs."""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from support import RELEASE_NB, SOURCE_NB
from support.submissions import grade_id, read

AUTOGRADED_POINTS = 100
MANUAL_POINTS = 6
NOTEBOOKS = [SOURCE_NB, RELEASE_NB]


def nbgrader_cells(path):
    return [c for c in read(path).cells if "nbgrader" in c.metadata]


def meta(cell):
    return cell.metadata["nbgrader"]


def test_notebooks_are_valid_nbformat_4():
    """Do both notebooks validate against the nbformat 4 schema?"""
    for path in NOTEBOOKS:
        nb = read(path)
        nbformat.validate(nb)
        assert nb.nbformat == 4 and nb.nbformat_minor >= 5, f"{path.name}: expected nbformat 4.5+ (cell ids)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=["source", "release"])
def test_every_nbgrader_cell_has_full_metadata(path):
    """Does every nbgrader cell carry schema_version 3, a grade_id, locked, and points when graded?"""
    for cell in nbgrader_cells(path):
        m = meta(cell)
        assert m.get("schema_version") == 3, f"{grade_id(cell)}: schema_version must be 3"
        for key in ("grade", "solution", "locked", "grade_id"):
            assert key in m, f"{grade_id(cell)}: missing nbgrader key {key!r}"
        if m["grade"]:
            assert isinstance(m.get("points"), (int, float)) and m["points"] > 0, f"{grade_id(cell)}: graded cells need positive points"


def test_grade_ids_are_unique_and_test_cells_locked():
    """Are grade_ids unique, and is every autograded test cell locked?"""
    cells = nbgrader_cells(SOURCE_NB)
    ids = [grade_id(c) for c in cells]
    assert len(ids) == len(set(ids)), f"duplicate grade_ids: {sorted({i for i in ids if ids.count(i) > 1})}"
    for cell in cells:
        m = meta(cell)
        if m["grade"] and not m["solution"]:
            assert m["locked"], f"test cell {grade_id(cell)} must be locked"
            assert cell.cell_type == "code", f"test cell {grade_id(cell)} must be code"
            assert grade_id(cell).startswith("test_"), f"test cell {grade_id(cell)} should be named test_*"


def test_points_add_up_to_the_advertised_total():
    """Do autograded points total 100 and manual points 6, as the notebook's table says?"""
    cells = nbgrader_cells(SOURCE_NB)
    auto = sum(meta(c)["points"] for c in cells if meta(c)["grade"] and not meta(c)["solution"])
    manual = sum(meta(c)["points"] for c in cells if meta(c)["grade"] and meta(c)["solution"])
    assert auto == AUTOGRADED_POINTS, f"autograded points add up to {auto}, expected {AUTOGRADED_POINTS}"
    assert manual == MANUAL_POINTS, f"manual points add up to {manual}, expected {MANUAL_POINTS}"
    intro = read(SOURCE_NB).cells[0].source
    parts = [int(p) for p in re.findall(r"^\| \d+ \| .* \| (\d+) \|$", intro, flags=re.M)]
    assert sum(parts) == AUTOGRADED_POINTS + MANUAL_POINTS, f"the overview table advertises {sum(parts)} points"


def test_part_headings_match_their_points():
    """Does each '## Part N: ... (k points)' heading match the points of the cells below it?"""
    nb = read(SOURCE_NB)
    heading, totals = None, {}
    for cell in nb.cells:
        found = re.match(r"## Part (\d+): .*\((\d+) points", cell.source) if cell.cell_type == "markdown" else None
        if found:
            heading = found.groups()
            totals[heading] = 0
        elif heading and "nbgrader" in cell.metadata and meta(cell)["grade"]:
            totals[heading] += meta(cell)["points"]
    assert len(totals) == 10, f"expected 10 parts, found {len(totals)}"
    for (part, advertised), total in totals.items():
        assert total == int(advertised), f"Part {part} advertises {advertised} points, its cells hold {total}"


def test_fixture_points_follow_the_notebook():
    """Does the test suite's table of cells and points (tests/fixtures/students.py) list every test
    cell of the notebook, in notebook order, with its points?"""
    from fixtures.students import POINTS

    cells = [(grade_id(c), meta(c)["points"]) for c in nbgrader_cells(SOURCE_NB) if meta(c)["grade"] and not meta(c)["solution"]]
    assert cells == [(gid, pts) for gid, pts in POINTS.items()]
    assert max(pts for _, pts in cells) <= 5, "no test cell is worth more than 5 points (partial credit)"


def test_solution_and_hidden_test_delimiters_match():
    """Are BEGIN/END SOLUTION pairs balanced in answer cells, and hidden tests only in test cells?"""
    for cell in read(SOURCE_NB).cells:
        src = cell.source
        begins, ends = src.count("### BEGIN SOLUTION"), src.count("### END SOLUTION")
        assert begins == ends, f"{grade_id(cell) or cell.id}: {begins} BEGIN SOLUTION vs {ends} END SOLUTION"
        order = re.findall(r"### (BEGIN|END) SOLUTION", src)
        assert order == ["BEGIN", "END"] * begins, f"{grade_id(cell)}: solution markers out of order"
        if begins:
            assert meta(cell)["solution"], f"{grade_id(cell)}: solution markers outside an answer cell"
        hb, he = src.count("### BEGIN HIDDEN TESTS"), src.count("### END HIDDEN TESTS")
        assert hb == he <= 1, f"{grade_id(cell) or cell.id}: unbalanced hidden test markers"
        if hb:
            m = meta(cell)
            assert m["grade"] and not m["solution"], f"{grade_id(cell)}: hidden tests outside a test cell"


def test_every_test_cell_opens_with_a_docstring():
    """Does each test cell say in one line what it checks?"""
    for cell in read(SOURCE_NB).cells:
        if "nbgrader" in cell.metadata and meta(cell)["grade"] and not meta(cell)["solution"]:
            first = cell.source.splitlines()[0]
            assert first.startswith('"""') and first.endswith('"""') and len(first) > 10, f"{grade_id(cell)}: first line should be a one-line docstring"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=["source", "release"])
def test_no_outputs_or_execution_counts_are_committed(path):
    """Are notebooks committed clean (no outputs, no execution counts)?"""
    raw = json.loads(path.read_text())
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path.name}: cell {cell['id']} has outputs"
            assert cell["execution_count"] is None, f"{path.name}: cell {cell['id']} has an execution count"


def test_cell_ids_are_stable_and_shared_by_the_release():
    """Are cell ids unique, derived from grade_ids for nbgrader cells, and identical in the release?"""
    source, release = read(SOURCE_NB), read(RELEASE_NB)
    ids = [c.id for c in source.cells]
    assert len(ids) == len(set(ids)), "cell ids must be unique"
    for cell in source.cells:
        if grade_id(cell):
            assert cell.id == grade_id(cell).replace("_", "-"), f"cell id {cell.id} should follow its grade_id {grade_id(cell)}"
    assert [c.id for c in release.cells] == ids, "the release must keep the source's cell ids, in order"


def test_kernelspec_is_plain_python3():
    """Do both notebooks ask for the standard python3 kernel?"""
    for path in NOTEBOOKS:
        assert read(path).metadata["kernelspec"]["name"] == "python3"


def test_cells_skipped_while_grading_are_read_only_cells_of_the_notebook():
    """Does TolerantExecute.skip_cells in nbgrader_config.py name only read-only code cells of the
    notebook (no test or answer cell, no stale name), and every read-only cell but the imports?"""
    from pathlib import Path

    from traitlets.config.loader import PyFileConfigLoader

    from grading.notebook import cell_role

    config = PyFileConfigLoader("nbgrader_config.py", path=str(Path(SOURCE_NB).parents[2])).load_config()
    skipped = list(config.TolerantExecute.skip_cells)
    roles = {grade_id(c): cell_role(c) for c in read(SOURCE_NB).cells if grade_id(c)}
    assert {name: roles.get(name) for name in skipped} == {name: "readonly" for name in skipped}
    assert sorted(skipped) == sorted(name for name, role in roles.items() if role == "readonly")


def test_speed_tests_and_their_text_state_one_rule():
    """Does every timed test cell use check_speed with the default number of attempts, and do the
    text before it and the self-timing cells state that rule ("measured up to N times, ... the best
    measurement counts")?"""
    from grading.timing import ATTEMPTS

    cells = read(SOURCE_NB).cells
    timed = [n for n, c in enumerate(cells) if "grading.timing" in c.source and (meta(c) or {}).get("grade")]
    assert len(timed) >= 3, timed
    for n in timed:
        assert "check_speed(" in cells[n].source and "speed_ratio" not in cells[n].source, grade_id(cells[n])
        assert "attempts=" not in cells[n].source, f"{grade_id(cells[n])} must use the rule the text states"
        intro = next(c for c in reversed(cells[:n]) if c.cell_type == "markdown" and "hidden speed test" in c.source)
        text = " ".join(intro.source.split())
        assert f"measured up to {ATTEMPTS} times" in text and "best measurement counts" in text, intro.id
    for gid in ("speed_check_embedding", "speed_check_sinusoid"):
        source = " ".join(c.source for c in cells if grade_id(c) == gid).replace("#", " ")
        source = " ".join(source.split())
        assert "check_speed(" in source and f"up to {ATTEMPTS} times" in source and "best measurement counts" in source, gid
