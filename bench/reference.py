"""The instructor's reference implementation, taken from the source notebook.

The reference is the code of the source notebook's answer cells (nbgrader ``solution: true``
code cells, without their ``### BEGIN SOLUTION`` / ``### END SOLUTION`` marker lines) run after
the read-only ``imports`` cell, in notebook order.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

from grading import notebook

REPO = Path(__file__).resolve().parents[1]
ASSIGNMENT = "12_embeddings"
NOTEBOOK = "embeddings"
SOURCE_NB = REPO / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
RELEASE_NB = REPO / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"


def reference_answers(path: Path = SOURCE_NB) -> dict[str, str]:
    """grade_id -> reference source of every code answer cell (markers removed), in notebook order."""
    return notebook.reference_answers(nbformat.read(str(path), as_version=4))


def reference_sources(path: Path = SOURCE_NB) -> list[str]:
    """Sources to execute for the reference: the imports cell and the answer cells, in order."""
    cells = nbformat.read(str(path), as_version=4).cells
    return [notebook.strip_solution_markers(c.source) for c in cells
            if notebook.cell_role(c) == "setup" or notebook.is_code_answer(c)]


def load_reference(path: Path = SOURCE_NB) -> dict[str, Any]:
    """Execute the reference cells and return their namespace (``Embedding``, ...)."""
    namespace: dict[str, Any] = {"__name__": "reference_solution"}
    for number, source in enumerate(reference_sources(path)):
        exec(compile(source, f"<{path.name} reference cell {number}>", "exec"), namespace)
    return namespace


def reference_submission(release: Path = RELEASE_NB, source: Path = SOURCE_NB,
                         only: Collection[str] | None = None) -> NotebookNode:
    """The release notebook as students receive it, with every code answer cell holding the reference
    (only the cells whose grade_id is in ``only`` when it is given; the others stay as released)."""
    answers = reference_answers(source)
    if only is not None:
        answers = {gid: code for gid, code in answers.items() if gid in only}
    released = nbformat.read(str(release), as_version=4)
    for cell in released.cells:
        if notebook.is_code_answer(cell) and notebook.grade_id(cell) in answers:
            cell.source = answers[notebook.grade_id(cell)]
    return released
