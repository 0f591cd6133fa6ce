"""Grade submissions of one assignment in a sealed scratch copy of the course.

Usage::

    python -m grading.grade --course . --assignment 12_embeddings SUBMISSION... \\
        [--out DIR] [--feedback] [--export grades.csv] [--timeout SECONDS] [--no-sandbox]

A SUBMISSION is a zip file (student id = file name without ``.zip``), a
student directory (``alice/`` holding the notebooks or ``alice/12_embeddings/``),
a directory of student directories (such as the course's ``submitted/``), or a
single ``alice.ipynb`` for a one-notebook assignment.

What happens:

0. The course's ``nbgrader_config.py`` is loaded the way nbgrader loads it;
   grading stops (exit status 2) if it fails to load or if
   ``Autograde.autograde_preprocessors`` lacks ``TolerantExecute`` or
   ``SealedVerdict`` (nbgrader itself would grade with its defaults).
1. The course gradebook must know the assignment; if it does not,
   ``nbgrader generate_assignment --force`` is run in the course first.
2. A scratch course is built in a temporary directory: the course's
   ``nbgrader_config.py``, a copy of ``gradebook.db``, the assignment's
   non-notebook source files (data files nbgrader copies next to every
   submission) and the submissions.  No solution notebook is in it.
3. ``nbgrader autograde`` runs there once per student, with a wall-clock bound,
   with the kernel ``python3-sealed`` (ipykernel inside bubblewrap; the
   autograded notebook's directory is the only course path it sees).
4. Optionally ``nbgrader generate_feedback`` and ``nbgrader export``.
5. Autograded notebooks, feedback pages, logs, the CSV and the gradebook are
   copied to ``--out`` (default: the course itself) and a score table is
   printed.  Only the assignment's notebooks and their feedback pages are
   copied per student (never other files a student's code left in its
   directory), with a size bound; a student whose results cannot be copied
   is reported and does not stop the others.

A one-notebook assignment handed in under another name (``embeddings (1).ipynb``,
the only notebook in the folder) is graded under the assignment's notebook name.

Exit status: 0 if every submission was graded (a notebook whose kernel died
counts as graded) and its results copied, 1 if some were not, 2 for usage
errors (including an unusable course configuration).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import nbformat
from nbgrader import utils as nbgrader_utils
from nbgrader.api import Gradebook, MissingEntry

from grading import sandbox

STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}$")
SKIP_NAMES = {".ipynb_checkpoints", "__pycache__", ".DS_Store", "__MACOSX"}
MAX_SUBMISSION_BYTES = 200 * 1024**2
MAX_SUBMISSION_FILES = 2_000
MAX_RESULT_BYTES = 200 * 1024**2  # autograded notebooks and feedback pages copied out per student
MAX_LOG_BYTES = 20 * 1024**2  # of each log copied out (the rest is cut)
DEFAULT_TIMEOUT = 1800.0
REQUIRED_PREPROCESSORS = ("grading.preprocessors.TolerantExecute", "grading.preprocessors.SealedVerdict")
# What `nbgrader submit` writes next to the notebooks; `nbgrader release_feedback` reads both from
# feedback/<student>/<assignment>/ (the secret names the released page), so they are kept with the results.
EXCHANGE_FILES = ("timestamp.txt", "submission_secret.txt")


@dataclass(frozen=True)
class Submission:
    """One student's files for the assignment (a directory holding the notebooks)."""

    student: str
    path: Path | None
    notebook_file: Path | None = None  # a single .ipynb given directly
    problem: str | None = None  # why it cannot be graded (reported, does not stop the batch)


@dataclass
class StudentResult:
    """Outcome of grading one submission."""

    student: str
    status: str  # "graded", "error", "timeout"
    seconds: float
    score: float | None = None
    max_score: float | None = None
    failed_tests: list[str] = field(default_factory=list)
    log: Path | None = None
    note: str = ""
    copy_failed: bool = False  # graded, but its notebooks or feedback could not be copied to --out


class UsageError(Exception):
    """Bad arguments or an unusable course or submission."""


# --------------------------------------------------------------------------- course and gradebook


def gradebook_url(path: Path) -> str:
    """SQLAlchemy URL of an SQLite gradebook file."""
    return f"sqlite:///{path}"


