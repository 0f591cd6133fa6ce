"""Run one submission: stage it in the scratch course and autograde it with a wall-clock bound.

nbgrader runs as a subprocess in a session of its own, so a timeout kills it with everything it
started (kernel, sealed checker and workers).  Problems of a submission become a
:class:`StudentResult` with a status; nothing here raises for them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from grading import sandbox
from grading.results import join_notes, read_result
from grading.scratch import nbgrader_command, nbgrader_env, scratch_args
from grading.submissions import Limits, Submission, UsageError, stage_submission

DEFAULT_TIMEOUT = 1800.0


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


def autograde_args(assignment: str, student: str, scratch: Path, *, sandboxed: bool) -> list[str]:
    """Arguments of ``nbgrader autograde`` for one student in the scratch course."""
    args = ["autograde", assignment, "--student", student, "--force", *scratch_args(scratch)]
    if sandboxed:
        args.append(f"--Execute.kernel_name={sandbox.SEALED_KERNEL_NAME}")
    else:
        args.append("--SealedVerdict.sandbox=False")
    return args


def autograded_ok(scratch: Path, assignment: str, student: str, notebooks: Sequence[str]) -> bool:
    """True if nbgrader wrote every submitted notebook to ``autograded/``."""
    submitted = scratch / "submitted" / student / assignment
    autograded = scratch / "autograded" / student / assignment
    expected = [n for n in notebooks if (submitted / f"{n}.ipynb").exists()]
    return all((autograded / f"{n}.ipynb").exists() for n in expected)


def grade_one(
    sub: Submission, scratch: Path, assignment: str, notebooks: Sequence[str], *, sandboxed: bool, timeout: float,
    limits: Limits = Limits(),
) -> StudentResult:
    """Stage and autograde one submission; never raises for problems of the submission."""
    log = scratch / "logs" / f"{sub.student}.log"
    start = time.monotonic()
    notes: list[str] = []
    try:
        if sub.problem is not None:
            raise UsageError(sub.problem)
        stage_submission(sub, scratch, assignment, notebooks, notes, limits)
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
    """Delete everything but the notebooks from a student's autograded folder.

    Nothing else is copied out, and ``generate_feedback`` would copy every file the student's
    code left there (20,000 files take it minutes) into the feedback folder.
    """
    keep = {f"{name}.ipynb" for name in notebooks}
    for path in list(folder.iterdir()):
        if path.name in keep and path.is_file() and not path.is_symlink():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def run_step(args: Sequence[str], scratch: Path, log: Path) -> bool:
    """Run one nbgrader command in the scratch course; True on success."""
    code = run_bounded(nbgrader_command(*args), cwd=scratch, env=nbgrader_env(scratch), timeout=3600, log=log)
    return code == 0
