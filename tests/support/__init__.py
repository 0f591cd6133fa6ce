"""Test support: the one place for what more than one test module needs.

pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in ``pyproject.toml``), so test modules
import ``support`` and ``fixtures`` as packages. This module holds the course's paths, the
environment helpers, the sandbox runner and :func:`alive` (which processes still run); its submodules hold the rest:

- ``support.submissions``: submissions of the real notebook, built from the committed release
  (the reference answers, a blank release, cells replaced, the JSON tampered with);
- ``support.pipeline``: grading submissions of the real course end to end in one
  ``python -m grading.grade`` call, scores read back from the gradebook;
- ``support.courses``: small nbgrader courses built in ``tmp_path`` (nbgrader cell metadata,
  notebooks from (kind, source) pairs, the dummy course ``a1`` and its class, the grading command);
- ``support.pgserver``: a throw-away PostgreSQL server.

The ``needs_bwrap`` marker (``pyproject.toml``) is applied in ``conftest.py``: a marked test is
skipped where :func:`bwrap_usable` is false, which ``test_grading_infra`` turns into a failure.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ASSIGNMENT = "12_embeddings"
NOTEBOOK = "embeddings"
SOURCE_NB = REPO / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
RELEASE_NB = REPO / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
PYTHON = sys.executable
VENV_BIN = Path(sys.executable).parent  # nbgrader, tito, jupyterhub and alembic live here


def venv_env(base: Mapping[str, str] | None = None, **changes: str) -> dict[str, str]:
    """``base`` (default: this process's environment) with :data:`VENV_BIN` first on ``PATH``
    (nbgrader shells out to ``alembic``), then ``changes`` applied."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = str(VENV_BIN) + os.pathsep + env.get("PATH", "")
    env.update(changes)
    return env


def home_env(home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """:func:`venv_env` of ``base`` for a person of their own: ``HOME`` and the Jupyter config, data and
    runtime directories under ``home``, no ``TITO_COURSE`` inherited."""
    data = home / ".local" / "share" / "jupyter"
    env = venv_env(base, HOME=str(home), JUPYTER_CONFIG_DIR=str(home / ".jupyter"), JUPYTER_DATA_DIR=str(data),
                   JUPYTER_RUNTIME_DIR=str(data / "runtime"))
    env.pop("TITO_COURSE", None)
    return env


@functools.cache
def bwrap_usable() -> bool:
    """Can bubblewrap create the grading sandbox here? (Asked once per test session.)"""
    from grading import sandbox

    return sandbox.bwrap_available()


def run_sandboxed(workdir: Path, code: str, **limits: object) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code`` in the grading sandbox of ``workdir`` (``limits`` as for
    :func:`grading.sandbox.sandbox_prefix`)."""
    from grading import sandbox

    cmd = [*sandbox.sandbox_prefix(workdir, **limits), PYTHON, "-c", code]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (zombies count as gone)."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            running.add(pid)
    return running
