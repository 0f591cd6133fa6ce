"""Commands forked from the warm fork server (``grading.warm``) behave as the subprocess would.

Each question is asked of the same command run both ways, cold (``run_bounded`` as a fresh
``python -c``) and warm (a fork of the fork server), and the answers compared.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from grading import warm
from grading.run_one import run_bounded
from support import alive

pytestmark = pytest.mark.skipif(not warm.available(), reason="no fork server on this platform")

PYTHON = sys.executable


def both(tmp_path: Path, code: str, env: dict[str, str] | None = None, timeout: float = 120) -> dict[str, tuple]:
    """``{"cold": (exit code, log text), "warm": (...)}`` of ``python -c code`` run in ``tmp_path/cwd``."""
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    results = {}
    for way in ("cold", "warm"):
        log = tmp_path / f"{way}.log"
        code_ = run_bounded([PYTHON, "-c", code], cwd=cwd, env=dict(env or os.environ), timeout=timeout, log=log,
                            warm_start=way == "warm")
        results[way] = (code_, log.read_text())
    return results


def test_exit_status_output_directory_and_environment_are_the_commands(tmp_path: Path) -> None:
    """Does a warm command see its own cwd, environment and TMPDIR, write to its log and exit with its status?"""
    env = dict(os.environ, GRADING_TEST_VALUE="seen", TMPDIR=str(tmp_path))
    env.pop("GRADING_TEST_ONLY_HERE", None)
    code = ("import os, sys, tempfile; print(os.getcwd()); print(os.environ.get('GRADING_TEST_VALUE')); "
            "print(tempfile.gettempdir()); print('GRADING_TEST_ONLY_HERE' in os.environ); "
            "print('to stderr', file=sys.stderr); sys.exit(3)")
    os.environ["GRADING_TEST_ONLY_HERE"] = "1"  # in this process only, not in the command's environment
    try:
        found = both(tmp_path, code, env)
    finally:
        del os.environ["GRADING_TEST_ONLY_HERE"]
    expected = (3, f"{tmp_path / 'cwd'}\nseen\n{tmp_path}\nFalse\nto stderr\n")
    assert found["cold"] == expected, f"expected {expected}, got {found['cold']} (cold)"
    assert found["warm"] == expected, f"expected {expected}, got {found['warm']} (warm)"


def test_a_warm_command_collects_garbage_like_a_cold_one(tmp_path: Path) -> None:
    """The fork server imports with the collector off: is it on again in every command it forks?"""
    found = both(tmp_path, "import gc; print(gc.isenabled(), gc.get_threshold()[0] > 0)")
    assert found["warm"] == found["cold"] == (0, "True True\n"), found


def test_a_command_killed_by_a_signal_reports_the_signal(tmp_path: Path) -> None:
    found = both(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert found["warm"][0] == found["cold"][0] == -9, found


def test_an_exception_is_exit_status_1(tmp_path: Path) -> None:
    found = both(tmp_path, "raise RuntimeError('boom')")
    assert found["warm"][0] == found["cold"][0] == 1, found
    assert "RuntimeError: boom" in found["warm"][1], found["warm"][1]


def test_a_timeout_kills_everything_the_command_started(tmp_path: Path) -> None:
    """Is a warm command that overruns killed with the children it started (its whole session)?"""
    pid_file = tmp_path / "child.pid"
    code = (f"import subprocess, time, pathlib; p = subprocess.Popen(['sleep', '600']); "
            f"pathlib.Path({str(pid_file)!r}).write_text(str(p.pid)); time.sleep(600)")
    start = time.monotonic()
    status = run_bounded([PYTHON, "-c", code], cwd=tmp_path, env=dict(os.environ), timeout=3, log=tmp_path / "t.log",
                         warm_start=True)
    took = time.monotonic() - start
    assert status is None, f"expected a timeout (None), got exit status {status}"
    assert took < 60, f"expected the kill soon after 3 s, took {took:.1f} s"
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while alive({child}):
        assert time.monotonic() < deadline, f"the command's child {child} outlived the timeout"
        time.sleep(0.1)
    assert "killed after 3 s" in (tmp_path / "t.log").read_text()


def test_what_one_command_changes_does_not_reach_the_next(tmp_path: Path) -> None:
    """Is every warm command a fresh fork: modules, globals and environment a command changed are gone?"""
    poison = ("import os, sys, json; json.dumps = None; os.environ['GRADING_POISON'] = '1'; "
              "sys.modules['grading.warm'].PRELOAD = ('poisoned',); print('poisoned')")
    check = ("import os, json, sys; print(json.dumps([1]), os.environ.get('GRADING_POISON'), "
             "sys.modules['grading.warm'].PRELOAD[0])")
    env = dict(os.environ)
    for code, want in ((poison, "poisoned\n"), (check, f"[1] None {warm.PRELOAD[0]}\n")):
        log = tmp_path / "p.log"
        log.unlink(missing_ok=True)
        status = run_bounded([PYTHON, "-c", code], cwd=tmp_path, env=env, timeout=60, log=log, warm_start=True)
        assert (status, log.read_text()) == (0, want), f"expected (0, {want!r}), got {(status, log.read_text())}"


def test_commands_run_side_by_side(tmp_path: Path) -> None:
    """Do two warm commands started from two threads overlap, each with its own exit status?"""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> tuple[int | None, float, float]:
        start = time.monotonic()
        status = run_bounded([PYTHON, "-c", f"import time, sys; time.sleep(2); sys.exit({i})"], cwd=tmp_path,
                             env=dict(os.environ), timeout=120, log=tmp_path / f"{i}.log", warm_start=True)
        return status, start, time.monotonic()

    with ThreadPoolExecutor(2) as pool:
        (a, a0, a1), (b, b0, b1) = pool.map(one, (4, 5))
    assert (a, b) == (4, 5), (a, b)
    assert max(a0, b0) < min(a1, b1), "the two commands did not overlap"


def test_a_dead_fork_server_does_not_stop_grading(tmp_path: Path) -> None:
    """If the fork server is killed mid-batch, does the next command still run, with its own result?"""
    import multiprocessing.forkserver
    import signal

    log = tmp_path / "first.log"
    assert run_bounded([PYTHON, "-c", "print('first')"], cwd=tmp_path, env=dict(os.environ), timeout=60, log=log,
                       warm_start=True) == 0
    server = multiprocessing.forkserver._forkserver._forkserver_pid
    assert server is not None and psutil.pid_exists(server)
    os.kill(server, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while psutil.Process(server).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the fork server did not die"
        time.sleep(0.05)
    log = tmp_path / "second.log"
    status = run_bounded([PYTHON, "-c", "import sys; print('second'); sys.exit(7)"], cwd=tmp_path,
                         env=dict(os.environ), timeout=120, log=log, warm_start=True)
    assert (status, log.read_text().splitlines()[-1]) == (7, "second"), (status, log.read_text())


# --------------------------------------------------------------------------- warm.call


def cwd_env_and_pid(name: str) -> tuple[str, str | None, int]:
    """The working directory, one environment variable and the pid of the process it runs in."""
    return os.getcwd(), os.environ.get(name), os.getpid()


def raise_lookup(key: str) -> None:
    raise LookupError(f"no {key}")


def sleep_in_a_child(pid_file: str) -> None:
    import subprocess

    child = subprocess.Popen(["sleep", "600"])
    Path(pid_file).write_text(str(child.pid))
    time.sleep(600)


def test_a_warm_call_returns_what_the_function_returns_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Does ``warm.call`` run the function in another process, in this cwd and environment, with its value?"""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRADING_TEST_VALUE", "seen here")
    here = cwd_env_and_pid("GRADING_TEST_VALUE")
    there = warm.call(cwd_env_and_pid, "GRADING_TEST_VALUE", timeout=120)
    assert there[:2] == here[:2], f"expected cwd and variable {here[:2]}, got {there[:2]}"
    assert there[2] != os.getpid(), "the function ran in this process, not in a fork"


