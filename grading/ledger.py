"""The grading ledger: what was graded from which files, so a batch can be resumed.

A small SQLite file beside the results (``grading_ledger.sqlite`` in the output folder).  For each
assignment and student it keeps the content hash of the staged submission, the result as JSON (the
gradebook record included) and whether that result has been merged into the gradebook yet.  The
coordinator writes an entry after the student's files and before the gradebook merge, and marks it
merged after, so a batch killed at any point resumes without grading anything twice: an entry not
yet merged is merged from the ledger, a merged one is skipped while the files are unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from pathlib import Path

from grading.results import CellRecord, CellRun, GradebookRecord
from grading.run_one import Status, StudentResult

LEDGER_NAME = "grading_ledger.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS graded (
    assignment TEXT NOT NULL,
    student TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT NOT NULL,
    merged INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    PRIMARY KEY (assignment, student)
)
"""


def result_to_json(result: StudentResult) -> str:
    """A result as JSON, without its files and log (they are written to the output folder)."""
    data = dataclasses.asdict(result)
    data.pop("files", None)
    data.pop("log_text", None)
    data["status"] = str(result.status)
    return json.dumps(data)


def result_from_json(text: str) -> StudentResult:
    """The inverse of :func:`result_to_json`."""
    data = json.loads(text)
    record = data.pop("record", None)
    if record is not None:
        record["cells"] = [CellRecord(**cell) for cell in record["cells"]]
        data["record"] = GradebookRecord(**record)
    data["cell_runs"] = {k: CellRun(**v) for k, v in (data.get("cell_runs") or {}).items()}
    data["status"] = Status(data["status"])
    return StudentResult(**data)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One ledger row."""

    content_hash: str
    result: StudentResult
    merged: bool


class Ledger:
    """The ledger of one output folder (opened by the coordinator only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, assignment: str, student: str) -> Entry | None:
        """The entry of a student, or None."""
        row = self.db.execute("SELECT content_hash, result, merged FROM graded WHERE assignment=? AND student=?",
                              (assignment, student)).fetchone()
        if row is None:
            return None
        return Entry(row[0], result_from_json(row[1]), bool(row[2]))

    def record(self, assignment: str, result: StudentResult) -> None:
        """Write (replace) a student's result, not yet merged."""
        self.db.execute("INSERT OR REPLACE INTO graded VALUES (?, ?, ?, ?, ?, 0, ?)",
                        (assignment, result.student, result.content_hash, str(result.status),
                         result_to_json(result), time.time()))

    def mark_merged(self, assignment: str, student: str) -> None:
        """The student's result is in the gradebook."""
        self.db.execute("UPDATE graded SET merged=1, updated=? WHERE assignment=? AND student=?",
                        (time.time(), assignment, student))

    def unmerged(self, assignment: str) -> list[StudentResult]:
        """Results recorded but not merged (the batch stopped in between)."""
        rows = self.db.execute("SELECT result FROM graded WHERE assignment=? AND merged=0", (assignment,))
        return [result_from_json(row[0]) for row in rows.fetchall()]
