"""Results of a batch: gradebook records, result files per student, the score table.

Workers return results as data (:class:`GradebookRecord`, file contents); only the coordinator
writes the course gradebook (:func:`merge_record`) and the output folders.

nbgrader (about a second of imports) is imported where it is used, not with this module, so the
grading command starts without it while its fork server imports it (:mod:`grading.warm`).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from grading.submissions import Limits, UsageError

if TYPE_CHECKING:
    from nbgrader.api import Gradebook

    from grading.run_one import StudentResult

log = logging.getLogger(__name__)

RESULT_KINDS = (("autograded", ".ipynb"), ("feedback", ".html"))
# What `nbgrader submit` writes next to the notebooks; `nbgrader release_feedback` reads both from
# feedback/<student>/<assignment>/ (the secret names the released page), so they are kept with the results.
EXCHANGE_FILES = ("timestamp.txt", "submission_secret.txt")


def join_notes(*notes: str) -> str:
    """Non-empty notes joined with ``; ``."""
    return "; ".join(n for n in notes if n)


def read_result(url: str | Gradebook, course_id: str, assignment: str,
                student: str) -> tuple[float, float, list[str]] | None:
    """``(score, max_score, ids of cells below full marks)`` of a graded submission, or ``None``.

    ``url`` may be an open :class:`Gradebook` (the coordinator keeps one open for the batch).
    """
    from nbgrader.api import Gradebook, MissingEntry

    if isinstance(url, str):
        with Gradebook(url, course_id) as gb:
            return read_result(gb, course_id, assignment, student)
    gb = url
    try:
        submission = gb.find_submission(assignment, student)
    except MissingEntry:
        return None
    failed = []
    for notebook in submission.notebooks:
        for grade in notebook.grades:
            if grade.auto_score is None and grade.manual_score is None:
                continue
            if grade.score < grade.max_score:
                failed.append(grade.name)
    return float(submission.score), float(submission.max_score), sorted(failed)


# --------------------------------------------------------------------------- gradebook records


@dataclass(frozen=True)
class CellRecord:
    """What autograding wrote for one cell of one submitted notebook."""

    notebook: str
    name: str
    auto_score: float | None = None  # grade and task cells
    needs_manual_grade: bool | None = None
    auto_comment: str | None = None  # solution and task cells
    is_grade: bool = False
    is_comment: bool = False


@dataclass(frozen=True)
class GradebookRecord:
    """One student's autograde results, read from a worker's gradebook, to be merged by the coordinator."""

    student: str
    timestamp: str | None  # ISO format, UTC (nbgrader's timestamp.txt), or None
    late_penalties: dict[str, float | None]  # notebook -> late_submission_penalty
    cells: list[CellRecord]


def _unsynced(dbapi_connection: Any, _record: Any) -> None:
    """An SQLite connection that does not wait for the disk (a scratch file, rebuilt if lost)."""
    dbapi_connection.execute("PRAGMA synchronous = OFF")
    dbapi_connection.execute("PRAGMA journal_mode = MEMORY")


def copy_assignment_definition(src_url: str, src_course: str, dest_url: str, dest_course: str,
                               assignment: str) -> None:
    """Write the assignment's definition (notebooks and their cells, no submissions) to another gradebook.

    This is what ``nbgrader autograde`` reads from the gradebook besides the student's own records:
    a worker's gradebook holds nothing of other students.  The new gradebook is what
    ``nbgrader.api.Gradebook`` would make of it (its tables, the source's alembic version, the
    course, the assignment and its cells), written in one transaction; an SQLite file is written
    without waiting for the disk (a scratch copy: it is rebuilt, not recovered).
    """
    from nbgrader import api
    from sqlalchemy import create_engine, event, text
    from sqlalchemy.orm import Session

    with api.Gradebook(src_url, src_course) as src:
        definition = src.find_assignment(assignment)
        notebooks = []
        for nb in definition.notebooks:
            notebooks.append((
                nb.name, nb.kernelspec,
                [(c.name, c.max_score, c.cell_type) for c in nb.grade_cells],
                [c.name for c in nb.solution_cells],
                [(c.name, c.max_score, c.cell_type) for c in nb.task_cells],
                [(c.name, c.cell_type, c.locked, c.source, c.checksum) for c in nb.source_cells],
            ))
        duedate = definition.duedate
        version = src.db.execute(text("SELECT version_num FROM alembic_version")).scalar()
    if not version:
        version = api.get_alembic_version()  # asks the alembic command (seconds on a busy machine)
    engine = create_engine(dest_url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _unsynced)
    try:
        with Session(engine) as session, session.begin():
            conn = session.connection()
            api.Base.metadata.create_all(conn)
            conn.execute(text("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL)"))
            conn.execute(text("DELETE FROM alembic_version"))
            conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": version})
            if session.get(api.Course, dest_course) is None:
                session.add(api.Course(id=dest_course))
            target = api.Assignment(name=assignment, duedate=duedate, course_id=dest_course)
            session.add(target)
            for name, kernelspec, grades, solutions, tasks, sources in notebooks:
                nb = api.Notebook(name=name, assignment=target, kernelspec=kernelspec)
                session.add(nb)
                for cell_name, max_score, cell_type in grades:
                    session.add(api.GradeCell(name=cell_name, max_score=max_score, cell_type=cell_type, notebook=nb))
                for cell_name in solutions:
                    session.add(api.SolutionCell(name=cell_name, notebook=nb))
                for cell_name, max_score, cell_type in tasks:
                    session.add(api.TaskCell(name=cell_name, max_score=max_score, cell_type=cell_type, notebook=nb))
                for cell_name, cell_type, locked, source, checksum in sources:
                    session.add(api.SourceCell(name=cell_name, cell_type=cell_type, locked=locked, source=source,
                                               checksum=checksum, notebook=nb))
    finally:
        engine.dispose()


def read_record(url: str, course_id: str, assignment: str, student: str) -> GradebookRecord | None:
    """The autograde results of one student in a (worker's) gradebook, or None if there are none."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(url, course_id) as gb:
        try:
            submission = gb.find_submission(assignment, student)
        except MissingEntry:
            return None
        cells: list[CellRecord] = []
        penalties: dict[str, float | None] = {}
        for nb in submission.notebooks:
            penalties[nb.name] = nb.late_submission_penalty
            for grade in nb.grades:
                cells.append(CellRecord(nb.name, grade.name, auto_score=grade.auto_score,
                                        needs_manual_grade=bool(grade.needs_manual_grade), is_grade=True))
            for comment in nb.comments:
                cells.append(CellRecord(nb.name, comment.name, auto_comment=comment.auto_comment, is_comment=True))
        timestamp = submission.timestamp.isoformat() if submission.timestamp is not None else None
        return GradebookRecord(student, timestamp, penalties, cells)


def merge_record(url: str | Gradebook, course_id: str, assignment: str, record: GradebookRecord) -> None:
    """Write one student's autograde results into the course gradebook, as ``nbgrader autograde`` would.

    The student and submission are created if missing (``update_or_create_submission``, the
    timestamp only when one was submitted); auto scores, auto comments and late penalties are
    replaced; manual scores, manual comments and extra credit are kept, and a cell with a manual
    score is marked for review again (``SaveAutoGrades``' rule).  ``url`` may be an open Gradebook.
    """
    from nbgrader.api import Gradebook, MissingEntry

    if isinstance(url, str):
        with Gradebook(url, course_id) as gb:
            merge_record(gb, course_id, assignment, record)
        return
    gb = url
    try:
        gb.find_student(record.student)
    except MissingEntry:
        gb.add_student(record.student)
    kwargs = {"timestamp": record.timestamp} if record.timestamp else {}
    submission = gb.update_or_create_submission(assignment, record.student, **kwargs)
    by_key = {(c.notebook, c.name, c.is_grade): c for c in record.cells}
    with gb.db.no_autoflush:
        for nb in submission.notebooks:
            if nb.name in record.late_penalties:
                nb.late_submission_penalty = record.late_penalties[nb.name]
            for grade in nb.grades:
                cell = by_key.get((nb.name, grade.name, True))
                if cell is None:
                    continue
                grade.auto_score = cell.auto_score
                grade.needs_manual_grade = bool(cell.needs_manual_grade) or grade.manual_score is not None
            for comment in nb.comments:
                cell = by_key.get((nb.name, comment.name, False))
                if cell is not None:
                    comment.auto_comment = cell.auto_comment
    gb.db.commit()


# --------------------------------------------------------------------------- result files


def collect_result_files(scratch: Path, assignment: str, student: str, notebooks: Sequence[str],
                         max_bytes: int = Limits.max_result_bytes) -> dict[str, bytes]:
    """One student's autograded notebooks and feedback pages (and nbgrader's EXCHANGE_FILES beside
    them, nothing else), keyed by relative path.

    What the student's code left next to its notebook (data files, thousands of files, gigabytes)
    is never read.  Raises UsageError if they exceed ``max_bytes`` together or are not regular files.
    """
    files: dict[str, bytes] = {}
    budget = max_bytes
    for kind, suffix in RESULT_KINDS:
        folder = scratch / kind / student / assignment
        for file_name in [*(f"{name}{suffix}" for name in notebooks), *EXCHANGE_FILES]:
            path = folder / file_name
            if not (path.exists() or path.is_symlink()):
                continue
            if path.is_symlink() or not path.is_file():
                raise UsageError(f"{path.name} is not a regular file")
            size = path.stat().st_size
            if size > budget:
                raise UsageError(f"{path.name} is too large to copy ({size} bytes, {budget} left)")
            budget -= size
            files[f"{kind}/{path.name}"] = path.read_bytes()
    return files


def write_student_files(out: Path, assignment: str, student: str, files: Mapping[str, bytes], *,
                        clear: bool = False) -> None:
    """Replace the student's ``autograded`` and ``feedback`` folders in ``out`` by ``files``.

    Only the kinds present in ``files`` are replaced; ``clear`` removes both (a graded student
    whose results could not be copied keeps no stale results of an earlier run).
    """
    kinds = {key.split("/", 1)[0] for key in files}
    for kind, _ in RESULT_KINDS:
        if kind not in kinds and not clear:
            continue
        dest = out / kind / student / assignment
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.exists():
            shutil.rmtree(dest)
        if kind in kinds:
            dest.mkdir(parents=True)
    for key, data in files.items():
        kind, name = key.split("/", 1)
        (out / kind / student / assignment / Path(name).name).write_bytes(data)


def cut_log(data: bytes, max_bytes: int = Limits.max_log_bytes) -> bytes:
    """A log cut after ``max_bytes`` bytes (with a line saying so)."""
    if len(data) <= max_bytes:
        return data
    return data[:max_bytes] + f"\n*** log cut after {max_bytes} bytes ***\n".encode()


def read_log(path: Path, max_bytes: int = Limits.max_log_bytes) -> bytes:
    """The first ``max_bytes`` bytes of a log file (cut as :func:`cut_log` does)."""
    try:
        with open(path, "rb") as fin:
            return cut_log(fin.read(max_bytes + 1), max_bytes)
    except OSError:
        return b""


def format_table(results: Sequence[StudentResult]) -> str:
    """Plain-text table of student, status, score and failed tests."""
    rows = [("student", "status", "score", "seconds", "not full marks / notes")]
    for r in sorted(results, key=lambda r: r.student):
        score = f"{r.score:g}/{r.max_score:g}" if r.score is not None and r.max_score is not None else "-"
        rows.append((r.student, r.status, score, f"{r.seconds:.1f}", join_notes(", ".join(r.failed_tests), r.note)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------- what the graded notebook shows


@dataclass(frozen=True)
class CellRun:
    """One test cell as the kernel ran it: seconds (nbclient's timing) and its text output (capped)."""

    seconds: float | None
    output: str


MAX_CELL_OUTPUT = 10_000


def _cell_seconds(cell: dict) -> float | None:
    """Kernel execution time of a cell from nbclient's ``metadata.execution`` timestamps."""
    from datetime import datetime

    timing = cell.get("metadata", {}).get("execution", {})
    try:
        begin = timing.get("iopub.execute_input") or timing["shell.execute_reply.started"]
        end = timing["shell.execute_reply"]
        return max(0.0, (datetime.fromisoformat(end.replace("Z", "+00:00"))
                         - datetime.fromisoformat(begin.replace("Z", "+00:00"))).total_seconds())
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _cell_text(cell: dict) -> str:
    parts = []
    for output in cell.get("outputs", []):
        kind = output.get("output_type")
        if kind == "stream":
            text = output.get("text", "")
            parts.append("".join(text) if isinstance(text, list) else str(text))
        elif kind == "error":
            parts.append(f"{output.get('ename', '')}: {output.get('evalue', '')}\n")
        elif kind in ("execute_result", "display_data"):
            text = output.get("data", {}).get("text/plain", "")
            parts.append(("".join(text) if isinstance(text, list) else str(text)) + "\n")
    return "".join(parts)[:MAX_CELL_OUTPUT]


def graded_cell_runs(notebook: Path) -> dict[str, CellRun]:
    """grade_id -> run of every test cell of an autograded notebook."""
    import nbformat

    runs: dict[str, CellRun] = {}
    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception:  # noqa: BLE001 (an unreadable notebook has no runs)
        return runs
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution") and meta.get("grade_id"):
            runs[meta["grade_id"]] = CellRun(_cell_seconds(cell), _cell_text(cell))
    return runs


def locked_checksums(notebook: Path) -> dict[str, str]:
    """grade_id -> nbgrader checksum of every locked cell of a (release) notebook."""
    import nbformat
    from nbgrader import utils as nbgrader_utils

    nb = nbformat.read(notebook, as_version=4)
    found = {}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("locked") and meta.get("grade_id"):
            found[meta["grade_id"]] = nbgrader_utils.compute_checksum(cell)
    return found


def find_tampering(notebook: bytes | None, released: Mapping[str, str], name: str) -> list[str]:
    """How a submitted notebook (its file's bytes, None if missing) departs from the release in its
    locked cells (nbgrader's checksums).

    ``released`` maps grade_id -> checksum of each locked cell as released.  Edited, deleted or
    duplicated test and read-only cells, and a file that is not a notebook; nbgrader grades with
    the gradebook's copy of those cells whatever the student did, so this is for the report.
    """
    if not released:
        return []
    # nbgrader first: while the coordinator thread imports it, this thread waits for all of it
    from nbgrader import utils as nbgrader_utils
    import nbformat

    if notebook is None:
        return [f"{name}.ipynb missing"]
    try:
        nb = nbformat.reads(notebook.decode("utf-8"), as_version=4)
    except Exception as exc:  # noqa: BLE001
        return [f"{name}.ipynb is not a notebook ({type(exc).__name__})"]
    seen: dict[str, int] = {}
    problems = []
    for cell in nb.cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid not in released:
            continue
        seen[gid] = seen.get(gid, 0) + 1
        try:
            checksum = nbgrader_utils.compute_checksum(cell)
        except Exception:  # noqa: BLE001
            checksum = None
        if checksum != released[gid]:
            problems.append(f"edited {gid}")
    problems += [f"deleted {gid}" for gid in released if gid not in seen]
    problems += [f"duplicated {gid}" for gid, count in seen.items() if count > 1]
    return problems
