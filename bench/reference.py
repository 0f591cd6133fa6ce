"""The instructor's reference implementation, taken from the source notebook.

The reference is the code of the source notebook's answer cells (nbgrader ``solution: true``
code cells, without their ``### BEGIN SOLUTION`` / ``### END SOLUTION`` marker lines) run after
the read-only ``imports`` cell, in notebook order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

REPO = Path(__file__).resolve().parents[1]
ASSIGNMENT = "12_embeddings"
NOTEBOOK = "embeddings"
SOURCE_NB = REPO / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
RELEASE_NB = REPO / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


def nbgrader_meta(cell: NotebookNode) -> dict[str, Any]:
    """The nbgrader metadata of a cell (empty for a plain cell)."""
    return dict(cell.get("metadata", {}).get("nbgrader", {}))


def is_code_answer(cell: NotebookNode) -> bool:
    """Is this a code cell students write (``solution: true`` and not a graded test)?"""
    meta = nbgrader_meta(cell)
    return cell.cell_type == "code" and bool(meta.get("solution")) and not meta.get("grade")


def is_imports(cell: NotebookNode) -> bool:
    """Is this the read-only setup cell holding the notebook's imports?"""
    return cell.cell_type == "code" and nbgrader_meta(cell).get("grade_id") == "imports"


def strip_markers(source: str) -> str:
    """Cell source without the solution marker lines."""
    lines = [line for line in source.splitlines() if line.strip() not in SOLUTION_MARKERS]
    return "\n".join(lines)


def reference_answers(path: Path = SOURCE_NB) -> dict[str, str]:
    """grade_id -> reference source of every code answer cell (markers removed), in notebook order."""
    notebook = nbformat.read(str(path), as_version=4)
    return {nbgrader_meta(c)["grade_id"]: strip_markers(c.source) for c in notebook.cells if is_code_answer(c)}


def reference_sources(path: Path = SOURCE_NB) -> list[str]:
    """Sources to execute for the reference: the imports cell and the answer cells, in order."""
    notebook = nbformat.read(str(path), as_version=4)
    return [strip_markers(c.source) for c in notebook.cells if is_imports(c) or is_code_answer(c)]


def load_reference(path: Path = SOURCE_NB) -> dict[str, Any]:
    """Execute the reference cells and return their namespace (``Embedding``, ...)."""
    namespace: dict[str, Any] = {"__name__": "reference_solution"}
    for number, source in enumerate(reference_sources(path)):
        exec(compile(source, f"<{path.name} reference cell {number}>", "exec"), namespace)
    return namespace


def reference_submission(release: Path = RELEASE_NB, source: Path = SOURCE_NB) -> NotebookNode:
    """The release notebook as students receive it, with every code answer cell holding the reference."""
    answers = reference_answers(source)
    notebook = nbformat.read(str(release), as_version=4)
    for cell in notebook.cells:
        if is_code_answer(cell) and nbgrader_meta(cell).get("grade_id") in answers:
            cell.source = answers[nbgrader_meta(cell)["grade_id"]]
    return notebook
