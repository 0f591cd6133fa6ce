"""``tito module complete``: run the student's working copy with the visible checks, Part by Part.

The working copy runs top to bottom in a fresh kernel (inside bubblewrap, the course's grading
sandbox, when it is usable here), in a scratch copy of its folder so that nothing in the
workspace changes.  Test cells run as the course released them: a test cell the student edited is
put back to its released source, one they deleted counts as failed.  The release holds only the
visible checks; the hidden tests run only at grading.
"""

from __future__ import annotations

import copy
import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode

from grading import notebook as roles
from grading import sandbox
from tito.errors import TitoError
from tito.status import PartResult

log = logging.getLogger(__name__)

PART_HEADING = re.compile(r"^##\s+Part\s+(?P<number>\d+)\s*:\s*(?P<title>.+?)\s*$")
POINTS_SUFFIX = re.compile(r"\s*\([^)]*\bpoints?\b[^)]*\)\s*$")
DEFAULT_TIMEOUT = 120.0
IGNORED = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "feedback")
MAX_ERROR_CHARS = 300


_QUIET = logging.getLogger("tito.kernel")  # nbclient's own log lines; tito reports what matters
_QUIET.setLevel(logging.CRITICAL)


class KernelDied(TitoError):
    """The kernel died while running the working copy."""


@dataclass(frozen=True)
class Part:
    """A ``## Part N: ...`` section of the released notebook."""

    number: int
    title: str
    points: float            # autograded and hand-graded points of its cells
    checks: tuple[str, ...]  # grade_ids of its test cells, in order


@dataclass(frozen=True)
class CheckResult:
    """One visible check (test cell) of one run."""

    grade_id: str
    passed: bool
    error: str | None  # one line, for the student


@dataclass(frozen=True)
class Report:
    """What one ``complete`` run found."""

    parts: list[PartResult]
    checks: dict[str, CheckResult]
    other_errors: list[str]  # errors of cells that are not checks (answers, try-it cells)
    sandboxed: bool

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks.values())


def read_notebook(path: Path) -> NotebookNode:
    """The notebook at ``path``; TitoError when it is missing or not a notebook."""
    if not path.is_file():
        raise TitoError(f"no working copy at {path}: run `tito module view {path.parent.name}` first")
    try:
        return nbformat.read(str(path), as_version=4)
    except Exception as exc:  # nbformat raises JSON errors, validation errors and more
        raise TitoError(f"{path} is not a readable notebook (not valid notebook JSON: {exc}); restore it "
                        f"from a checkpoint or delete it and run `tito module view` for a fresh copy") from exc


def course_parts(release: NotebookNode) -> list[Part]:
    """The Parts of the released notebook with their points and test cells."""
    parts: list[dict[str, Any]] = []
    current: dict[str, Any] = {"number": 0, "title": "Before Part 1", "points": 0.0, "checks": []}
    for cell in release.cells:
        heading = PART_HEADING.match(roles.cell_source(cell).splitlines()[0]) if (
            cell.cell_type == "markdown" and roles.cell_source(cell).strip()) else None
        if heading:
            parts.append(current)
            title = POINTS_SUFFIX.sub("", heading["title"])
            current = {"number": int(heading["number"]), "title": title, "points": 0.0, "checks": []}
            continue
        meta = roles.nbgrader_metadata(cell)
        if meta.get("grade"):
            current["points"] += float(meta.get("points", 0) or 0)
        if roles.cell_role(cell) == "test":
            current["checks"].append(roles.grade_id(cell))
    parts.append(current)
    return [Part(p["number"], p["title"], p["points"], tuple(p["checks"]))
            for p in parts if p["checks"] or p["points"] or p["number"]]


def with_released_tests(working: NotebookNode, release: NotebookNode) -> NotebookNode:
    """The working copy with every test cell's source as released (its outputs cleared)."""
    released = {roles.grade_id(c): c for _, c in roles.test_cells(release)}
    nb = copy.deepcopy(working)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        gid = roles.grade_id(cell)
        if gid in released and roles.cell_role(cell) == "test":
            cell.source = released[gid].source
    return nb


def _kernel_manager(scratch: Path, sandboxed: bool) -> AsyncKernelManager | None:
    """The sealed (bubblewrap) kernel from a kernelspec written into ``scratch``, or None for python3."""
    if not sandboxed:
        return None
    kernels = sandbox.write_sealed_kernelspec(scratch / "jupyter").parent
    # Asynchronous, as nbclient's own: a blocking client would stall its dead-kernel watch.
    return AsyncKernelManager(kernel_name=sandbox.SEALED_KERNEL_NAME,
                         kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))


def cell_label(nb: NotebookNode, index: int) -> str:
    """``cell 12 (test_embedding_backward)`` or ``cell 4`` for the student."""
    gid = roles.grade_id(nb.cells[index]) if 0 <= index < len(nb.cells) else None
    return f"cell {index + 1}" + (f" ({gid})" if gid else "")


