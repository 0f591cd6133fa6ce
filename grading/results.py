"""Results of a batch: gradebook reads, result files copied out per student, the score table."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from nbgrader.api import Gradebook, MissingEntry

from grading.scratch import gradebook_url
from grading.submissions import Limits, UsageError

if TYPE_CHECKING:
    from grading.run_one import StudentResult

log = logging.getLogger(__name__)


def join_notes(*notes: str) -> str:
    """Non-empty notes joined with ``; ``."""
    return "; ".join(n for n in notes if n)


def read_result(gradebook: Path, assignment: str, student: str) -> tuple[float, float, list[str]] | None:
    """``(score, max_score, ids of cells below full marks)`` of a graded submission, or ``None``."""
    with Gradebook(gradebook_url(gradebook)) as gb:
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


def copy_bounded(src: Path, dest: Path, budget: int) -> int:
    """Copy regular file ``src`` to ``dest`` if it fits in ``budget`` bytes; return its size.

    Raises UsageError (nothing is written) if it does not fit, OSError if copying fails.
    """
    if src.is_symlink() or not src.is_file():
        raise UsageError(f"{src.name} is not a regular file")
    size = src.stat().st_size
    if size > budget:
        raise UsageError(f"{src.name} is too large to copy ({size} bytes, {budget} left)")
    shutil.copy2(src, dest)
    return size


def copy_student_results(scratch: Path, out: Path, assignment: str, student: str, notebooks: Sequence[str],
                         max_bytes: int = Limits.max_result_bytes) -> None:
    """Copy one student's autograded notebooks and feedback pages to ``out`` (nothing else).

    What the student's code left next to its notebook (data files, thousands of files, gigabytes)
    stays in the scratch course.  The previous results of the student are replaced.  Raises
    UsageError or OSError for this student only.
    """
    budget = max_bytes
    for kind, suffix in (("autograded", ".ipynb"), ("feedback", ".html")):
        src = scratch / kind / student / assignment
        dest = out / kind / student / assignment
        if not src.is_dir():
            continue
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for name in notebooks:
            path = src / f"{name}{suffix}"
            if path.exists() or path.is_symlink():
                budget -= copy_bounded(path, dest / path.name, budget)


def copy_log(src: Path, dest: Path, max_bytes: int = Limits.max_log_bytes) -> None:
    """Copy a log file, cut after ``max_bytes`` bytes."""
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        fout.write(fin.read(max_bytes))
        if fin.read(1):
            fout.write(f"\n*** log cut after {max_bytes} bytes ***\n".encode())
    shutil.copystat(src, dest)


def copy_results(
    scratch: Path, out: Path, assignment: str, results: Sequence[StudentResult], *, course_gradebook: Path,
    gradebook_mtime: float, to_course: bool, notebooks: Sequence[str] = (), limits: Limits = Limits(),
) -> Path:
    """Copy autograded notebooks, feedback, logs and the gradebook to ``out``; return the gradebook path.

    A student whose results cannot be copied gets a note (and a warning is printed); the others
    are copied all the same.  ``notebooks`` are the assignment's notebook names (default: the
    notebooks nbgrader wrote for each student).
    """
    for result in results:
        names = list(notebooks) or sorted(
            p.stem for p in (scratch / "autograded" / result.student / assignment).glob("*.ipynb"))
        try:
            copy_student_results(scratch, out, assignment, result.student, names, limits.max_result_bytes)
        except (UsageError, OSError, shutil.Error) as exc:
            result.copy_failed = True
            result.note = join_notes(result.note, f"results not copied: {exc}")
            log.warning("results of %s not copied to %s: %s", result.student, out, exc)
    logs = out / "grading_logs" / assignment
    logs.mkdir(parents=True, exist_ok=True)
    for log_file in (scratch / "logs").glob("*.log"):
        try:
            copy_log(log_file, logs / log_file.name, limits.max_log_bytes)
        except OSError as exc:
            log.warning("log %s not copied: %s", log_file.name, exc)
    target = out / "gradebook.db"
    if to_course:
        if course_gradebook.stat().st_mtime != gradebook_mtime:
            target = out / "gradebook.db.new"
            log.warning("%s changed while grading; new gradebook written to %s", course_gradebook, target)
        else:
            shutil.copy2(course_gradebook, out / "gradebook.db.bak")
    shutil.copy2(scratch / "gradebook.db", target)
    return target


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
