"""``OverwriteCellsAnywhere``: nbgrader's ``OverwriteCells`` that can put back any deleted grade cell."""

from __future__ import annotations

from typing import Any

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import OverwriteCells

from grading.notebook import grade_id


class OverwriteCellsAnywhere(OverwriteCells):
    """nbgrader's ``OverwriteCells`` that puts back any deleted grade cell.

    With ``add_missing_cells``, nbgrader 0.9.6 inserts a missing grade cell
    right after the source cell before it and raises ``KeyError`` when that
    cell is missing too (an empty notebook; an answer cell deleted together
    with the test after it), so the submission is not graded.  Here a missing
    grade cell goes after the nearest preceding source cell that is present
    (answer, test or read-only), or at the start of the notebook; cells put
    back earlier count as present, so consecutive missing cells keep their
    order.  Used in place of ``OverwriteCells`` in
    ``Autograde.sanitize_preprocessors`` (it reads ``OverwriteCells``'s
    configuration, ``add_missing_cells`` included).
    """

    def add_missing_grade_cells(self, nb: NotebookNode, resources: Any) -> tuple[NotebookNode, Any]:
        source_nb = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        source_cells = list(source_nb.source_cells)
        grade_cells = {cell.name: cell for cell in source_nb.grade_cells}
        solution_ids = {cell.name for cell in source_nb.solution_cells}
        for position, source_cell in enumerate(source_cells):
            name = source_cell.name
            if name not in grade_cells or name in _present_grade_ids(nb):
                continue
            self.log.warning("Missing grade cell %s encountered, adding to notebook", name)
            cell = self.missing_cell_transform(source_cell, grade_cells[name].max_score,
                                               is_solution=name in solution_ids)
            present = _present_grade_ids(nb)
            before = [c.name for c in source_cells[:position] if c.name in present]
            nb.cells.insert(present[before[-1]] + 1 if before else 0, cell)
        return nb, resources


def _present_grade_ids(nb: NotebookNode) -> dict[str, int]:
    """grade_id -> index of the notebook's cells that have one (the last one if repeated)."""
    return {gid: index for index, cell in enumerate(nb.cells) if (gid := grade_id(cell)) is not None}