def test_a_warm_call_raises_the_functions_exception() -> None:
    with pytest.raises(LookupError, match="no thing"):
        warm.call(raise_lookup, "thing", timeout=120)


def test_a_warm_call_that_dies_or_overruns_is_reported_and_leaves_nothing_running(tmp_path: Path) -> None:
    """A fork that exits without an answer is ChildProcessError; one that overruns is killed with its children."""
    with pytest.raises(ChildProcessError, match="exit status 3"):
        warm.call(os._exit, 3, timeout=120)
    pid_file = tmp_path / "child.pid"
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        warm.call(sleep_in_a_child, str(pid_file), timeout=3)
    assert time.monotonic() - start < 60, "the overrun was not stopped soon after 3 s"
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while alive({child}):
        assert time.monotonic() < deadline, f"the call's child {child} outlived the timeout"
        time.sleep(0.1)


def test_the_grading_command_starts_without_nbgrader() -> None:
    """Does importing the grading command leave nbgrader, nbformat and SQLAlchemy to the fork server
    (which imports them while the command starts), so the command's own start-up stays short?"""
    import subprocess

    heavy = ("nbgrader", "nbformat", "sqlalchemy", "nbconvert", "jupyter_client")
    code = ("import sys, grading.grade; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))")
    found = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert found.stdout.strip() == "[]", f"expected no heavy imports, got {found.stdout.strip()}"