def assignment_notebooks(gradebook: Path, assignment: str) -> list[str]:
    """Names of the assignment's notebooks in a gradebook (empty if unknown)."""
    if not gradebook.is_file():
        return []
    with Gradebook(gradebook_url(gradebook)) as gb:
        try:
            return sorted(nb.name for nb in gb.find_assignment(assignment).notebooks)
        except MissingEntry:
            return []


def stale_test_cells(course: Path, assignment: str, notebooks: Sequence[str]) -> list[str]:
    """grade_ids of test cells whose source differs from the copy in the gradebook.

    nbgrader grades with the gradebook's copy of every test cell, so tests
    edited after ``generate_assignment`` are silently ignored until it runs
    again.
    """
    stale = []
    with Gradebook(gradebook_url(course / "gradebook.db")) as gb:
        for name in notebooks:
            path = course / "source" / assignment / f"{name}.ipynb"
            if not path.is_file():
                continue
            stored = {cell.name: cell.checksum for cell in gb.find_notebook(name, assignment).source_cells}
            for cell in nbformat.read(path, as_version=4).cells:
                if not nbgrader_utils.is_grade(cell) or nbgrader_utils.is_solution(cell):
                    continue
                gid = cell.metadata["nbgrader"].get("grade_id")
                try:
                    if stored.get(gid) != nbgrader_utils.compute_checksum(cell):
                        stale.append(gid)
                except KeyError:
                    stale.append(gid)
    return stale


def nbgrader_env(scratch: Path | None = None) -> dict[str, str]:
    """Environment for nbgrader subprocesses (venv on PATH, this package importable)."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    package_root = str(sandbox.grading_package_dir().parent)
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if scratch is not None:
        env["JUPYTER_PATH"] = str(scratch / "jupyter")
        env["JUPYTER_RUNTIME_DIR"] = str(scratch / "runtime")
        env["TMPDIR"] = str(scratch / "tmp")  # what a killed nbgrader leaves behind goes with the scratch
    return env


def nbgrader_command(*args: str) -> list[str]:
    """``nbgrader`` run with this interpreter."""
    return [sys.executable, "-m", "nbgrader", *args]


# Run in a subprocess (the course config is code; it must not change this process): load the
# configuration like ``nbgrader`` does (its config file search path, the working directory's
# nbgrader_config.py last) but raise instead of logging "Exception while loading config file" and
# going on with the defaults.  Prints JSON: {"error": ...} or the autograde preprocessors.
_CONFIG_PROBE = r"""
import json, sys, traceback
try:
    from nbgrader.apps.autogradeapp import AutogradeApp
    from traitlets.utils.importstring import import_item

    app = AutogradeApp()
    app.raise_config_file_errors = True
    app.load_config_file()
    config = app.config
    if "Autograde" in config and "autograde_preprocessors" in config.Autograde:
        raw = list(config.Autograde.autograde_preprocessors)
    else:
        raw = None
    names, unimportable = [], []
    for item in raw or []:
        if isinstance(item, str):
            name = item
            try:
                import_item(item)
            except Exception as exc:
                unimportable.append(f"{item}: {type(exc).__name__}: {exc}")
        else:
            name = f"{item.__module__}.{item.__qualname__}"
        names.append(name)
    print(json.dumps({"preprocessors": None if raw is None else names, "unimportable": unimportable}))
except BaseException:
    print(json.dumps({"error": traceback.format_exc(limit=-3)}))
