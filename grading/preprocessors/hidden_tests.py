"""``StripHiddenTests``: the student's kernel never runs (or sees) the hidden tests."""

from __future__ import annotations

from typing import Any

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

from grading.hidden_region import FULL_TEST_SOURCES, HiddenRegion, strip_test_cells


class StripHiddenTests(NbGraderPreprocessor):
    """Run only the visible part of every test cell in the student's kernel.

    Whatever the kernel executes, student code can read back (IPython's input
    history ``In``/``_ih``, ``linecache``, the caller's frame) and print into
    the feedback, so the hidden tests must never reach the kernel.  This
    preprocessor records the full source of every test cell in
    ``resources[FULL_TEST_SOURCES]`` (by grade_id) and removes the hidden-test
    regions from the cells.  :class:`SealedVerdict` re-checks the *full*
    sources out of process (so the hidden tests still decide the points) and
    puts them back into the cells, so the autograded notebook holds the
    instructor's test cells as nbgrader expects.  Sits before ``TolerantExecute``
    in ``Autograde.autograde_preprocessors``; it needs ``SealedVerdict`` after
    it (without it, the hidden tests would not be run at all).
    """

    def preprocess(self, nb: NotebookNode, resources: Any) -> tuple[NotebookNode, Any]:
        region = HiddenRegion.from_config(self.config)
        resources[FULL_TEST_SOURCES] = strip_test_cells(nb, region, self.log)
        return nb, resources
