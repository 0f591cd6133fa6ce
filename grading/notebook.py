"""Cell roles of an nbgrader notebook, as defined in ``grading/CONTRACT.md``.

Roles (see :func:`cell_role`):

``"test"``      code cell with ``grade: true, solution: false`` (instructor tests)
``"answer"``    any cell with ``solution: true`` (code: student implementation; markdown: written answer)
``"setup"``     read-only code cell whose ``grade_id`` is a setup id (by default ``"imports"``)
``"readonly"``  any other locked / nbgrader-managed code cell (demos, profiling, plots)
``"student"``   code cell without nbgrader flags (added by the student)
``"markdown"``  any other non-code cell (markdown, raw)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

Role = Literal["test", "answer", "setup", "readonly", "student", "markdown"]

DEFAULT_SETUP_GRADE_IDS: tuple[str, ...] = ("imports",)

#: The lines nbgrader replaces, with what lies between them, by a stub in the student release.
SOLUTION_MARKERS: tuple[str, str] = ("### BEGIN SOLUTION", "### END SOLUTION")

#: Roles whose code is executed, in notebook order, by the sealed re-check.
STUDENT_CODE_ROLES: frozenset[str] = frozenset({"answer", "setup", "student"})


def nbgrader_metadata(cell: Mapping[str, Any]) -> dict[str, Any]:
    """Return the cell's ``metadata.nbgrader`` dict (empty when absent or malformed)."""
    meta = cell.get("metadata") or {}
    nbg = meta.get("nbgrader") if isinstance(meta, Mapping) else None
    return dict(nbg) if isinstance(nbg, Mapping) else {}


def grade_id(cell: Mapping[str, Any]) -> str | None:
    """Return the cell's nbgrader ``grade_id`` or ``None``."""
    value = nbgrader_metadata(cell).get("grade_id")
    return value if isinstance(value, str) and value else None


def cell_source(cell: Mapping[str, Any]) -> str:
    """Return the cell source as one string (nbformat allows a list of lines on disk)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def cell_role(cell: Mapping[str, Any], setup_grade_ids: Iterable[str] = DEFAULT_SETUP_GRADE_IDS) -> Role:
    """Classify one notebook cell; see the module docstring for the roles."""
    nbg = nbgrader_metadata(cell)
    is_code = cell.get("cell_type") == "code"
    solution = bool(nbg.get("solution", False))
    grade = bool(nbg.get("grade", False))
    locked = bool(nbg.get("locked", False))
    if solution:
        return "answer"
    if not is_code:
        return "markdown"
    if grade:
        return "test"
    if not locked:
        return "student"
    if grade_id(cell) in set(setup_grade_ids):
        return "setup"
    return "readonly"


def cells_with_role(nb: Mapping[str, Any], roles: Iterable[str], *, code_only: bool = True,
                    setup_grade_ids: Iterable[str] = DEFAULT_SETUP_GRADE_IDS) -> list[tuple[int, Any]]:
    """Return ``(index, cell)`` pairs, in notebook order, of cells whose role is in ``roles``."""
    wanted = set(roles)
    setup_ids = tuple(setup_grade_ids)
    return [
        (index, cell)
        for index, cell in enumerate(nb.get("cells", []))
        if cell_role(cell, setup_ids) in wanted and (not code_only or cell.get("cell_type") == "code")
    ]


def student_code_cells(nb: Mapping[str, Any],
                       setup_grade_ids: Iterable[str] = DEFAULT_SETUP_GRADE_IDS) -> list[tuple[int, Any]]:
    """Return ``(index, cell)`` of every code cell the sealed worker executes (answer, setup, student)."""
    return cells_with_role(nb, STUDENT_CODE_ROLES, setup_grade_ids=setup_grade_ids)


def test_cells(nb: Mapping[str, Any]) -> list[tuple[int, Any]]:
    """Return ``(index, cell)`` of every autograded test cell."""
    return cells_with_role(nb, {"test"})


test_cells.__test__ = False  # type: ignore[attr-defined]  # not a pytest test function


def test_grade_id(index: int, cell: Mapping[str, Any]) -> str:
    """Return the test cell's ``grade_id``, or ``"cell-<index>"`` when nbgrader metadata lacks one."""
    return grade_id(cell) or f"cell-{index}"


test_grade_id.__test__ = False  # type: ignore[attr-defined]


def execution_plan(nb: Mapping[str, Any], setup_grade_ids: Sequence[str] = DEFAULT_SETUP_GRADE_IDS,
                   ) -> list[tuple[int, list[int]]]:
    """For each test cell (by index), list the student-code cell indices that precede it.

    Returns ``[(test_index, [student_index, ...]), ...]`` in notebook order; each list holds *all*
    preceding student-code cells (callers skip those already executed in their current process).
    """
    student = [index for index, _ in student_code_cells(nb, setup_grade_ids)]
    return [(t_index, [s for s in student if s < t_index]) for t_index, _ in test_cells(nb)]


def strip_solution_markers(source: str) -> str:
    """A cell's source without its solution marker lines: the instructor's reference code."""
    return "\n".join(line for line in source.splitlines() if line.strip() not in SOLUTION_MARKERS)


def is_code_answer(cell: Mapping[str, Any]) -> bool:
    """Is this a code cell that students write (an answer cell, not a written response)?"""
    return cell.get("cell_type") == "code" and cell_role(cell) == "answer"


def reference_answers(nb: Mapping[str, Any]) -> dict[str, str]:
    """grade_id -> reference code of every code answer cell of an instructor (source) notebook."""
    return {grade_id(cell): strip_solution_markers(cell_source(cell))
            for cell in nb.get("cells", []) if is_code_answer(cell)}