"""


def check_course_config(course: Path) -> list[str]:
    """Load the course configuration like nbgrader does; raise UsageError unless it is usable.

    nbgrader logs a config file that fails to load and grades with its defaults, which would
    silently drop the sealed re-check (``SealedVerdict``) and the dead-kernel tolerant execution
    (``TolerantExecute``).  Returns the autograde preprocessors.
    """
    config = course / "nbgrader_config.py"
    if not config.is_file():
        raise UsageError(f"no nbgrader_config.py in {course}: nbgrader would grade without the sealed re-check")
    try:
        proc = subprocess.run([sys.executable, "-c", _CONFIG_PROBE], cwd=course, env=nbgrader_env(),
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise UsageError(f"loading {config} took more than {exc.timeout:g} s") from exc
    lines = proc.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        report = {}
    if "error" in report or ("preprocessors" not in report):
        detail = report.get("error") or (proc.stdout + proc.stderr).strip() or f"exit status {proc.returncode}"
        raise UsageError(f"the nbgrader configuration does not load ({config}); nbgrader would grade with "
                         f"its defaults, without the sealed re-check:\n{detail.rstrip()}")
    preprocessors = report["preprocessors"]
    if preprocessors is None:
        raise UsageError(f"{config} does not set c.Autograde.autograde_preprocessors; nbgrader's defaults "
                         f"have no sealed re-check (need {', '.join(REQUIRED_PREPROCESSORS)})")
    missing = [name for name in REQUIRED_PREPROCESSORS if name not in preprocessors]
    if missing:
        raise UsageError(f"c.Autograde.autograde_preprocessors (as loaded from {config}) lacks "
                         f"{', '.join(missing)}; refusing to grade without them")
    if report.get("unimportable"):
        raise UsageError("autograde preprocessors that cannot be imported: " + "; ".join(report["unimportable"]))
    return preprocessors


def ensure_gradebook(course: Path, assignment: str, regenerate: bool) -> list[str]:
    """Make sure the course gradebook knows the assignment; return its notebook names."""
    notebooks = [] if regenerate else assignment_notebooks(course / "gradebook.db", assignment)
    if notebooks:
        return notebooks
    if not (course / "source" / assignment).is_dir():
        raise UsageError(f"no source/{assignment} in {course}")
    print(f"Running nbgrader generate_assignment {assignment} --force in {course}")
    result = subprocess.run(
        nbgrader_command("generate_assignment", assignment, "--force"),
        cwd=course,
        env=nbgrader_env(),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise UsageError(f"nbgrader generate_assignment failed:\n{result.stdout}{result.stderr}")
    notebooks = assignment_notebooks(course / "gradebook.db", assignment)
    if not notebooks:
        raise UsageError(f"the gradebook in {course} has no notebooks for {assignment}")
    return notebooks


def build_scratch(course: Path, assignment: str, scratch: Path, *, sandboxed: bool) -> None:
    """Create the scratch course: config, gradebook copy, non-notebook source files, kernelspec."""
    config = course / "nbgrader_config.py"
    if config.is_file():
        shutil.copy2(config, scratch / "nbgrader_config.py")
    shutil.copy2(course / "gradebook.db", scratch / "gradebook.db")
    source = course / "source" / assignment
    dest = scratch / "source" / assignment
    dest.mkdir(parents=True)
    if source.is_dir():
        copy_tree(source, dest, skip_suffixes=(".ipynb",))
    for name in ("submitted", "autograded", "feedback", "runtime", "logs", "tmp"):
        (scratch / name).mkdir(exist_ok=True)
    if sandboxed:
        sandbox.write_sealed_kernelspec(scratch / "jupyter")


# --------------------------------------------------------------------------- submissions


def copy_tree(
    src: Path,
    dest: Path,
    *,
    skip_suffixes: Sequence[str] = (),
    max_bytes: int = MAX_SUBMISSION_BYTES,
    max_files: int = MAX_SUBMISSION_FILES,
) -> int:
    """Copy regular files and directories (never symlinks); return bytes copied.

    Symlinks are skipped because nbgrader copies files by following links, so
    a submitted link could pull files from the grader's disk into the
    kernel's directory.
    """
    total = 0
    count = 0
    for root, dirs, files in os.walk(src):
        root_path = Path(root)
        dirs[:] = [d for d in dirs if d not in SKIP_NAMES and not (root_path / d).is_symlink()]
        target = dest / root_path.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            path = root_path / name
            if name in SKIP_NAMES or path.is_symlink() or not path.is_file():
                continue
            if any(name.endswith(suffix) for suffix in skip_suffixes):
                continue
            total += path.stat().st_size
            count += 1
            if total > max_bytes or count > max_files:
                raise UsageError(f"{src} is too large (max {max_bytes} bytes, {max_files} files)")
            shutil.copy2(path, target / name)
    return total


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a zip file, refusing absolute paths, ``..`` and oversized content."""
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if sum(m.file_size for m in members) > MAX_SUBMISSION_BYTES or len(members) > MAX_SUBMISSION_FILES:
            raise UsageError(f"{archive} is too large")
        for member in members:
            parts = Path(member.filename).parts
            if member.filename.startswith("/") or ".." in parts or any(p in SKIP_NAMES for p in parts):
                continue
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as fin, open(target, "wb") as fout:
                shutil.copyfileobj(fin, fout)


