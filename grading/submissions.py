"""Submission intake: zips, student directories, single notebooks, renamed notebooks, size limits.

A submission is one student's files for one assignment.  Nothing here runs student code; it only
decides what each student handed in and copies it, refusing links, path escapes and oversized
content.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}$")
SKIP_NAMES = {".ipynb_checkpoints", "__pycache__", ".DS_Store", "__MACOSX"}
MAX_SUBMISSION_BYTES = 200 * 1024**2
MAX_SUBMISSION_FILES = 2_000


class UsageError(Exception):
    """Bad arguments or an unusable course or submission."""


@dataclass(frozen=True)
class Limits:
    """Size bounds of a batch (configurable as ``GradeBatch`` traits in ``nbgrader_config.py``)."""

    max_submission_bytes: int = MAX_SUBMISSION_BYTES
    max_submission_files: int = MAX_SUBMISSION_FILES
    max_result_bytes: int = 200 * 1024**2  # autograded notebooks and feedback pages copied out per student
    max_log_bytes: int = 20 * 1024**2  # of each log copied out (the rest is cut)


@dataclass(frozen=True)
class Submission:
    """One student's files for the assignment (a directory holding the notebooks)."""

    student: str
    path: Path | None
    notebook_file: Path | None = None  # a single .ipynb given directly
    problem: str | None = None  # why it cannot be graded (reported, does not stop the batch)


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


def safe_extract(archive: Path, dest: Path, *, max_bytes: int = MAX_SUBMISSION_BYTES,
                 max_files: int = MAX_SUBMISSION_FILES) -> None:
    """Extract a zip file, refusing absolute paths, ``..`` and oversized content."""
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if sum(m.file_size for m in members) > max_bytes or len(members) > max_files:
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


def collect_submissions(paths: Iterable[Path], assignment: str, unpack_dir: Path,
                        limits: Limits = Limits()) -> list[Submission]:
    """Turn command-line paths into submissions (zips are extracted into ``unpack_dir``)."""
    found: list[Submission] = []
    for path in paths:
        if path.suffix == ".zip" and path.is_file():
            found.append(zip_submission(path, assignment, unpack_dir, limits))
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


def zip_submission(path: Path, assignment: str, unpack_dir: Path, limits: Limits = Limits()) -> Submission:
    """Extract one student's zip file; problems are recorded, not raised."""
    student = check_student_id(path.stem, path)
    target = unpack_dir / student
    try:
        safe_extract(path, target, max_bytes=limits.max_submission_bytes, max_files=limits.max_submission_files)
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
    sub: Submission, scratch: Path, assignment: str, notebooks: Sequence[str], notes: list[str] | None = None,
    limits: Limits = Limits(),
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
        copy_tree(sub.path, dest, max_bytes=limits.max_submission_bytes, max_files=limits.max_submission_files)
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


def read_files(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` (as staged, so already bounded): relative path -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def files_hash(files: Mapping[str, bytes]) -> str:
    """SHA-256 over the relative names and contents of a staged submission."""
    digest = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()
