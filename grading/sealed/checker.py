"""Sealed re-check of an autograded notebook.

Student code (answer, setup and student-added cells) runs in a separate WORKER process; each test
cell runs here, in a fresh :class:`~grading.sealed.namespace.TestNamespace` that reads, binds and
deletes the student's names in the worker as a kernel would, with student objects as proxies
(:mod:`grading.sealed.proxy`). Only plain data crosses the process boundary, so nothing the student
does (patching numpy or builtins, lying ``__eq__``, frame inspection, custom exception handlers)
can influence how the test's assertions are evaluated.

Time is bounded everywhere: every read from the worker waits on ``poll`` with a deadline, each
test cell gets ``cell_timeout`` seconds for its requests, each (re)start of the worker including
replaying student cells gets ``startup_timeout``. A student cell that hangs or kills the worker
is skipped from then on (as if it had raised), so the number of restarts is bounded too.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import enum
import fcntl
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from grading.hidden_region import DEFAULT_REGION, HiddenRegion
from grading.memory_bound import MemoryBound, TreeBound, kill_tree
from grading.pdeathsig import command_prefix
from grading.sandbox import sandbox_env
from grading.notebook import (cell_source, cells_with_role, execution_plan, student_code_cells, test_cells,
                              test_grade_id)
from grading.sealed import freeze, protocol
from grading.sealed.protocol import SealedFailure, WorkerCrashed, WorkerProtocolError, WorkerTimeout
from grading.sealed.namespace import TestNamespace
from grading.sealed.proxy import RemoteObject, handle_of, session_of
from grading.sealed.worker import BOOTSTRAP

log = logging.getLogger(__name__)

MESSAGE_CHARS = 2000
PIPE_BYTES = 1 << 20
POLL_SLICE = 0.2
GRADING_ROOT = Path(__file__).resolve().parents[2]  # directory that contains the grading package


class VerdictStatus(enum.Enum):
    """How the sealed re-check of one test cell ended."""

    PASSED = "passed"                  # the test code completed without raising
    FAILED = "failed"                  # it raised (student code, a test assertion, a worker failure)
    NOT_RUN = "not run"                # not run because the sealed machinery failed before it
    INFRASTRUCTURE = "infrastructure"  # the sealed machinery itself failed (the worker did not start)


@dataclass(frozen=True)
class Verdict:
    """Outcome of one test cell in the sealed re-check.

    The status is set by the checker alone: student code can only make a test cell raise (FAILED),
    never produce NOT_RUN or INFRASTRUCTURE, whatever its exceptions say.
    """

    grade_id: str
    status: VerdictStatus
    ename: str = ""       # class name of the exception that failed the cell ("" when passed)
    detail: str = ""      # its message on one line, or the (redacted) failing line when it had none
    line: int | None = None  # line of the test cell where it failed, when known
    hidden: bool = False  # whether that line lies in the hidden-test region
    seconds: float = 0.0  # wall-clock time of the test cell (excluding replay of student cells)

    @property
    def passed(self) -> bool:
        return self.status is VerdictStatus.PASSED

    @property
    def message(self) -> str:
        """One line for people: ``"Ename: detail"`` (``""`` when passed)."""
        if self.passed:
            return ""
        return f"{self.ename}: {self.detail}" if self.detail else self.ename


class WorkerStartError(Exception):
    """The worker could not be started (bad interpreter, sandbox or import failure)."""


# ----------------------------------------------------------------------------------- low level
def worker_command(prefix: Sequence[str], python: str, read_fd: int, write_fd: int) -> list[str]:
    """The argv that starts a worker (see :mod:`grading.sealed.worker` for what it needs)."""
    return [*prefix, python, "-I", "-c", BOOTSTRAP, str(GRADING_ROOT), str(read_fd), str(write_fd)]


def worker_env(workdir: Path, tmp: Path) -> dict[str, str]:
    """Environment of the worker: the sandbox's builder (nothing secret from the caller is passed
    on), with ``tmp`` as its private temporary directory and ``HOME`` in it. A bubblewrap prefix
    replaces it with the same policy inside the sandbox (its own ``/tmp``)."""
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    return sandbox_env(workdir, tmp=tmp, lib_dir=GRADING_ROOT)


def _enlarge_pipe(fd: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _exit_description(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class WorkerSession:
    """One worker process plus the request/response channel to it."""

    def __init__(self, prefix: Sequence[str], python: str, workdir: Path,
                 max_frame_bytes: int = protocol.MAX_FRAME_BYTES, memory_bound: MemoryBound | None = None):
        self.prefix = list(prefix)
        self.max_frame_bytes = max_frame_bytes
        self.tree: TreeBound | None = None if memory_bound is None else memory_bound.tree()
        self.freezer: freeze.TreeFreezer | None = None
        self.python = python
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.wfd = -1
        self.rfd = -1
        self.epoch = 0
        self.deadline = 0.0
        self.budget = 0.0
        self.failure: SealedFailure | None = None
        self.channel: protocol.FrameChannel | None = None
        self._stderr: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float) -> None:
        """Spawn the worker and wait (at most ``timeout`` s) for its ready message."""
        c2w_r, c2w_w = os.pipe()
        w2c_r, w2c_w = os.pipe()
        for fd in (c2w_r, c2w_w, w2c_r, w2c_w):
            _enlarge_pipe(fd)
        self._stderr = tempfile.TemporaryFile()
        self._tmp = tempfile.TemporaryDirectory(prefix="sealed-tmp-", ignore_cleanup_errors=True)
        try:
            join = [] if self.tree is None else self.tree.prefix()  # its own cgroup, joined before the sandbox
            self.proc = subprocess.Popen(
                [*command_prefix(), *join, *worker_command(self.prefix, self.python, c2w_r, w2c_w)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
                pass_fds=(c2w_r, w2c_w), cwd=self.workdir, env=worker_env(self.workdir, Path(self._tmp.name)),
                start_new_session=True)
        except OSError as exc:
            for fd in (c2w_r, c2w_w, w2c_r, w2c_w):
                os.close(fd)
            self.kill()
            raise WorkerStartError(f"cannot spawn the worker: {exc}") from None
        os.close(c2w_r)
        os.close(w2c_w)
        self.freezer = freeze.TreeFreezer(self.proc.pid)
        if self.tree is not None:
            self.tree.started(self.proc.pid)
        self.wfd, self.rfd = c2w_w, w2c_r
        self.channel = protocol.FrameChannel(self.rfd, self.wfd, wait=self._wait,
                                             max_frame_bytes=self.max_frame_bytes)
        os.set_blocking(self.wfd, False)
        os.set_blocking(self.rfd, False)
        self.set_budget(timeout)
        try:
            hello, _ = self._read_frame()
        except SealedFailure as exc:
            reason = str(exc)
            if isinstance(exc, WorkerCrashed):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.5)
                reason = f"it exited, {_exit_description(self.proc.returncode)}"
            excerpt = self._stderr_excerpt()
            self.kill()
            raise WorkerStartError(f"the worker did not start ({reason}){excerpt}") from None
        if hello.get("ok") != "ready":
            self.kill()
            raise WorkerStartError("the worker sent an unexpected greeting")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.failure is None

    def kill(self) -> None:
        """Kill the worker's whole process group (and its cgroup) and release the channel."""
        if self.freezer is not None:
            self.freezer.forget()
        if self.proc is not None:
            if self.proc.poll() is None:  # not reaped yet, so the pid is still the worker's
                kill_tree(self.proc.pid)  # processes in sessions of their own too, stopped ones as well
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        if self.tree is not None:
            self.tree.close()
        for fd in (self.wfd, self.rfd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.wfd = self.rfd = -1
        self.channel = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def close(self) -> None:
        """Ask the worker to exit (end of file on its channel), then make sure it is gone."""
        if self.wfd >= 0:
            os.close(self.wfd)
            self.wfd = -1
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=1)
        self.kill()

    def _stderr_excerpt(self) -> str:
        if self._stderr is None:
            return ""
        with contextlib.suppress(OSError):
            self._stderr.seek(0)
            text = self._stderr.read(4000).decode("utf-8", "replace").strip()
            if text:
                return ": " + " | ".join(line for line in text.splitlines()[-5:])
        return ""

    # -- time budget ----------------------------------------------------------------------
    def set_budget(self, seconds: float) -> None:
        """Allow ``seconds`` from now for all following requests (until the next call)."""
        self.budget = seconds
        self.deadline = time.monotonic() + seconds

    def begin_cell(self, seconds: float) -> None:
        """Start a test cell: fresh time budget, no failure recorded."""
        self.failure = None
        self.set_budget(seconds)

    def end_cell(self) -> None:
        """Forget every handle created during the cell; proxies from it become stale."""
        self.epoch += 1
        self.set_budget(max(self.budget, 5.0))
        self.request("release", {"all": True})

    # -- channel --------------------------------------------------------------------------
    def _fail(self, failure: SealedFailure) -> SealedFailure:
        """Record a worker failure, kill the worker and return the exception to raise."""
        self.failure = failure
        returncode = None
        if self.proc is not None and isinstance(failure, WorkerCrashed):
            with contextlib.suppress(subprocess.TimeoutExpired):
                returncode = self.proc.wait(timeout=0.5)
        self.kill()
        if returncode is not None:
            failure.args = (f"{failure.args[0]} ({_exit_description(returncode)})",)
        return failure

    def _timeout(self) -> WorkerTimeout:
        return WorkerTimeout(f"the code under test timed out after {self.budget:g} s")

    def _crashed(self) -> WorkerCrashed:
        if self.tree is not None and self.tree.exceeded:
            return WorkerCrashed(self.tree.describe())
        return WorkerCrashed("the code under test crashed the process")

    def _wait(self, fd: int, event: int) -> None:
        """Wait until ``fd`` is ready for ``event``, the worker dies, or the deadline passes."""
        poller = select.poll()
        poller.register(fd, event | select.POLLERR | select.POLLHUP)
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout()
            if poller.poll(min(remaining, POLL_SLICE) * 1000):
                return
            if self.proc is None or self.proc.poll() is not None:
                raise self._crashed()

    def _write(self, chunks: list[bytes]) -> None:
        """Write a packed frame (waits with the deadline; a closed pipe means the worker died)."""
        try:
            self._channel().send_chunks(chunks)
        except OSError:
            raise self._crashed() from None

    def _read_frame(self) -> tuple[dict[str, Any], list[memoryview]]:
        try:
            frame = self._channel().recv()
        except protocol.FrameTooLarge:
            raise WorkerProtocolError(
                f"the code under test returned more than {self.max_frame_bytes >> 20} MiB of data") from None
        except protocol.ProtocolError as exc:
            raise WorkerProtocolError(f"malformed reply from the worker: {exc}") from None
        except (protocol.ChannelClosed, OSError):
            raise self._crashed() from None
        if frame is None:
            raise self._crashed()
        return frame

    def _channel(self) -> protocol.FrameChannel:
        if self.channel is None:
            raise self._crashed()
        return self.channel

    # -- values ---------------------------------------------------------------------------
    def _remote(self, ident: int, type_name: str) -> RemoteObject:
        return RemoteObject(self, ident, type_name, self.epoch)

    def _encode_other(self, obj: Any, encoder: protocol.Encoder) -> dict[str, Any]:
        if isinstance(obj, RemoteObject):
            if session_of(obj) is not self:
                raise RuntimeError(f"{obj!r} comes from an earlier worker process")
            return {"t": "h", "id": handle_of(obj), "type": ""}
        if isinstance(obj, np.ndarray) and obj.dtype.kind in protocol.ARRAY_KINDS:
            return encoder.encode(np.array(obj, copy=True).view(np.ndarray))
        raise TypeError(f"cannot pass a {type(obj).__name__} to student code in sealed mode "
                        "(use plain data, numpy arrays or student objects)")

    def _pack(self, op: str, fields: dict[str, Any] | None, values: dict[str, Any] | None) -> list[bytes]:
        if self.failure is not None:
            raise type(self.failure)(*self.failure.args)
        if self.proc is None or self.wfd < 0:
            raise self._fail(self._crashed())
        header: dict[str, Any] = {"op": op, **(fields or {})}
        encoder = protocol.Encoder(lambda obj: self._encode_other(obj, encoder))
        for key, value in (values or {}).items():
            header[key] = encoder.encode(value)
        return protocol.pack_frame(header, encoder.blobs)

    def awake(self) -> contextlib.AbstractContextManager[None]:
        """The worker's tree runs for the block, even inside a speed check that stopped it."""
        return contextlib.nullcontext() if self.freezer is None else self.freezer.running()

    def _exchange(self, frame: list[bytes]) -> tuple[dict[str, Any], list[memoryview]]:
        try:
            self._write(frame)
            return self._read_frame()
        except SealedFailure as failure:
            raise self._fail(failure) from None

    def _result(self, reply: dict[str, Any], blobs: list[memoryview]) -> Any:
        try:
            if "error" in reply:
                error = protocol.exception_from_wire(reply["error"])
            else:
                return protocol.Decoder(blobs, self._remote).decode(reply.get("ok"))
        except protocol.ProtocolError as exc:
            raise self._fail(WorkerProtocolError(f"malformed reply from the worker: {exc}")) from None
        raise error

    def request(self, op: str, fields: dict[str, Any] | None = None,
                values: dict[str, Any] | None = None) -> Any:
        """Send one operation and return its decoded result.

        ``fields`` are JSON-ready (handles, names); ``values`` are encoded with the protocol's
        value encoding. Student exceptions are re-raised as mapped builtins or
        :class:`~grading.sealed.protocol.StudentError`; worker failures raise
        :class:`~grading.sealed.protocol.SealedFailure` subclasses and kill the worker.
        """
        frame = self._pack(op, fields, values)
        with self.awake():
            reply = self._exchange(frame)
        return self._result(*reply)

    def timed_request(self, op: str, fields: dict[str, Any] | None = None,
                      values: dict[str, Any] | None = None) -> tuple[float, Any]:
        """Like :meth:`request`, also returning the wall-clock seconds measured here from the first
        byte of the request written to the last byte of the reply read (the request is encoded
        before and the reply decoded after that window; a worker stopped by a speed check is
        resumed before it opens and stopped again after it closes). Raises exactly as
        :meth:`request`.
        """
        frame = self._pack(op, fields, values)
        with self.awake():
            start = time.perf_counter()
            reply, blobs = self._exchange(frame)
            seconds = time.perf_counter() - start
        return seconds, self._result(reply, blobs)