def has_notebooks(path: Path) -> bool:
    """True if ``path`` is a directory with at least one ``.ipynb`` file in it."""
    return path.is_dir() and any(p.suffix == ".ipynb" for p in path.iterdir() if p.is_file())


def submission_dir(path: Path, assignment: str) -> Path | None:
    """The directory holding one student's notebooks, looking one or two levels down."""
    candidates = [path / assignment, path]
    subdirs = [p for p in path.iterdir() if p.is_dir() and p.name not in SKIP_NAMES] if path.is_dir() else []
    files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else []
    if len(subdirs) == 1 and not files:
        candidates += [subdirs[0] / assignment, subdirs[0]]
    for candidate in candidates:
        if has_notebooks(candidate):
            return candidate
    return None


def check_student_id(student: str, origin: Path) -> str:
    """Return ``student`` if it is usable as an nbgrader student id (and a directory name)."""
    if not STUDENT_ID.match(student):
        raise UsageError(f"cannot use {student!r} (from {origin}) as a student id")
    return student


def collect_submissions(paths: Iterable[Path], assignment: str, unpack_dir: Path) -> list[Submission]:
    """Turn command-line paths into submissions (zips are extracted into ``unpack_dir``)."""
    found: list[Submission] = []
    for path in paths:
        if path.suffix == ".zip" and path.is_file():
            found.append(zip_submission(path, assignment, unpack_dir))
        elif path.suffix == ".ipynb" and path.is_file():
            found.append(Submission(check_student_id(path.stem, path), path.parent, notebook_file=path))
        elif path.is_dir():
            found.extend(directory_submissions(path.resolve(), assignment))
        else:
            raise UsageError(f"not a zip, notebook or directory: {path}")
    students = [s.student for s in found]
    duplicates = sorted({s for s in students if students.count(s) > 1})
    if duplicates:
        raise UsageError(f"more than one submission for: {', '.join(duplicates)}")
    return found


def zip_submission(path: Path, assignment: str, unpack_dir: Path) -> Submission:
    """Extract one student's zip file; problems are recorded, not raised."""
    student = check_student_id(path.stem, path)
    target = unpack_dir / student
    try:
        safe_extract(path, target)
    except (zipfile.BadZipFile, UsageError, OSError) as exc:
        return Submission(student, None, problem=f"cannot extract {path.name}: {exc}")
    folder = submission_dir(target, assignment)
    if folder is None:
        return Submission(student, None, problem=f"no notebooks in {path.name}")
    return Submission(student, folder)


def directory_submissions(path: Path, assignment: str) -> list[Submission]:
    """One student's directory, or a directory of student directories."""
    if has_notebooks(path):
        student = path.parent.name if path.name == assignment else path.name
        return [Submission(check_student_id(student, path), path)]
    if has_notebooks(path / assignment):
        return [Submission(check_student_id(path.name, path), path / assignment)]
    found = []
    for child in sorted(p for p in path.iterdir() if p.is_dir() and p.name not in SKIP_NAMES):
        folder = submission_dir(child, assignment)
        if folder is not None:
            found.append(Submission(check_student_id(child.name, child), folder))
    if not found:
        raise UsageError(f"no submissions found in {path}")
    return found


def stage_submission(
    sub: Submission, scratch: Path, assignment: str, notebooks: Sequence[str], notes: list[str] | None = None
) -> Path:
    """Copy a submission into ``scratch/submitted/<student>/<assignment>/``.

    For a one-notebook assignment whose notebook is missing from the folder, the folder's only
    notebook (``embeddings (1).ipynb``, a second download) is staged under the expected name
    (nbgrader would skip it as an unknown notebook); a note saying so is appended to ``notes``.
    """
    if sub.path is None:
        raise UsageError(sub.problem or "nothing to grade")
    dest = scratch / "submitted" / sub.student / assignment
    dest.mkdir(parents=True)
    if sub.notebook_file is not None:
        if len(notebooks) != 1:
            raise UsageError(f"{sub.notebook_file}: a single notebook only works for one-notebook assignments")
        shutil.copy2(sub.notebook_file, dest / f"{notebooks[0]}.ipynb")
    else:
        copy_tree(sub.path, dest)
        note = adopt_renamed_notebook(dest, notebooks)
        if note and notes is not None:
            notes.append(note)
    return dest