def execute(nb: NotebookNode, folder: Path, *, timeout: float, sandboxed: bool) -> NotebookNode:
    """Run ``nb`` top to bottom in a fresh kernel with a scratch copy of ``folder`` as its directory."""
    with tempfile.TemporaryDirectory(prefix="tito-complete-") as tmp:
        scratch = Path(tmp)
        workdir = scratch / folder.name
        shutil.copytree(folder, workdir, ignore=IGNORED, symlinks=True)
        for old in workdir.glob("*.ipynb"):
            old.unlink()  # the kernel needs the data files, not the notebooks
        running = {"index": -1}

        def on_cell_start(cell: NotebookNode, cell_index: int) -> None:
            running["index"] = cell_index

        client = NotebookClient(
            nb, km=_kernel_manager(scratch, sandboxed), timeout=timeout, allow_errors=True,
            interrupt_on_timeout=True, record_timing=False, startup_timeout=120,
            resources={"metadata": {"path": str(workdir)}}, on_cell_start=on_cell_start,
            log=_QUIET,
        )
        try:
            client.execute(stderr=subprocess.DEVNULL)  # the kernel's own start-up chatter
        except DeadKernelError as exc:
            raise KernelDied(f"the kernel died while running {cell_label(nb, running['index'])} "
                             f"(a crash, os._exit or running out of memory); no Part was checked") from exc
        except RuntimeError as exc:  # nbclient's kernel start failures and lost kernels
            raise KernelDied(f"the kernel stopped while running {cell_label(nb, running['index'])}: {exc}") from exc
    return nb


def error_line(cell: NotebookNode) -> str | None:
    """``Ename: evalue`` of the first error output of a cell, shortened; None without one."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            text = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".strip().rstrip(":")
            text = " ".join(text.split())
            return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."
    return None


def check_results(executed: NotebookNode, parts: list[Part]) -> tuple[dict[str, CheckResult], list[str]]:
    """Each released check's result, and the errors of other cells."""
    results: dict[str, CheckResult] = {}
    others: list[str] = []
    for index, cell in enumerate(executed.cells):
        if cell.cell_type != "code":
            continue
        error = error_line(cell)
        gid = roles.grade_id(cell)
        if roles.cell_role(cell) == "test" and gid:
            results.setdefault(gid, CheckResult(gid, error is None, error))
        elif error is not None:
            others.append(f"{cell_label(executed, index)}: {error}")
    for part in parts:
        for gid in part.checks:
            results.setdefault(gid, CheckResult(gid, False, "this test cell is missing from your working copy "
                                                            "(grading puts it back)"))
    wanted = {gid for part in parts for gid in part.checks}
    return {gid: r for gid, r in results.items() if gid in wanted}, others


def part_results(parts: list[Part], checks: dict[str, CheckResult]) -> list[PartResult]:
    """Per Part: checks passed of total, points, failed grade_ids."""
    out = []
    for part in parts:
        failed = [gid for gid in part.checks if not checks[gid].passed]
        out.append(PartResult(part.number, part.title, len(part.checks) - len(failed), len(part.checks),
                              part.points, failed))
    return out


def run_checks(working_copy: Path, release_nb: Path, *, timeout: float = DEFAULT_TIMEOUT,
               sandboxed: bool | None = None) -> Report:
    """Run the working copy with the released checks; ``sandboxed=None``: bubblewrap if usable."""
    working = read_notebook(working_copy)
    release = nbformat.read(str(release_nb), as_version=4)
    use_sandbox = sandbox.bwrap_available() if sandboxed is None else sandboxed
    parts = course_parts(release)
    executed = execute(with_released_tests(working, release), working_copy.parent,
                       timeout=timeout, sandboxed=use_sandbox)
    checks, others = check_results(executed, parts)
    return Report(part_results(parts, checks), checks, others, use_sandbox)


def format_report(report: Report) -> str:
    """One line per Part, failing checks below it, and the plain statement about hidden tests."""
    width = max((len(f"Part {p.number}: {p.title}") for p in report.parts), default=0)
    lines = []
    for part in report.parts:
        label = f"Part {part.number}: {part.title}".ljust(width)
        if part.total:
            verdict = f"{part.passed}/{part.total} visible checks pass"
        else:
            verdict = "no autograded checks (graded by hand)"
        lines.append(f"{label}  {verdict:<38} {part.points:g} points at stake")
        for gid in part.failed:
            lines.append(f"    FAILED {gid}: {report.checks[gid].error}")
    if report.other_errors:
        lines.append(f"{len(report.other_errors)} other cell(s) raised errors; first: {report.other_errors[0]}")
    passed = sum(p.passed for p in report.parts)
    total = sum(p.total for p in report.parts)
    lines.append(f"{passed}/{total} visible checks pass "
                 f"({'in the bubblewrap sandbox' if report.sandboxed else 'without a sandbox: bubblewrap is not usable here'}).")
    lines.append("Hidden tests run only at grading: passing the visible checks does not guarantee the points.")
    return "\n".join(lines)
