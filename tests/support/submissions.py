"""Build student submission notebooks from the committed release, for the pipeline tests.

A submission starts from the release notebook exactly as students receive it. With
``base="reference"`` every answer cell is filled with the instructor's solution (the source cell
without its solution markers); ``answers`` then replaces whole answer cells by ``grade_id``,
``mutate`` applies one exact text substitution to a reference answer, ``extra_cells`` inserts cells
a student added, and ``transform`` may tamper with the notebook JSON at the end.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from grading import notebook
from support import RELEASE_NB, SOURCE_NB


def grade_id(cell: NotebookNode) -> str | None:
    """The nbgrader grade_id of a cell, or None for a plain cell."""
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


is_code_answer = notebook.is_code_answer


def read(path: Path) -> NotebookNode:
    return nbformat.read(str(path), as_version=4)


def reference_answers() -> dict[str, str]:
    """grade_id -> the reference solution of every code answer cell (markers removed)."""
    return notebook.reference_answers(read(SOURCE_NB))


def replaced(source: str, old: str, new: str) -> str:
    """``source`` with the single occurrence of ``old`` replaced by ``new``."""
    if source.count(old) != 1:
        raise ValueError(f"{old!r} occurs {source.count(old)} times, expected once")
    return source.replace(old, new)


def mutate(grade: str, old: str, new: str) -> dict[str, str]:
    """The reference answer of one cell with `old` replaced by `new` (which must occur exactly once)."""
    source = reference_answers()[grade]
    if source.count(old) != 1:
        raise ValueError(f"{old!r} occurs {source.count(old)} times in the reference answer {grade!r}, expected once")
    return {grade: source.replace(old, new)}


@dataclass(frozen=True)
class Submission:
    """What one (real or imagined) student handed in."""

    name: str
    base: str = "reference"                      # "reference" or "blank"
    answers: Mapping[str, str] = field(default_factory=dict)
    extra_cells: Iterable[tuple[str, str]] = ()  # (insert after this grade_id, code source)
    transform: Callable[[NotebookNode], NotebookNode] | None = None

    def notebook(self) -> NotebookNode:
        return build(self)


def build(sub: Submission) -> NotebookNode:
    """The submission's notebook, built from the current release."""
    nb = copy.deepcopy(read(RELEASE_NB))
    answers = dict(reference_answers()) if sub.base == "reference" else {}
    if sub.base not in ("reference", "blank"):
        raise ValueError(f"unknown base {sub.base!r}")
    answers.update(sub.answers)
    known = {grade_id(c) for c in nb.cells if is_code_answer(c)}
    unknown = set(sub.answers) - known
    if unknown:
        raise KeyError(f"no answer cells named {sorted(unknown)}")
    for cell in nb.cells:
        if is_code_answer(cell) and grade_id(cell) in answers:
            cell.source = answers[grade_id(cell)]
    for n, (after, source) in enumerate(sub.extra_cells):
        index = next(i for i, c in enumerate(nb.cells) if grade_id(c) == after)
        added = nbformat.v4.new_code_cell(source)
        added.id = f"student-added-{n}"
        nb.cells.insert(index + 1, added)
    if sub.transform is not None:
        nb = sub.transform(nb)
    return nb


def write_submission(content: NotebookNode | bytes | Path, path: Path) -> Path:
    """Write one student's notebook: a NotebookNode as JSON, bytes raw, a Path copied."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, (bytes, bytearray)):
        path.write_bytes(bytes(content))
    elif isinstance(content, Path):
        shutil.copy2(content, path)
    else:
        nbformat.write(content, str(path))
    return path