def adopt_renamed_notebook(folder: Path, notebooks: Sequence[str]) -> str | None:
    """Rename the only notebook of ``folder`` to the one expected notebook; return a note or None."""
    if len(notebooks) != 1:
        return None
    expected = folder / f"{notebooks[0]}.ipynb"
    if expected.exists() or expected.is_symlink():
        return None
    found = [p for p in folder.iterdir() if p.suffix == ".ipynb" and p.is_file() and not p.is_symlink()]
    if len(found) != 1:
        return None
    found[0].rename(expected)
    return f"graded {found[0].name!r} as {expected.name}"


# --------------------------------------------------------------------------- running nbgrader


def run_bounded(cmd: Sequence[str], *, cwd: Path, env: dict[str, str], timeout: float, log: Path) -> int | None:
    """Run a command with output to ``log``; kill its whole process group after ``timeout``.

    Returns the exit code, or ``None`` if the command was killed.
    """
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            out.write(f"\n*** killed after {timeout:.0f} s ***\n".encode())
            return None


def scratch_args(scratch: Path) -> list[str]:
    """Options pointing nbgrader at the scratch course and its gradebook, whatever the config says."""
    return [f"--CourseDirectory.root={scratch}", f"--CourseDirectory.db_url={gradebook_url(scratch / 'gradebook.db')}"]


def autograde_args(assignment: str, student: str, scratch: Path, *, sandboxed: bool) -> list[str]:
    """Arguments of ``nbgrader autograde`` for one student in the scratch course."""
    args = ["autograde", assignment, "--student", student, "--force", *scratch_args(scratch)]
    if sandboxed:
        args.append(f"--Execute.kernel_name={sandbox.SEALED_KERNEL_NAME}")
    else:
        args.append("--SealedVerdict.sandbox=False")
    return args


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


def autograded_ok(scratch: Path, assignment: str, student: str, notebooks: Sequence[str]) -> bool:
    """True if nbgrader wrote every submitted notebook to ``autograded/``."""
    submitted = scratch / "submitted" / student / assignment
    autograded = scratch / "autograded" / student / assignment
    expected = [n for n in notebooks if (submitted / f"{n}.ipynb").exists()]
    return all((autograded / f"{n}.ipynb").exists() for n in expected)


def grade_one(
    sub: Submission, scratch: Path, assignment: str, notebooks: Sequence[str], *, sandboxed: bool, timeout: float
) -> StudentResult:
    """Stage and autograde one submission; never raises for problems of the submission."""
    log = scratch / "logs" / f"{sub.student}.log"
    start = time.monotonic()
    notes: list[str] = []
    try:
        if sub.problem is not None:
            raise UsageError(sub.problem)
        stage_submission(sub, scratch, assignment, notebooks, notes)
    except (UsageError, OSError) as exc:
        log.write_text(f"could not stage submission: {exc}\n")
        return StudentResult(sub.student, "error", 0.0, log=log, note=str(exc))
    if notes:
        with open(log, "a") as out:
            out.writelines(f"{note}\n" for note in notes)
    note = "; ".join(notes)
    code = run_bounded(
        nbgrader_command(*autograde_args(assignment, sub.student, scratch, sandboxed=sandboxed)),
        cwd=scratch, env=nbgrader_env(scratch), timeout=timeout, log=log,
    )
    seconds = time.monotonic() - start
    partial = scratch / "autograded" / sub.student / assignment
    if code is None:
        shutil.rmtree(partial, ignore_errors=True)  # half-written: no feedback, nothing copied out
        return StudentResult(sub.student, "timeout", seconds, log=log,
                             note=join_notes(note, f"killed after {timeout:g} s"))
    result = read_result(scratch / "gradebook.db", assignment, sub.student)
    if code != 0 or result is None or not autograded_ok(scratch, assignment, sub.student, notebooks):
        shutil.rmtree(partial, ignore_errors=True)
        return StudentResult(sub.student, "error", seconds, log=log,
                             note=join_notes(note, f"nbgrader failed, see {log.name}"))
    score, max_score, failed = result
    try:
        prune_autograded(partial, notebooks)
    except OSError as exc:
        with open(log, "a") as out:
            out.write(f"could not remove the files left next to the autograded notebooks: {exc}\n")
    return StudentResult(sub.student, "graded", seconds, score, max_score, failed, log=log, note=note)


