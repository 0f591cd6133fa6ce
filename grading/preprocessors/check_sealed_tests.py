"""``CheckSealedTests``: refuse, when the assignment is generated, test-cell idioms that the sealed
re-check would grade differently from a kernel (see :mod:`grading.sealed.idioms`)."""

from __future__ import annotations

from typing import Any

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import List, Unicode

from grading.notebook import cell_source, cells_with_role, test_cells, test_grade_id
from grading.sealed.idioms import refusals, top_level_names


class SealedIdiomError(ValueError):
    """A test cell uses an idiom the sealed checker cannot give a kernel's meaning."""


class CheckSealedTests(NbGraderPreprocessor):
    """Fail ``nbgrader generate_assignment`` on a test cell that the sealed re-check would grade
    differently from a kernel, naming the cell, the line and the idiom, with what to write instead.

    Put it in ``c.GenerateAssignment.preprocessors`` after ``InstantiateTests`` (so it reads the
    instantiated ``AUTOTEST`` code) and before ``ClearSolutions`` (so it reads the names the
    reference solution defines).
    """

    setup_grade_ids = List(Unicode(), default_value=["imports"],
                           help="grade_ids of setup cells (their names count as the student's).").tag(config=True)
    allow_cells = List(Unicode(), help="grade_ids of test cells not checked (after review by the instructor).").tag(
        config=True)

    def preprocess(self, nb: NotebookNode, resources: Any) -> tuple[NotebookNode, Any]:
        setup = tuple(self.setup_grade_ids)
        student = top_level_names(cell_source(cell) for _, cell in
                                  cells_with_role(nb, {"answer", "setup", "student"}, setup_grade_ids=setup))
        found = [refusal
                 for index, cell in test_cells(nb)
                 if test_grade_id(index, cell) not in self.allow_cells
                 for refusal in refusals(test_grade_id(index, cell), cell_source(cell), student)]
        if found:
            for refusal in found:
                self.log.error(refusal.message())
            raise SealedIdiomError("; ".join(refusal.message() for refusal in found))
        return nb, resources
