"""nbgrader's own autograde test suite, run with the course's grading configuration injected.

The course's ``nbgrader_config.py`` (every setting but the course directory) is loaded from an
``nbgrader_config.py`` in the directory named by ``JUPYTER_CONFIG_DIR``, so each of nbgrader's
autograde tests grades through the course's sanitising and grading preprocessors (dead-kernel
tolerant execution, the sealed re-check in its sandbox, output limits) and generates assignments
through its generate-time checks. Every test must pass as with plain nbgrader, except
the deliberate differences of ``nbsuite_plugin.DIFFERENCES``, which must still fail (strict xfail).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nbsuite_plugin import DIFFERENCES, SHARD_ENV, SUITE
from support import REPO

pytestmark = [pytest.mark.nbsuite, pytest.mark.slow]

#: Tests nbgrader itself skips (they need manual setup).
NBGRADER_SKIPS = 2
SUITE_TESTS = 42
SUITE_TIMEOUT = 1500
#: pytest processes for the suite, side by side. Over TCP, kernels started by two processes at once
#: race for the same free ports (nbgrader's issue #174): a kernel that lost the race died before
#: replying to kernel_info (test_force failed once so). So the suite's kernels use ipc sockets in a
#: directory of each shard's own (see INJECTED_CONFIG), outside the notebooks' folders, where the
#: course's execution would remove them as files the notebook made.
SHARDS = 2
IPC_ENV = "NBSUITE_KERNEL_SOCKETS"

INJECTED_CONFIG = '''\
"""The course's grading configuration, for nbgrader's own test suite (its course directory is the test's)."""
from traitlets.config.loader import PyFileConfigLoader

c = get_config()  # noqa: F821
course = PyFileConfigLoader("nbgrader_config.py", path={repo!r}).load_config()
course.pop("CourseDirectory", None)
c.merge(course)
# Not the course's: lets shards of the suite run side by side (tests/test_nbgrader_suite.py, SHARDS).
import os
c.KernelManager.transport = "ipc"
c.KernelManager.ip = os.path.join(os.environ[{ipc_env!r}], "kernel")
'''


def _counts(summary: str) -> dict[str, int]:
    words = r"(\d+) (passed|failed|xfailed|xpassed|skipped|deselected|errors?)"
    return {word: int(n) for n, word in re.findall(words, summary)}


def _run_shards(tmp_path: Path, shards: int) -> list[subprocess.CompletedProcess[str]]:
    """Run the suite as ``shards`` pytest processes side by side (each test in exactly one)."""
    config_dir = tmp_path / "jupyter-config"
    config_dir.mkdir()
    (config_dir / "nbgrader_config.py").write_text(INJECTED_CONFIG.format(repo=str(REPO), ipc_env=IPC_ENV))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    procs = []
    for k in range(shards):
        cwd = tmp_path / f"shard-{k}"
        cwd.mkdir()
        sockets = tmp_path / f"sockets-{k}"
        sockets.mkdir()
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config_dir), SHARD_ENV: f"{k}/{shards}", IPC_ENV: str(sockets),
               "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "pytest", "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(cwd),
             "-p", "no:cacheprovider", "-p", "nbsuite_plugin", "-q", "-rfxX", "--pyargs", SUITE],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=SUITE_TIMEOUT)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def test_nbgrader_autograde_suite_passes_with_the_course_configuration(tmp_path: Path) -> None:
    """nbgrader's 42 autograde tests: all pass (2 skipped by nbgrader itself) but the listed
    deliberate differences, which fail as listed (strict xfails)."""
    results = _run_shards(tmp_path, SHARDS)
    counts: dict[str, int] = {}
    for result in results:
        last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        for word, n in _counts(last).items():
            counts[word] = counts.get(word, 0) + n
    expected = {"passed": SUITE_TESTS - NBGRADER_SKIPS - len(DIFFERENCES), "skipped": NBGRADER_SKIPS,
                "xfailed": len(DIFFERENCES)}
    if SHARDS > 1:
        expected["deselected"] = SUITE_TESTS * (SHARDS - 1)
    tail = "\n".join(r.stdout[-4000:] + r.stderr[-1000:] for r in results)
    assert all(r.returncode == 0 for r in results) and counts == expected, \
        f"expected {expected}, got {counts}:\n{tail}"


def test_deliberate_differences_are_documented() -> None:
    """grading/CONTRACT.md lists every deliberate difference from nbgrader's suite."""
    contract = (REPO / "grading" / "CONTRACT.md").read_text()
    missing = [name for name in DIFFERENCES if f"`{name}`" not in contract]
    assert not missing, f"grading/CONTRACT.md does not list {missing}"