def prune_autograded(folder: Path, notebooks: Sequence[str]) -> None:
    """Delete everything but the notebooks (and nbgrader's EXCHANGE_FILES) from a student's autograded folder.

    Nothing else is copied out, and ``generate_feedback`` would copy every file the student's
    code left there (20,000 files take it minutes) into the feedback folder.
    """
    keep = {f"{name}.ipynb" for name in notebooks} | set(EXCHANGE_FILES)
    for path in list(folder.iterdir()):
        if path.name in keep and path.is_file() and not path.is_symlink():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def join_notes(*notes: str) -> str:
    """Non-empty notes joined with ``; ``."""
    return "; ".join(n for n in notes if n)


def run_step(args: Sequence[str], scratch: Path, log: Path) -> bool:
    """Run one nbgrader command in the scratch course; True on success."""
    code = run_bounded(nbgrader_command(*args), cwd=scratch, env=nbgrader_env(scratch), timeout=3600, log=log)
    return code == 0


# --------------------------------------------------------------------------- results


def copy_bounded(src: Path, dest: Path, budget: int) -> int:
    """Copy regular file ``src`` to ``dest`` if it fits in ``budget`` bytes; return its size.

    Raises UsageError (nothing is written) if it does not fit, OSError if copying fails.
    """
    if src.is_symlink() or not src.is_file():
        raise UsageError(f"{src.name} is not a regular file")
    size = src.stat().st_size
    if size > budget:
        raise UsageError(f"{src.name} is too large to copy ({size} bytes, {budget} left of {MAX_RESULT_BYTES})")
    shutil.copy2(src, dest)
    return size


def copy_student_results(scratch: Path, out: Path, assignment: str, student: str, notebooks: Sequence[str]) -> None:
    """Copy one student's autograded notebooks and feedback pages to ``out`` (and nbgrader's EXCHANGE_FILES).

    What the student's code left next to its notebook (data files, thousands of files, gigabytes)
    stays in the scratch course.  The previous results of the student are replaced.  Raises
    UsageError or OSError for this student only.
    """
    budget = MAX_RESULT_BYTES
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
        for file_name in [*(f"{name}{suffix}" for name in notebooks), *EXCHANGE_FILES]:
            path = src / file_name
            if path.exists() or path.is_symlink():
                budget -= copy_bounded(path, dest / path.name, budget)


def copy_log(src: Path, dest: Path, max_bytes: int = MAX_LOG_BYTES) -> None:
    """Copy a log file, cut after ``max_bytes`` bytes."""
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        fout.write(fin.read(max_bytes))
        if fin.read(1):
            fout.write(f"\n*** log cut after {max_bytes} bytes ***\n".encode())
    shutil.copystat(src, dest)


