"""The scratch course a submission is graded in, and the course it is built from.

The course configuration is code, so it is loaded in a subprocess (the way nbgrader loads it) and
checked there; nbgrader itself runs as a subprocess of this interpreter with the venv on ``PATH``.
The scratch course holds the configuration, a gradebook copy, the assignment's non-notebook source
files and the sealed kernelspec, never a solution notebook.  nbgrader is imported where it is used
(:func:`read_definition` runs in a fork of the fork server that has it imported already).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from grading import sandbox, warm
from grading.memory_bound import SubmissionLimits
from grading.results import copy_assignment_definition, locked_checksums
from grading.submissions import UsageError, copy_tree

log = logging.getLogger(__name__)

REQUIRED_PREPROCESSORS = ("grading.preprocessors.TolerantExecute", "grading.preprocessors.SealedVerdict")


def gradebook_url(path: Path) -> str:
    """SQLAlchemy URL of an SQLite gradebook file."""
    return f"sqlite:///{path}"


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (``sqlite:////abs/path``), None for other databases."""
    prefix = "sqlite:///"
    return Path(url[len(prefix):]) if url.startswith(prefix) else None


def gradebook_exists(url: str) -> bool:
    """False for an SQLite gradebook whose file does not exist (opening it would create it)."""
    path = sqlite_path(url)
    return path is None or path.is_file()


def assignment_notebooks(url: str, course_id: str, assignment: str) -> list[str]:
    """Names of the assignment's notebooks in a gradebook (empty if unknown)."""
    from nbgrader.api import Gradebook, MissingEntry

    if not gradebook_exists(url):
        return []
    with Gradebook(url, course_id) as gb:
        try:
            return sorted(nb.name for nb in gb.find_assignment(assignment).notebooks)
        except MissingEntry:
            return []


def stale_test_cells(course: Path, url: str, course_id: str, assignment: str, notebooks: Sequence[str]) -> list[str]:
    """grade_ids of test cells whose source differs from the copy in the gradebook.

    nbgrader grades with the gradebook's copy of every test cell, so tests
    edited after ``generate_assignment`` are silently ignored until it runs
    again.
    """
    import nbformat
    from nbgrader import utils as nbgrader_utils
    from nbgrader.api import Gradebook

    stale = []
    with Gradebook(url, course_id) as gb:
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
# going on with the defaults.  Prints JSON: {"error": ...} or the autograde preprocessors, the
# GradeBatch settings, the course id, the gradebook URL and the memory bound per submission.
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
    from nbgrader.coursedir import CourseDirectory
    from grading.batch import GradeBatch

    batch = GradeBatch(config=config)
    settings = {name: getattr(batch, name) for name in batch.class_trait_names(config=True)}
    from grading.memory_bound import SubmissionLimits

    limits = SubmissionLimits(config=config)
    coursedir = CourseDirectory(config=config)
    print(json.dumps({"preprocessors": None if raw is None else names, "unimportable": unimportable,
                      "batch": settings, "course_id": coursedir.course_id, "db_url": coursedir.db_url,
                      "submission_limits": {name: getattr(limits, name) for name in limits.class_trait_names(config=True)}}))
except BaseException:
    print(json.dumps({"error": traceback.format_exc(limit=-3)}))
"""


@dataclass(frozen=True)
class CourseConfig:
    """What grading takes from the course's ``nbgrader_config.py``."""

    preprocessors: list[str]
    batch: dict[str, object] = field(default_factory=dict)  # GradeBatch settings (limits, workers)
    course_id: str = ""
    db_url: str = ""  # CourseDirectory.db_url: the course gradebook
    submission_limits: dict[str, object] = field(default_factory=dict)  # SubmissionLimits settings

    def limits(self) -> SubmissionLimits:
        """The course's limits per submission (memory, processes, the mechanism enforcing them)."""
        return SubmissionLimits(**self.submission_limits)

    @property
    def memory_bytes(self) -> int | None:
        """``SubmissionLimits.memory_bytes`` of the course (None: unbounded)."""
        return self.limits().memory_bytes


PROBE_TIMEOUT = 300.0


