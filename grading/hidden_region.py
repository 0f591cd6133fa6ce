"""The hidden-test region of a test cell: the one place that knows its delimiters.

nbgrader removes the lines between ``ClearHiddenTests.begin_test_delimeter`` and
``ClearHiddenTests.end_test_delimeter`` (delimiter lines included) from the release and the
feedback.  The grader needs the same region four times: to strip it before the student's kernel
runs a test cell, to put it back for the sealed re-check, to tell which line numbers of a test
cell are hidden, and to redact a failing hidden line from the feedback.  All four read the
delimiters from nbgrader's own settings (:meth:`HiddenRegion.from_config`), so an instructor who
changes them in ``nbgrader_config.py`` changes all of them.

A line belongs to the region when it *contains* a delimiter or lies between two, as nbgrader
matches them; an unterminated region runs to the end of the cell (nbgrader refuses such a cell
when the assignment is generated, so it only arises in hand-made notebooks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from grading.notebook import cell_role, cell_source, grade_id

#: Key in nbconvert's ``resources``: grade_id -> ``{"visible": ..., "full": ...}`` of every test cell.
FULL_TEST_SOURCES = "full_test_sources"
#: What feedback says instead of quoting a failing line of the hidden region.
REDACTED = "a hidden test failed"


@dataclass(frozen=True)
class HiddenRegion:
    """The delimiters of the hidden-test region (nbgrader's defaults unless configured)."""

    begin: str = "BEGIN HIDDEN TESTS"
    end: str = "END HIDDEN TESTS"

    @classmethod
    def from_config(cls, config: Any) -> HiddenRegion:
        """The delimiters nbgrader's ``ClearHiddenTests`` uses under ``config`` (a traitlets Config)."""
        from nbgrader.preprocessors import ClearHiddenTests

        clear = ClearHiddenTests(config=config)
        return cls(clear.begin_test_delimeter, clear.end_test_delimeter)

    def hidden_flags(self, source: str) -> list[bool]:
        """One flag per line of ``source`` (split on ``\\n``, as Python numbers lines): in the region?"""
        flags: list[bool] = []
        inside = False
        for line in source.split("\n"):
            if self.begin in line:
                inside = True
                flags.append(True)
            elif self.end in line:
                inside = False
                flags.append(True)
            else:
                flags.append(inside)
        return flags

    def strip(self, source: str) -> str:
        """``source`` without its hidden-test region, delimiter lines included (as nbgrader strips it)."""
        lines = source.split("\n")
        return "\n".join(line for line, hidden in zip(lines, self.hidden_flags(source)) if not hidden)

    def line_numbers(self, source: str) -> frozenset[int]:
        """1-based numbers of the lines of ``source`` in the region (delimiters included)."""
        return frozenset(number for number, hidden in enumerate(self.hidden_flags(source), start=1) if hidden)

    def quote_line(self, source: str, line: int) -> str:
        """What feedback may show of line ``line`` of ``source``: the code, or :data:`REDACTED`."""
        lines = source.split("\n")
        if line in self.line_numbers(source) or not 0 < line <= len(lines):
            return REDACTED
        return f"line {line}: {lines[line - 1].strip()}"


DEFAULT_REGION = HiddenRegion()


def hidden_line_numbers(source: str, region: HiddenRegion = DEFAULT_REGION) -> frozenset[int]:
    """1-based numbers of the lines of ``source`` in ``region`` (see :meth:`HiddenRegion.line_numbers`)."""
    return region.line_numbers(source)


def strip_test_cells(nb: Any, region: HiddenRegion, log: Any = None) -> dict[str, dict[str, str]]:
    """Remove the hidden region from every test cell of ``nb`` (in place); return what was there.

    Returns grade_id -> ``{"visible": stripped source, "full": original source}``, the record
    :func:`restore_test_cells` puts back.  A test cell without a unique grade_id keeps its source
    (nbgrader's ``DeduplicateIds`` and ``CheckCellMetadata`` make that impossible in autograde).
    """
    recorded: dict[str, dict[str, str]] = {}
    for index, cell in enumerate(nb.cells):
        if cell_role(cell) != "test":
            continue
        gid = grade_id(cell)
        full = cell_source(cell)
        if gid is None or gid in recorded:
            if log is not None:
                log.warning("Test cell %d has no unique grade_id; its hidden tests stay in it", index)
            continue
        visible = region.strip(full)
        recorded[gid] = {"visible": visible, "full": full}
        cell.source = visible
    return recorded


def restore_test_cells(nb: Any, recorded: Mapping[str, Mapping[str, str]]) -> int:
    """Put the full sources :func:`strip_test_cells` recorded back into the test cells of ``nb``.

    Returns the number of cells restored.  A recorded test cell whose source changed in between
    raises ``RuntimeError`` (its hidden tests would silently not count).
    """
    restored = 0
    for cell in nb.cells:
        entry = recorded.get(grade_id(cell) or "") if cell_role(cell) == "test" else None
        if entry is None:
            continue
        source = cell_source(cell)
        if source == entry["full"]:
            continue
        if source != entry["visible"]:
            raise RuntimeError(f"test cell {grade_id(cell)!r} changed after its hidden tests were removed")
        cell.source = entry["full"]
        restored += 1
    return restored