def copy_results(
    scratch: Path, out: Path, assignment: str, results: Sequence[StudentResult], *, course_gradebook: Path,
    gradebook_mtime: float, to_course: bool, notebooks: Sequence[str] = (),
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
            copy_student_results(scratch, out, assignment, result.student, names)
        except (UsageError, OSError, shutil.Error) as exc:
            result.copy_failed = True
            result.note = join_notes(result.note, f"results not copied: {exc}")
            print(f"warning: results of {result.student} not copied to {out}: {exc}")
    logs = out / "grading_logs" / assignment
    logs.mkdir(parents=True, exist_ok=True)
    for log in (scratch / "logs").glob("*.log"):
        try:
            copy_log(log, logs / log.name)
        except OSError as exc:
            print(f"warning: log {log.name} not copied: {exc}")
    target = out / "gradebook.db"
    if to_course:
        if course_gradebook.stat().st_mtime != gradebook_mtime:
            target = out / "gradebook.db.new"
            print(f"warning: {course_gradebook} changed while grading; new gradebook written to {target}")
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


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m grading.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("--course", type=Path, default=Path("."), help="course root (default: .)")
    parser.add_argument("--assignment", required=True, help="assignment id, e.g. 12_embeddings")
    parser.add_argument("submissions", nargs="+", type=Path, help="zip files, notebooks or directories")
    parser.add_argument("--out", type=Path, default=None, help="where results go (default: the course)")
    parser.add_argument("--feedback", action="store_true", help="also run nbgrader generate_feedback")
    parser.add_argument("--export", type=Path, default=None, metavar="CSV", help="write grades CSV here")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per submission")
    parser.add_argument("--regenerate", action="store_true", help="run generate_assignment even if graded before")
    parser.add_argument("--no-sandbox", action="store_true", help="development only: run kernels unsandboxed")
    parser.add_argument("--keep-scratch", action="store_true", help="keep the scratch course for inspection")
    return parser.parse_args(argv)


def post_steps(args: argparse.Namespace, scratch: Path, any_graded: bool) -> list[str]:
    """Run generate_feedback and export as asked; return warnings."""
    warnings = []
    step_log = scratch / "logs" / "_steps.log"
    if args.feedback and any_graded:
        if not run_step(["generate_feedback", args.assignment, "--force", *scratch_args(scratch)], scratch, step_log):
            warnings.append("generate_feedback failed, see _steps.log in the logs")
    if args.export:
        csv = scratch / "grades.csv"
        export_args = ["export", f"--to={csv}", f"--assignment={args.assignment}", *scratch_args(scratch)]
        if run_step(export_args, scratch, step_log) and csv.exists():
            args.export.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(csv, args.export)
        else:
            warnings.append("export failed, see _steps.log in the logs")
    return warnings


def print_summary(args: argparse.Namespace, out: Path, gradebook: Path, results: Sequence[StudentResult]) -> None:
    """Print the score table and where the results are."""
    print()
    print(format_table(results))
    print()
    print(f"autograded notebooks: {out / 'autograded'}")
    if args.feedback:
        print(f"feedback:             {out / 'feedback'}")
    if args.export:
        print(f"grades CSV:           {args.export.resolve()}")
    print(f"gradebook:            {gradebook}")
    print(f"logs:                 {out / 'grading_logs' / args.assignment}")


def prepare(args: argparse.Namespace, course: Path, scratch: Path) -> tuple[list[str], list[Submission], float]:
    """Check the config and gradebook, build the scratch course, collect submissions (raises UsageError)."""
    check_course_config(course)
    notebooks = ensure_gradebook(course, args.assignment, args.regenerate)
    stale = stale_test_cells(course, args.assignment, notebooks)
    if stale:
        print(f"warning: tests changed since generate_assignment (grading uses the old version): "
              f"{', '.join(stale)}; pass --regenerate to use the current source")
    gradebook_mtime = (course / "gradebook.db").stat().st_mtime
    build_scratch(course, args.assignment, scratch, sandboxed=not args.no_sandbox)
    submissions = collect_submissions(args.submissions, args.assignment, scratch / "unpacked")
    return notebooks, submissions, gradebook_mtime


def main(argv: Sequence[str] | None = None) -> int:
    """Grade the submissions; see the module docstring."""
    args = parse_args(argv)
    course = args.course.resolve()
    if not args.no_sandbox and not sandbox.bwrap_available():
        print("bubblewrap (bwrap) is not usable here; install it or pass --no-sandbox (development only)",
              file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="nbgrader-sealed-"))
    try:
        try:
            notebooks, submissions, gradebook_mtime = prepare(args, course, scratch)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        results = []
        for sub in submissions:
            print(f"grading {sub.student} ...", flush=True)
            results.append(grade_one(sub, scratch, args.assignment, notebooks,
                                     sandboxed=not args.no_sandbox, timeout=args.timeout))
        graded = [r for r in results if r.status == "graded"]
        for warning in post_steps(args, scratch, bool(graded)):
            print(f"warning: {warning}")
        out = (args.out or course).resolve()
        try:
            gradebook = copy_results(
                scratch, out, args.assignment, results, course_gradebook=course / "gradebook.db",
                gradebook_mtime=gradebook_mtime, to_course=args.out is None, notebooks=notebooks,
            )
        except (OSError, shutil.Error, UsageError) as exc:
            args.keep_scratch = True  # the grades exist only there now
            print(f"error: results could not be copied to {out}: {exc}", file=sys.stderr)
            print()
            print(format_table(results))
            return 1
        print_summary(args, out, gradebook, results)
        complete = [r for r in graded if not r.copy_failed]
        return 0 if len(complete) == len(results) else 1
    finally:
        if args.keep_scratch:
            print(f"scratch course kept at {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
