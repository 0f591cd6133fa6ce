"""Run one submission: in a sealed scratch course of its own, autograde it with a wall-clock bound.

:func:`grade_one` takes a :class:`Job` (plain data: the staged submission's files, the packed
scratch-course template, the limits) and returns a :class:`StudentResult` (plain data: status,
gradebook record, result files, log), so it can run in a thread, a process or on a Dask worker.
nbgrader runs as a subprocess in a session of its own, so a timeout kills it with everything it
started (kernel, sealed checker and workers).  Problems of a submission become a status; nothing
here raises for them.
"""

from __future__ import annotations

import enum
import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from grading import sandbox, warm
from grading.pdeathsig import command_prefix
from grading.results import (EXCHANGE_FILES, CellRun, GradebookRecord, collect_result_files, find_tampering, join_notes, read_log,
                             read_record, graded_cell_runs)
from grading.scratch import gradebook_url, nbgrader_command, nbgrader_env, scratch_args
from grading.submissions import Limits, UsageError

DEFAULT_TIMEOUT = 1800.0


class Status(str, enum.Enum):
    """How grading one submission ended."""

    GRADED = "graded"  # nbgrader graded it (a notebook whose kernel died counts as graded)
    ERROR = "error"  # could not be staged or nbgrader failed on it
    TIMEOUT = "timeout"  # killed after the per-submission bound
    CRASHED = "crashed"  # the grading process died (a signal it did not send itself); retried once

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Job:
    """Everything needed to grade one submission anywhere (no paths of the coordinator's machine)."""

    student: str
    assignment: str
    notebooks: tuple[str, ...]
    files: Mapping[str, bytes]  # the staged submission: path relative to its folder -> content
    template: bytes  # tar of the scratch-course template (config, definition gradebook, data files)
    course_id: str
    sandboxed: bool = True
    timeout: float = DEFAULT_TIMEOUT
    feedback: bool = False
    limits: Limits = Limits()
    content_hash: str = ""
    note: str = ""  # from intake (a renamed notebook)
    released: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # notebook -> locked cell checksums
    warm: bool = False  # run nbgrader as forks of this process's fork server (grading.warm), not cold


@dataclass
class StudentResult:
    """Outcome of grading one submission."""

    student: str
    status: str  # a Status value
    seconds: float
    score: float | None = None
    max_score: float | None = None
    failed_tests: list[str] = field(default_factory=list)
    log_text: bytes = b""
    note: str = ""
    copy_failed: bool = False  # graded, but its notebooks or feedback could not be copied to --out
    record: GradebookRecord | None = None
    files: dict[str, bytes] = field(default_factory=dict)  # "autograded/nb.ipynb", "feedback/nb.html"
    content_hash: str = ""
    attempts: int = 1
    phases: dict[str, float] = field(default_factory=dict)  # seconds: setup, autograde, feedback, collect
    worker: str = ""  # where it ran (host:pid)
    started: float = 0.0  # wall clock (time.time()) when grading began, for the batch record
    resumed: bool = False  # taken from the ledger: graded before from the same files
    tampered: list[str] = field(default_factory=list)  # locked cells edited or deleted (for the report)
    cell_runs: dict[str, CellRun] = field(default_factory=dict)  # test cell grade_id -> kernel run


def run_bounded(cmd: Sequence[str], *, cwd: Path, env: dict[str, str], timeout: float, log: Path,
                warm_start: bool = False) -> int | None:
    """Run a command with output to ``log``; kill its whole process group after ``timeout``.

    Returns the exit code (negative: killed by that signal), or ``None`` if the command was killed
    for taking too long.  With ``warm_start``, a command of this interpreter (``python -m nbgrader``)
    runs as a fork of the fork server (:mod:`grading.warm`), which imported nbgrader already.
    """
    if warm_start and warm.available() and warm.warm_argv(cmd) is not None:
        try:
            return warm.run(cmd, cwd=cwd, env=env, timeout=timeout, log=log)
        except (OSError, EOFError) as exc:  # the fork server could not fork it: run it cold instead
            with open(log, "ab") as out:
                out.write(f"fork server unavailable ({exc!r}); running the command as a new process\n".encode())
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*command_prefix(from_any_thread=True), *cmd], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
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


def pack_tree(folder: Path) -> bytes:
    """An uncompressed tar of a directory's regular files and folders."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink():
                continue
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buffer.getvalue()


def unpack_tree(data: bytes, dest: Path) -> None:
    """Extract a tar made by :func:`pack_tree` (regular files and folders only)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(dest, filter="data")