# --------------------------------------------------------------------------------- formatting
def _failing_line(exc: BaseException, filename: str) -> int | None:
    """Line of the test cell (compiled as ``filename``) in which ``exc`` was raised, if any."""
    lineno = None
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            lineno = tb.tb_lineno
        tb = tb.tb_next
    return lineno


def failed_verdict(grade_id: str, exc: BaseException, source: str, filename: str, seconds: float,
                   region: HiddenRegion = DEFAULT_REGION) -> Verdict:
    """The verdict of a test cell that raised ``exc``.

    The detail is the exception's message on one line; an exception without a message gets the
    failing line of the test cell instead, or :data:`grading.hidden_region.REDACTED` when that line
    lies in the hidden region (the checker holds the source, so it redacts here).
    """
    text = protocol.safe_text(exc, 4 * MESSAGE_CHARS)
    detail = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    line = _failing_line(exc, filename)
    hidden = line is not None and line in region.line_numbers(source)
    if not detail and line is not None:
        detail = region.quote_line(source, line)
    return Verdict(grade_id, VerdictStatus.FAILED, type(exc).__name__[:MESSAGE_CHARS], detail[:MESSAGE_CHARS],
                   line, hidden, seconds)


def _running_line(filename: str) -> int | None:
    """The line of the test cell compiled as ``filename`` that is executing now, if any."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename != filename:
        frame = frame.f_back
    return frame.f_lineno if frame is not None else None


def setup_imports(nb: Mapping[str, Any], setup_grade_ids: Sequence[str]) -> dict[str, Any]:
    """The names the import statements of the setup cells bind, imported in the checker.

    Test cells see these (``np`` of ``import numpy as np``) as the checker's own modules, never the
    student's, whatever the student later binds to the same names. Other statements of the setup
    cells run in the worker only; an import the checker cannot do is left out (the name then
    resolves on the student's side, a module as the checker's own copy when it has one).
    """
    names: dict[str, Any] = {"__builtins__": builtins}
    for _, cell in cells_with_role(nb, {"setup"}, setup_grade_ids=setup_grade_ids):
        try:
            tree = ast.parse(cell_source(cell))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not (
                    isinstance(node, ast.ImportFrom) and (node.level or any(a.name == "*" for a in node.names))):
                with contextlib.suppress(Exception):
                    exec(compile(ast.Module([node], []), "<setup imports>", "exec"), names)
    names.pop("__builtins__", None)
    return names


# ---------------------------------------------------------------------------------- the runner
@contextlib.contextmanager
def _scratch_dir(workdir: str | None) -> Iterator[Path]:
    if workdir is not None:
        path = Path(workdir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="sealed-") as tmp:
            yield Path(tmp)


class _Runner:
    """Walks the notebook: replays student cells in the worker, runs test cells here."""

    def __init__(self, nb: Mapping[str, Any], student_names: Sequence[str], setup_grade_ids: Sequence[str],
                 worker_prefix: Sequence[str], cell_timeout: float, startup_timeout: float,
                 python: str, workdir: Path, region: HiddenRegion = DEFAULT_REGION,
                 max_result_bytes: int = protocol.MAX_FRAME_BYTES, memory_bound: MemoryBound | None = None):
        self.nb = nb
        self.memory_bound = memory_bound
        self.region = region
        self.max_result_bytes = max_result_bytes
        self.student_names = list(student_names)
        self.setup_grade_ids = tuple(setup_grade_ids)
        self.worker_prefix = list(worker_prefix)
        self.cell_timeout = cell_timeout
        self.startup_timeout = startup_timeout
        self.python = python
        self.workdir = workdir
        self.sources = {i: cell_source(c) for i, c in student_code_cells(nb, self.setup_grade_ids)}
        self.instructor = setup_imports(nb, self.setup_grade_ids)
        self.session: WorkerSession | None = None
        self.executed: set[int] = set()
        self.skipped: set[int] = set()

    def run(self) -> dict[str, Verdict]:
        tests = {i: (test_grade_id(i, c), cell_source(c)) for i, c in test_cells(self.nb)}
        verdicts: dict[str, Verdict] = {}
        broken = False
        try:
            for test_index, needed in execution_plan(self.nb, self.setup_grade_ids):
                grade_id, source = tests[test_index]
                if broken:
                    verdicts[grade_id] = Verdict(grade_id, VerdictStatus.NOT_RUN, "WorkerStartError",
                                                 "the sealed worker could not be started for an earlier test")
                    continue
                try:
                    self._prepare(needed)
                except WorkerStartError as exc:
                    broken = True
                    verdicts[grade_id] = Verdict(grade_id, VerdictStatus.INFRASTRUCTURE, "WorkerStartError",
                                                 protocol.safe_text(exc, MESSAGE_CHARS))
                    continue
                verdicts[grade_id] = self._run_test(grade_id, source)
        finally:
            if self.session is not None:
                self.session.close()
                self.session = None
        return verdicts

    def _start(self) -> WorkerSession:
        session = WorkerSession(self.worker_prefix, self.python, self.workdir, self.max_result_bytes,
                                self.memory_bound)
        session.start(self.startup_timeout)
        self.executed = set()
        return session

    def _prepare(self, needed: Sequence[int]) -> None:
        """Make sure the worker is alive and has run every cell in ``needed`` (minus skipped ones)."""
        while True:
            if self.session is None or not self.session.alive():
                if self.session is not None:
                    self.session.kill()
                self.session = None
                self.session = self._start()
            else:
                self.session.set_budget(self.startup_timeout)
            pending = [i for i in needed if i not in self.executed and i not in self.skipped]
            if self._execute(pending):
                return

    def _execute(self, pending: Sequence[int]) -> bool:
        """Run student cells one by one; on a worker failure skip that cell and return False."""
        assert self.session is not None
        for index in pending:
            try:
                self.session.request("exec_cells", None, {"sources": [self.sources[index]]})
            except SealedFailure as failure:
                log.warning("student cell %d skipped in the sealed re-check: %s", index, failure)
                self.skipped.add(index)
                self.session.kill()
                self.session = None
                return False
            except Exception as exc:  # an error reply: the cell still counts as executed
                log.warning("student cell %d: %s", index, protocol.safe_text(exc))
            self.executed.add(index)
        return True

    def _run_test(self, grade_id: str, source: str) -> Verdict:
        session = self.session
        assert session is not None
        filename = f"<sealed test {grade_id}>"
        hidden = frozenset(self.region.line_numbers(source))
        session.begin_cell(self.cell_timeout)
        error: BaseException | None = None
        namespace: dict[str, Any] = {}
        start = time.perf_counter()
        try:
            namespace = TestNamespace(session, preferred=self.student_names, instructor=self.instructor,
                                      hidden_line=lambda: _running_line(filename) in hidden)
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), \
                    contextlib.redirect_stderr(sink), freeze.serving(session.freezer):
                exec(compile(source, filename, "exec"), namespace)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - any exception fails the test
            error = exc
        seconds = time.perf_counter() - start
        dict.clear(namespace)
        if session.failure is not None:
            error = session.failure  # even if the test code swallowed it
        else:
            with contextlib.suppress(SealedFailure):
                session.end_cell()
        if session.failure is not None:
            session.kill()
            self.session = None
        if error is None:
            return Verdict(grade_id, VerdictStatus.PASSED, seconds=seconds)
        return failed_verdict(grade_id, error, source, filename, seconds, self.region)


def run_sealed(nb: Mapping[str, Any], *, student_names: Sequence[str],
               setup_grade_ids: Sequence[str] = ("imports",), worker_prefix: Sequence[str] = (),
               cell_timeout: float = 30.0, startup_timeout: float = 60.0,
               python: str = sys.executable, workdir: str | None = None,
               region: HiddenRegion = DEFAULT_REGION,
               max_result_bytes: int = protocol.MAX_FRAME_BYTES,
               memory_bound: MemoryBound | None = None) -> dict[str, Verdict]:
    """Re-check an autograded notebook with student code sealed in a worker process.

    ``nb`` is the notebook as restored by nbgrader (test cells hold the instructor's code). Student
    code cells (answer, setup, student-added) run in the worker, in notebook order, before the test
    cells that follow them; each test cell runs in this process in a fresh
    :class:`~grading.sealed.namespace.TestNamespace`: names it does not bind are read from the
    student's namespace (builtins and the setup cells' imports excepted, unless listed in
    ``student_names``). A test passes iff its code completes without raising.

    ``worker_prefix`` is prepended to the worker's command line (e.g. a ``bwrap``/``prlimit``
    wrapper; it must keep inherited file descriptors open). ``cell_timeout`` bounds the requests of
    one test cell, ``startup_timeout`` each (re)start of the worker including replay of student
    cells. ``workdir`` is the worker's scratch working directory (a temporary one if ``None``).
    ``region`` holds the hidden-test delimiters: a failing line inside them is never quoted.
    ``max_result_bytes`` bounds one reply of the worker (a larger one fails that test cell).
    ``memory_bound`` bounds the memory (and, in a cgroup, the processes) of the worker's whole
    process tree (:meth:`grading.memory_bound.SubmissionLimits.in_force`; ``None``: per-process
    limits only).

    Returns one :class:`Verdict` per test cell, keyed by ``grade_id``.
    """
    with _scratch_dir(workdir) as scratch:
        runner = _Runner(nb, student_names, setup_grade_ids, worker_prefix, cell_timeout,
                         startup_timeout, python, scratch, region, max_result_bytes, memory_bound)
        return runner.run()
