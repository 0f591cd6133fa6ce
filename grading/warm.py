"""nbgrader commands started warm: forks of one process that imported nbgrader once per batch.

``python -m nbgrader autograde`` spends about 2.5 s of a submission's 9 s importing nbgrader,
nbconvert, jupyter_client and this package before it reads the notebook.  :func:`start` launches
Python's ``forkserver`` (one per grading process) with those modules imported; :func:`run` then
runs a ``python -m MODULE ...`` or ``python -c CODE`` command as a fresh fork of it, with its own
session, working directory, environment and log, exactly as the subprocess would run, minus the
imports.  The fork server never runs a command itself, so nothing a submission does reaches the
next one: every command is a new process forked from the same clean parent, and student code runs
only in the sandboxed kernel and sealed worker below it, as before.  :func:`call` runs a function
of this package the same way and hands back what it returns, so the grading command's own
gradebook work before the first submission needs no nbgrader import of its own.

This module imports only the standard library, so the grading command can start the fork server
before it imports nbgrader itself and both imports run side by side.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import runpy
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from grading.pdeathsig import die_with_parent

T = TypeVar("T")

# What a warm command would otherwise import itself (nbgrader's apps, converters and preprocessors,
# the grading preprocessors and sealed checker, nbconvert's exporters, the kernel client), and last
# the first-use work every command would repeat (grading.warm_prime).
PRELOAD = (
    "grading.warm", "nbgrader.apps.nbgraderapp", "nbgrader.converters", "nbgrader.preprocessors", "nbgrader.api",
    "nbconvert.exporters", "nbconvert.preprocessors", "nbclient", "jupyter_client.manager",
    "jupyter_client.provisioning", "grading.preprocessors", "grading.sealed.checker", "grading.batch",
    "grading.kernel_provisioner", "grading.warm_prime",
)
# Optional modules that packages in the grading environment import if installed and grading never
# uses: rfc3987-syntax is jsonschema's checker of the "iri" format (installed for jupyter_events'
# event schemas); it compiles a Lark grammar at import, 1.5 s of the 2.6 s nbgrader's import takes.
# nbformat validates notebooks without format checkers, so nothing graded depends on it.
UNUSED_OPTIONAL = ("rfc3987_syntax",)
_SERVER_ENV = "GRADING_WARM_SERVER"  # set while the fork server starts: it skips UNUSED_OPTIONAL too
_IMPORTED_IN = os.getpid()  # in the fork server: its own pid, the parent of every command it forks
_LOCK = threading.Lock()
_started = False


def skip_unused_imports() -> None:
    """Make :data:`UNUSED_OPTIONAL` look absent to this process (call before anything imports them)."""
    for name in UNUSED_OPTIONAL:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "import name" raises ImportError


if os.environ.get(_SERVER_ENV):  # this is the fork server, importing PRELOAD (grading.warm first)
    skip_unused_imports()
    gc.disable()  # no collections while importing (15% of the imports' CPU); grading.warm_prime re-enables


def available() -> bool:
    """True where commands can be forked from a fork server (Linux, macOS)."""
    return "forkserver" in multiprocessing.get_all_start_methods()


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[1])


def start() -> bool:
    """Start this process's fork server (once; later calls return at once). False if unavailable.

    The fork server is a fresh interpreter with :data:`PRELOAD` imported; it ends when this
    process does, and the commands forked from it are killed then (``PR_SET_PDEATHSIG``).
    """
    global _started
    if not available():
        return False
    with _LOCK:
        if _started:
            return True
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(PRELOAD))
        saved = os.environ.get("PYTHONPATH")
        root = _package_root()
        os.environ["PYTHONPATH"] = root + (os.pathsep + saved if saved else "")  # the server imports this package
        os.environ[_SERVER_ENV] = "1"
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            del os.environ[_SERVER_ENV]
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
        _started = True
    return True


def warm_argv(cmd: Sequence[str]) -> list[str] | None:
    """``["-m", MODULE, ...]`` or ``["-c", CODE, ...]`` of a command run with this interpreter, else None."""
    if len(cmd) >= 3 and cmd[0] == sys.executable and cmd[1] in ("-m", "-c"):
        return list(cmd[1:])
    return None


def _become(cwd: str, env: dict[str, str]) -> None:
    """In the fork: a session of its own that dies with the fork server, the caller's cwd and environment."""
    os.setsid()
    die_with_parent(_IMPORTED_IN)  # the fork server, where this module was imported
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None  # TMPDIR of this command, not of the fork server
    atexit._clear()  # the fork server's exit handlers are not this command's