def write_files(files: Mapping[str, bytes], dest: Path) -> None:
    """Write relative-path -> bytes into ``dest`` (no absolute paths or ``..``)."""
    for rel, data in files.items():
        parts = Path(rel).parts
        if Path(rel).is_absolute() or ".." in parts:
            raise UsageError(f"bad path in submission: {rel!r}")
        target = dest.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def make_scratch(job: Job, work: Path) -> Path:
    """Unpack the template into ``work`` and stage the submission; return the student's log file."""
    unpack_tree(job.template, work)
    for name in ("submitted", "autograded", "feedback", "runtime", "logs", "tmp", "jupyter"):
        (work / name).mkdir(exist_ok=True)
    if job.sandboxed:
        sandbox.write_sealed_kernelspec(work / "jupyter")  # absolute paths of this machine
    write_files(job.files, work / "submitted" / job.student / job.assignment)
    return work / "logs" / f"{job.student}.log"


def worker_name() -> str:
    """host:pid of the process grading."""
    return f"{os.uname().nodename}:{os.getpid()}"


def grade_one(job: Job, work_root: str | None = None) -> StudentResult:
    """Grade one submission in a fresh scratch course under ``work_root`` (default: the temp dir)."""
    start = time.monotonic()
    phases: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix=f"nbgrader-sealed-{job.student}-", dir=work_root))
    result = StudentResult(job.student, Status.ERROR, 0.0, note=job.note, content_hash=job.content_hash,
                           worker=worker_name(), started=time.time())
    log = work / "logs" / f"{job.student}.log"
    try:
        try:
            log = make_scratch(job, work)
        except (UsageError, OSError, tarfile.TarError) as exc:
            (work / "logs").mkdir(exist_ok=True)
            log.write_text(f"could not stage submission: {exc}\n")
            result.note = join_notes(job.note, str(exc))
            return result
        if job.note:
            with open(log, "a") as out:
                out.write(f"{job.note}\n")
        url = gradebook_url(work / "gradebook.db")
        phases["setup"] = time.monotonic() - start
        env = nbgrader_env(work)
        tick = time.monotonic()
        code = run_bounded(nbgrader_command(*autograde_args(job.assignment, job.student, work,
                                                            sandboxed=job.sandboxed)),
                           cwd=work, env=env, timeout=job.timeout, log=log, warm_start=job.warm)
        phases["autograde"] = time.monotonic() - tick
        for name in job.notebooks:  # after nbgrader ran: in the grading command, this imports nbgrader
            result.tampered += find_tampering(job.files.get(f"{name}.ipynb"), job.released.get(name, {}), name)
        partial = work / "autograded" / job.student / job.assignment
        if code is None:
            result.status = Status.TIMEOUT
            result.note = join_notes(job.note, f"killed after {job.timeout:g} s")
            return result
        if code < 0:
            result.status = Status.CRASHED
            result.note = join_notes(job.note, f"nbgrader died of signal {-code}")
            return result
        record = read_record(url, job.course_id, job.assignment, job.student)
        if code != 0 or record is None or not autograded_ok(work, job.assignment, job.student, job.notebooks):
            result.note = join_notes(job.note, f"nbgrader failed, see {log.name}")
            return result
        result.status, result.record = Status.GRADED, record
        for name in job.notebooks:
            result.cell_runs.update(graded_cell_runs(partial / f"{name}.ipynb"))
        try:
            prune_autograded(partial, job.notebooks)
        except OSError as exc:
            with open(log, "a") as out:
                out.write(f"could not remove the files left next to the autograded notebooks: {exc}\n")
        if job.feedback:
            tick = time.monotonic()
            left = max(job.timeout - (tick - start), 1.0)
            args = ["generate_feedback", job.assignment, "--student", job.student, "--force", *scratch_args(work)]
            if run_bounded(nbgrader_command(*args), cwd=work, env=env, timeout=left, log=log,
                           warm_start=job.warm) != 0:
                result.note = join_notes(result.note, f"generate_feedback failed, see {log.name}")
            phases["feedback"] = time.monotonic() - tick
        tick = time.monotonic()
        try:
            result.files = collect_result_files(work, job.assignment, job.student, job.notebooks,
                                                job.limits.max_result_bytes)
        except (UsageError, OSError) as exc:
            result.copy_failed = True
            result.note = join_notes(result.note, f"results not copied: {exc}")
        phases["collect"] = time.monotonic() - tick
        return result
    finally:
        result.log_text = read_log(log, job.limits.max_log_bytes)
        result.seconds = time.monotonic() - start
        result.phases = phases
        shutil.rmtree(work, ignore_errors=True)


def run_step(args: Sequence[str], scratch: Path, log: Path, timeout: float = 3600, warm_start: bool = False) -> bool:
    """Run one nbgrader command in a scratch course; True on success."""
    code = run_bounded(nbgrader_command(*args), cwd=scratch, env=nbgrader_env(scratch), timeout=timeout, log=log,
                       warm_start=warm_start)
    return code == 0
