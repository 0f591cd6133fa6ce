"""The student's side of the nbgrader exchange: is one configured, fetch, submit.

An exchange is configured when the student's nbgrader configuration (as ``nbgrader`` itself loads
it: the Jupyter config path, then ``nbgrader_config.py`` in the workspace) names a course with
``c.CourseDirectory.course_id``.  Fetching and submitting run the real ``nbgrader fetch_assignment``
and ``nbgrader submit`` in the workspace, so the working copy lands where nbgrader puts it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tito.errors import TitoError
from tito.modules import Module

log = logging.getLogger(__name__)

NBGRADER_TIMEOUT = 300.0

# Run in a subprocess with the workspace as working directory (the configuration is code and is
# found relative to the working directory): prints the exchange settings nbgrader would use.
_CONFIG_PROBE = r"""
import json, logging
from nbgrader.apps.submitapp import SubmitApp
from nbgrader.coursedir import CourseDirectory
from nbgrader.exchange.default.exchange import Exchange

app = SubmitApp()
app.log.setLevel(logging.ERROR)
app.load_config_file()
coursedir = CourseDirectory(config=app.config)
exchange = Exchange(coursedir=coursedir, config=app.config)
student = coursedir.student_id if coursedir.student_id != "*" else ""
print(json.dumps({"course_id": coursedir.course_id, "root": exchange.root, "cache": exchange.cache,
                  "student_id": student}))
"""


@dataclass(frozen=True)
class ExchangeConfig:
    """The exchange settings of the student's nbgrader configuration."""

    course_id: str
    root: Path
    cache: Path       # the student's own copy of every submission (nbgrader's Exchange.cache)
    student_id: str   # empty: nbgrader uses the OS user name


@dataclass(frozen=True)
class Submission:
    """What ``nbgrader submit`` handed in."""

    module: str
    course_id: str
    timestamp: str   # nbgrader's submission timestamp (UTC)
    files: tuple[str, ...]


def nbgrader_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for nbgrader: this Python's bin directory first on PATH."""
    env = dict(os.environ if environ is None else environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def run_nbgrader(args: list[str], workspace: Path, *, timeout: float = NBGRADER_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``nbgrader ARGS`` with the workspace as working directory; output captured."""
    cmd = [sys.executable, "-m", "nbgrader", *args]
    log.debug("running %s in %s", cmd, workspace)
    try:
        return subprocess.run(cmd, cwd=workspace, env=nbgrader_env(), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise TitoError(f"nbgrader {args[0]} did not finish within {timeout:g} s") from exc


def student_exchange(workspace: Path) -> ExchangeConfig | None:
    """The exchange the student's nbgrader configuration names, or ``None`` when it names no course."""
    proc = subprocess.run([sys.executable, "-c", _CONFIG_PROBE], cwd=workspace, env=nbgrader_env(),
                          capture_output=True, text=True, timeout=NBGRADER_TIMEOUT, stdin=subprocess.DEVNULL)
    lines = proc.stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
    except json.JSONDecodeError:
        found = None
    if found is None:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise TitoError(f"your nbgrader configuration does not load: {detail}")
    if not found["course_id"]:
        return None
    return ExchangeConfig(found["course_id"], Path(found["root"]), Path(found["cache"]), found["student_id"])


def nbgrader_failure(proc: subprocess.CompletedProcess[str]) -> str:
    """The last error nbgrader logged (its ``[... | ERROR]`` or ``CRITICAL`` lines), or its last line."""
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    errors = [line.split("]", 1)[-1].strip() for line in lines if "| ERROR]" in line or "| CRITICAL]" in line]
    return errors[-1] if errors else (lines[-1] if lines else f"exit status {proc.returncode}")


def fetch_assignment(workspace: Path, module: Module, exchange: ExchangeConfig) -> None:
    """``nbgrader fetch_assignment`` of ``module`` into the workspace (only files that are missing)."""
    args = ["fetch_assignment", module.name]
    if (workspace / module.name).exists():
        args.append("--replace")  # nbgrader then copies only the missing files, never overwrites
    proc = run_nbgrader(args, workspace)
    if proc.returncode != 0:
        raise TitoError(f"could not fetch {module.name} from the exchange of {exchange.course_id} "
                        f"({exchange.root}): {nbgrader_failure(proc)}")


def require_exchange(exchange: ExchangeConfig | None, module: Module) -> ExchangeConfig:
    """``exchange``, or TitoError saying how to configure one."""
    if exchange is None:
        raise TitoError("no exchange is configured, so there is nowhere to submit to: ask your instructor "
                        "for the course id and set c.CourseDirectory.course_id (and c.Exchange.root) in "
                        "~/.jupyter/nbgrader_config.py, or hand in "
                        f"{module.working_copy} as your instructor says")
    return exchange


def submit(workspace: Path, module: Module, exchange: ExchangeConfig | None) -> Submission:
    """``nbgrader submit`` the module's folder of the workspace to the exchange."""
    exchange = require_exchange(exchange, module)
    proc = run_nbgrader(["submit", module.name], workspace)
    if proc.returncode != 0:
        raise TitoError(f"nbgrader submit failed: {nbgrader_failure(proc)}")
    timestamp = latest_submission(exchange, module.name)
    if timestamp is None:
        raise TitoError(f"nbgrader submit reported success but left no copy in {exchange.cache}")
    files = tuple(sorted(str(p.relative_to(workspace)) for p in (workspace / module.name).rglob("*.ipynb")
                         if ".ipynb_checkpoints" not in p.parts and "feedback" not in p.parts))
    return Submission(module.name, exchange.course_id, timestamp, files)


def latest_submission(exchange: ExchangeConfig, assignment: str) -> str | None:
    """Timestamp of the student's latest submission of ``assignment``, from nbgrader's submit cache.

    ``nbgrader submit`` keeps a copy of every submission in
    ``<cache>/<course>/<student>+<assignment>+<timestamp>/`` with a ``timestamp.txt``.
    """
    stamps = [path.read_text().strip()
              for path in (exchange.cache / exchange.course_id).glob(f"*+{assignment}+*/timestamp.txt")]
    return max(stamps, default=None, key=_parse_timestamp)


def _parse_timestamp(stamp: str) -> datetime:
    """nbgrader's timestamp text as an aware datetime (for ordering)."""
    from nbgrader.utils import parse_utc

    return parse_utc(stamp)