def _command(argv: list[str], cwd: str, env: dict[str, str], log: str) -> None:
    """In the fork: become the command (own session, cwd, environment, output to ``log``) and run it."""
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    _become(cwd, env)
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *argv[2:]]
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102 (our own code)
    finally:
        atexit._run_exitfuncs()  # as the interpreter would at exit (nbclient registers kernel clean-up)
        sys.stdout.flush()
        sys.stderr.flush()


def run(cmd: Sequence[str], *, cwd: Path, env: dict[str, str], timeout: float, log: Path) -> int | None:
    """Run ``cmd`` (see :func:`warm_argv`) as a fork of the fork server; kill its session after ``timeout``.

    Returns the exit code (negative: killed by that signal), or ``None`` if it was killed for taking
    too long, as :func:`grading.run_one.run_bounded` does for a subprocess.
    """
    argv = warm_argv(cmd)
    if argv is None:
        raise ValueError(f"not a command of this interpreter: {cmd!r}")
    start()
    ctx = multiprocessing.get_context("forkserver")
    proc = ctx.Process(target=_command, args=(argv, str(cwd), dict(env), str(log)), name="grading-command")
    with _forked(proc):
        code = _wait(proc, timeout)
        if code is not None:
            return code
        kill_session(proc.pid)
        _wait(proc, None)
        with open(log, "ab") as out:
            out.write(f"\n*** killed after {timeout:.0f} s ***\n".encode())
        return None


@contextlib.contextmanager
def _forked(proc: multiprocessing.process.BaseProcess):
    """Start ``proc``; on the way out, kill its session if it still runs (this thread was interrupted)."""
    with _LOCK:  # starting reaps finished processes of other threads: never while one reads its status
        proc.start()
    try:
        yield proc
    finally:
        if _wait(proc, 0) is None:
            kill_session(proc.pid)
            _wait(proc, None)
        with _LOCK:
            proc.close()


def _call(fn: Callable[..., Any], args: tuple, cwd: str, env: dict[str, str],
          writer: multiprocessing.connection.Connection) -> None:
    """In the fork: ``fn(*args)`` in the caller's cwd and environment; send back its value or its exception."""
    _become(cwd, env)
    try:
        outcome: tuple[bool, Any] = (True, fn(*args))
    except BaseException as exc:  # noqa: BLE001 (handed to the caller, who raises it)
        outcome = (False, exc)
    try:
        try:
            writer.send(outcome)
        except Exception:  # noqa: BLE001 (an exception or value that does not pickle)
            writer.send((False, RuntimeError(f"{fn.__qualname__} in the fork server:\n{traceback.format_exc()}")))
    finally:
        atexit._run_exitfuncs()
        writer.close()


def call(fn: Callable[..., T], *args: Any, timeout: float) -> T:
    """``fn(*args)`` run in a fork of the fork server (which has :data:`PRELOAD` imported).

    The fork has this process's working directory and environment and a session of its own; it
    returns ``fn``'s value, or raises the exception ``fn`` raised.  ``fn`` must be a module-level
    function of an importable module and its arguments and value must pickle.  Raises
    ``TimeoutError`` (after killing the fork's session) if it takes longer than ``timeout``
    seconds, and ``ChildProcessError`` if the fork died without an answer.
    """
    start()
    ctx = multiprocessing.get_context("forkserver")
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_call, args=(fn, args, os.getcwd(), dict(os.environ), writer), name="grading-call")
    try:
        with _forked(proc):
            writer.close()  # the fork's copy is its own: EOF here once it ends
            if not multiprocessing.connection.wait([reader], timeout):
                kill_session(proc.pid)
                raise TimeoutError(f"{fn.__qualname__} took more than {timeout:g} s")
            try:
                ok, value = reader.recv()
            except EOFError:
                _wait(proc, None)
                raise ChildProcessError(f"{fn.__qualname__} died (exit status {proc.exitcode})") from None
    finally:
        reader.close()
    if not ok:
        raise value
    return value


def _wait(proc: multiprocessing.process.BaseProcess, timeout: float | None) -> int | None:
    """The exit code once ``proc`` ends within ``timeout`` seconds, else None."""
    multiprocessing.connection.wait([proc.sentinel], timeout)
    with _LOCK:
        return proc.exitcode


def kill_session(pid: int) -> None:
    """SIGKILL the session a command leads (its pid is the group id), or the process alone."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
