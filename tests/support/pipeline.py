"""End-to-end grading of submissions with the real entry point, ``python -m grading.grade``.

:func:`grade` builds a throw-away copy of the course under ``tmp_path`` (config, source and release;
never the repository's gradebook or autograded work), writes the submissions as student directories,
grades all of them in ONE ``python -m grading.grade`` call and reads every cell's score back from the
resulting gradebook with :class:`nbgrader.api.Gradebook`. The repository itself is never written to.
"""

from __future__ import annotations

import html
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from grading.notebook import cell_role
from grading.grade import nbgrader_env
from grading.preprocessors import hidden_line_numbers
from support import ASSIGNMENT, NOTEBOOK, REPO, SOURCE_NB
from support.submissions import write_submission  # looked up here at each call: tests may patch it

COURSE_FILES = ("nbgrader_config.py",)
COURSE_DIRS = ("source", "release")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")


@dataclass
class GradeRun:
    """What one batch grading produced."""

    scores: dict[str, dict[str, float]]  # student -> grade_id -> auto score (cells nbgrader left unscored are omitted)
    totals: dict[str, float]             # student -> total autograded score
    out: Path                            # the --out directory (autograded/, feedback/, grades.csv, gradebook.db ...)
    stdout: str                          # stdout and stderr of python -m grading.grade
    returncode: int
    seconds: float


def copy_course(dest: Path, config: str = "") -> Path:
    """A copy of the course (config, source/, release/) at ``dest``, with ``config`` lines appended."""
    dest.mkdir(parents=True)
    for name in COURSE_FILES:
        shutil.copy2(REPO / name, dest / name)
    for name in COURSE_DIRS:
        shutil.copytree(REPO / name, dest / name, ignore=IGNORED)
    if config:
        with open(dest / "nbgrader_config.py", "a", encoding="utf-8") as f:
            f.write("\n# Added by the test pipeline\n" + config.strip("\n") + "\n")
    return dest


def course_ids(gradebook: Path) -> list[str]:
    """Course ids stored in a gradebook (read-only, so the file is not changed)."""
    with sqlite3.connect(f"{gradebook.resolve().as_uri()}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM course")]


def read_scores(gradebook: Path) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per-cell auto scores and totals of every graded student of the assignment, both as the
    gradebook reports them (a total is nbgrader's ``SubmittedAssignment.score``, computed by the
    gradebook's own query, so comparing it with the expected total checks more than the cells)."""
    from nbgrader.api import Gradebook, MissingEntry

    if not gradebook.is_file():
        return {}, {}
    ids = course_ids(gradebook)
    kwargs = {"course_id": ids[0]} if len(ids) == 1 else {}
    scores: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    with Gradebook(f"sqlite:///{gradebook}", **kwargs) as gb:
        try:
            assignment = gb.find_assignment(ASSIGNMENT)
        except MissingEntry:
            return {}, {}
        for submission in assignment.submissions:
            cells: dict[str, float] = {}
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    if grade.auto_score is not None:
                        cells[grade.name] = float(grade.auto_score)
            student = submission.student.id
            scores[student] = cells
            totals[student] = float(submission.score)  # the gradebook's own total, not a sum of the above
    return scores, totals


def grade(tmp_path: Path, submissions: Mapping[str, NotebookNode | bytes | Path], *, feedback: bool = False,
          export: bool = False, config: str = "", timeout: float | None = None,
          workers: int | None = None) -> GradeRun:
    """Grade ``submissions`` (student id -> notebook) in one call of ``python -m grading.grade``.

    ``workers`` is passed as ``--workers`` (default: the command's own, one per core); callers that
    run several gradings at once pass 1 so the machine is not oversubscribed.

    Everything lives under ``tmp_path``: ``course/`` (the copy that is graded), ``subs/<student>/``
    (the submissions) and ``out/`` (the results; ``out/grades.csv`` when ``export``).
    """
    tmp_path = Path(tmp_path)
    course = copy_course(tmp_path / "course", config)
    subs = tmp_path / "subs"
    subs.mkdir()
    for student, content in submissions.items():
        write_submission(content, subs / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "grading.grade", "--course", str(course), "--assignment", ASSIGNMENT,
           "--out", str(out), str(subs)]
    if feedback:
        cmd.append("--feedback")
    if export:
        cmd += ["--export", str(out / "grades.csv")]
    if timeout is not None:
        cmd += ["--timeout", str(timeout)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp_path, env=nbgrader_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    seconds = time.monotonic() - start
    scores, totals = read_scores(out / "gradebook.db")
    return GradeRun(scores=scores, totals=totals, out=out, stdout=proc.stdout, returncode=proc.returncode,
                    seconds=seconds)


def visible_text(path: Path) -> str:
    """The text of an HTML page (a feedback page) as a reader sees it (tags removed, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


def hidden_test_lines() -> set[str]:
    """Distinctive code lines of the hidden-test regions of the source notebook's test cells (none
    may appear in feedback unless the student's own code holds it)."""
    lines: set[str] = set()
    for cell in nbformat.read(str(SOURCE_NB), as_version=4).cells:
        if cell_role(cell) != "test":
            continue
        source = cell.source.splitlines()
        hidden = hidden_line_numbers(cell.source)
        shown = {line.strip() for number, line in enumerate(source, start=1) if number not in hidden}
        lines |= {source[n - 1].strip() for n in hidden if len(source[n - 1].strip()) >= 20} - shown
    return lines


# Paths of the repository that grading could write to (results, gradebooks, the course itself).
REPO_RESULT_PATHS = (
    "gradebook.db", "gradebook.db.bak", "gradebook.db.new", "gradebook.db-journal", ".nbgrader.log",
    "grading_ledger.sqlite",
    "grades.csv", "autograded", "feedback", "submitted", "grading_logs", "source", "release",
    "nbgrader_config.py",
)


def repo_state() -> dict[str, object]:
    """What grading could change in the repository: ``git status`` of tracked files and the size and
    modification time of every file under the course's result and source paths."""
    git = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    files: dict[str, tuple[int, int]] = {}
    for name in REPO_RESULT_PATHS:
        top = REPO / name
        paths = [top] if top.is_file() else sorted(top.rglob("*")) if top.is_dir() else []
        for path in paths:
            if path.is_file() and "__pycache__" not in path.parts:
                stat = path.stat()
                files[str(path.relative_to(REPO))] = (stat.st_size, stat.st_mtime_ns)
    return {"git status": git, "files": files}