def run_probe(course: Path, warm_start: bool = False) -> tuple[int | None, str]:
    """``(exit status, output)`` of the configuration probe run in ``course`` (status None: timed out).

    With ``warm_start`` it runs as a fork of the fork server (:mod:`grading.warm`), which has
    nbgrader imported already; otherwise as a fresh ``python -c``.  Either way in a process of its
    own: the configuration is code and must not change this one.
    """
    cmd = [sys.executable, "-c", _CONFIG_PROBE]
    if warm_start and warm.available():
        with tempfile.TemporaryDirectory(prefix="nbgrader-probe-") as tmp:
            out = Path(tmp) / "probe.log"
            code = warm.run(cmd, cwd=course, env=nbgrader_env(), timeout=PROBE_TIMEOUT, log=out)
            return code, out.read_text(errors="replace") if out.is_file() else ""
    try:
        proc = subprocess.run(cmd, cwd=course, env=nbgrader_env(), capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, ""
    return proc.returncode, proc.stdout + proc.stderr


def probe_report(output: str) -> dict:
    """The probe's JSON line (the last line of its output that parses as a JSON object), or ``{}``."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                found = json.loads(line)
                if isinstance(found, dict):
                    return found
    return {}


def load_course_config(course: Path, warm_start: bool = False) -> CourseConfig:
    """Load the course configuration like nbgrader does; raise UsageError unless it is usable.

    nbgrader logs a config file that fails to load and grades with its defaults, which would
    silently drop the sealed re-check (``SealedVerdict``) and the dead-kernel tolerant execution
    (``TolerantExecute``).
    """
    config = course / "nbgrader_config.py"
    if not config.is_file():
        raise UsageError(f"no nbgrader_config.py in {course}: nbgrader would grade without the sealed re-check")
    code, output = run_probe(course, warm_start)
    if code is None:
        raise UsageError(f"loading {config} took more than {PROBE_TIMEOUT:g} s")
    report = probe_report(output)
    if "error" in report or ("preprocessors" not in report):
        detail = report.get("error") or output.strip() or f"exit status {code}"
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
    return CourseConfig(preprocessors=list(preprocessors), batch=dict(report.get("batch") or {}),
                        course_id=str(report.get("course_id") or ""), db_url=str(report.get("db_url") or ""),
                        submission_limits=dict(report.get("submission_limits") or {}))


def check_course_config(course: Path) -> list[str]:
    """The autograde preprocessors of a usable course configuration (raises UsageError otherwise)."""
    return load_course_config(course).preprocessors


def generate_assignment(course: Path, url: str, assignment: str) -> None:
    """``nbgrader generate_assignment --force`` in the course, into the gradebook at ``url``."""
    if not (course / "source" / assignment).is_dir():
        raise UsageError(f"no source/{assignment} in {course}")
    log.info("Running nbgrader generate_assignment %s --force in %s", assignment, course)
    result = subprocess.run(
        nbgrader_command("generate_assignment", assignment, "--force", f"--CourseDirectory.db_url={url}"),
        cwd=course,
        env=nbgrader_env(),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise UsageError(f"nbgrader generate_assignment failed:\n{result.stdout}{result.stderr}")


def ensure_gradebook(course: Path, url: str, course_id: str, assignment: str, regenerate: bool) -> list[str]:
    """Make sure the course gradebook knows the assignment; return its notebook names."""
    notebooks = [] if regenerate else assignment_notebooks(url, course_id, assignment)
    if notebooks:
        return notebooks
    generate_assignment(course, url, assignment)
    notebooks = assignment_notebooks(url, course_id, assignment)
    if not notebooks:
        raise UsageError(f"the gradebook of {course} has no notebooks for {assignment}")
    return notebooks


@dataclass(frozen=True)
class CourseDefinition:
    """What the course says of the assignment, read once per batch (plain data)."""

    notebooks: list[str]  # the assignment's notebooks in the course gradebook
    stale: list[str] = field(default_factory=list)  # test cells edited since generate_assignment
    released: dict[str, dict[str, str]] = field(default_factory=dict)  # notebook -> locked cell checksums
    unreleased: list[str] = field(default_factory=list)  # release notebooks that could not be read


def read_definition(course: Path, url: str, course_id: str, assignment: str,
                    template: Path) -> CourseDefinition | None:
    """The assignment's definition, with its scratch-course template built at ``template``;
    None if the course gradebook does not know the assignment (nothing is built then).

    Everything grading reads of the course gradebook and release before the first submission, in
    one call, so that it can run in a fork of the fork server (``warm.call``).
    """
    notebooks = assignment_notebooks(url, course_id, assignment)
    if not notebooks:
        return None
    stale = stale_test_cells(course, url, course_id, assignment, notebooks)
    build_template(course, url, course_id, assignment, template)
    released: dict[str, dict[str, str]] = {}
    unreleased: list[str] = []
    for name in notebooks:
        path = course / "release" / assignment / f"{name}.ipynb"
        try:
            released[name] = locked_checksums(path)
        except (OSError, ValueError):
            unreleased.append(str(path))
    return CourseDefinition(notebooks, stale, released, unreleased)


def build_template(course: Path, url: str, course_id: str, assignment: str, template: Path) -> Path:
    """The scratch-course template every submission is graded in, built once per batch.

    It holds the course's ``nbgrader_config.py``, a gradebook with the assignment's definition
    only (no student's records) and the assignment's non-notebook source files (data files
    nbgrader copies next to every submission).  No solution notebook is in it.
    """
    template.mkdir(parents=True, exist_ok=True)
    config = course / "nbgrader_config.py"
    if config.is_file():
        shutil.copy2(config, template / "nbgrader_config.py")
    copy_assignment_definition(url, course_id, gradebook_url(template / "gradebook.db"), course_id, assignment)
    source = course / "source" / assignment
    dest = template / "source" / assignment
    dest.mkdir(parents=True)
    if source.is_dir():
        copy_tree(source, dest, skip_suffixes=(".ipynb",))
    return template


def scratch_args(scratch: Path) -> list[str]:
    """Options pointing nbgrader at the scratch course and its gradebook, whatever the config says."""
    return [f"--CourseDirectory.root={scratch}", f"--CourseDirectory.db_url={gradebook_url(scratch / 'gradebook.db')}"]
