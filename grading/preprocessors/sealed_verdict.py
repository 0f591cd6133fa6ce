"""``SealedVerdict``: the sealed re-check of every test cell decides its points, with the kernel's result."""

from __future__ import annotations

import copy
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Bool, Float, Integer, List, Unicode

from grading import sandbox as sandboxing
from grading.hidden_region import FULL_TEST_SOURCES, HiddenRegion, restore_test_cells
from grading.memory_bound import SubmissionLimits
from grading.notebook import cell_role, grade_id
from grading.preprocessors.files import copy_data_files, notebook_dir
from grading.preprocessors.outputs import clip, error_output, text_of
from grading.sealed import Verdict, VerdictStatus, protocol, run_sealed

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def first_error(outputs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The first ``error`` output, or ``None``."""
    for output in outputs:
        if output.get("output_type") == "error":
            return output
    return None


def kernel_failure(outputs: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """``(ename, message)`` of the kernel's error in a test cell, or ``None`` if it passed."""
    error = first_error(outputs)
    if error is None:
        return None
    ename = str(error.get("ename") or "Error")
    evalue = _ANSI.sub("", str(error.get("evalue") or ""))
    if ename == "CellTimeoutError" and not evalue:
        evalue = "no reply from the kernel before the timeout"
    return ename, evalue


def merged_test_outputs(
    outputs: Sequence[NotebookNode],
    verdict: Verdict | None,
    *,
    max_stdout_chars: int,
    max_message_chars: int = 2_000,
) -> list[NotebookNode]:
    """Final outputs of a test cell from its kernel outputs and its sealed verdict.

    stderr streams are dropped (nbgrader zeroes any cell with stderr), stdout
    is kept up to ``max_stdout_chars``, rich outputs are kept, and if the cell
    failed in the kernel or in the sealed check the outputs start with a
    one-line error (no traceback lines; the sealed checker has already
    redacted a failing line of the hidden-test region).
    """
    failure = kernel_failure(outputs)
    if failure is None:
        if verdict is None:
            failure = ("SealedCheckMissing", "this test was not re-checked in the sealed run")
        elif verdict.status is VerdictStatus.NOT_RUN:
            failure = ("SealedCheckNotRun", verdict.detail)
        elif not verdict.passed:
            failure = (verdict.ename or "SealedCheckFailed", verdict.detail)
    kept: list[NotebookNode] = []
    stdout_used = 0
    for output in outputs:
        kind = output.get("output_type")
        if kind == "error" or (kind == "stream" and output.get("name") == "stderr"):
            continue
        if kind == "stream":
            text = text_of(output.get("text", ""))
            if stdout_used >= max_stdout_chars:
                continue
            output["text"] = clip(text, max_stdout_chars - stdout_used)
            stdout_used += len(text)
        kept.append(output)
    if failure is None:
        return kept
    ename, message = failure
    return [error_output(ename, clip(message, max_message_chars)), *kept]


class SealedVerdict(NbGraderPreprocessor):
    """Merge the kernel's results with the sealed re-check of every test cell.

    A test cell keeps its points only if it ran without an ``error`` output in
    the kernel and its sealed verdict passed.  The sealed re-check runs the
    full test cells: the sources :class:`StripHiddenTests` recorded (hidden
    tests included) are put back into the cells first, so the autograded
    notebook holds them too.  Failures of the sealed machinery itself raise,
    so nbgrader reports the submission as not graded instead of silently
    giving zero.
    """

    student_names = List(
        Unicode(),
        help="Names test cells read from the student's side even where they shadow a builtin (every other "
        "student name is read too, builtins and the setup cells' imports excepted; grading/CONTRACT.md).",
    ).tag(config=True)
    setup_grade_ids = List(Unicode(), default_value=["imports"], help="grade_ids of setup cells.").tag(
        config=True
    )
    cell_timeout = Float(30.0, help="Seconds per cell in the sealed run.").tag(config=True)
    startup_timeout = Float(60.0, help="Seconds for the sealed worker to start.").tag(config=True)
    sandbox = Bool(True, help="Run the sealed worker inside the bubblewrap sandbox.").tag(config=True)
    memory_bytes = Integer(
        sandboxing.DEFAULT_MEMORY_BYTES,
        help="Address-space limit (bytes) of each process of the sandboxed worker (RLIMIT_AS).",
    ).tag(config=True)
    nproc = Integer(
        sandboxing.DEFAULT_NPROC,
        help="Processes the sandboxed worker may have at once (RLIMIT_NPROC of its sandbox uid).",
    ).tag(config=True)
    max_result_bytes = Integer(
        protocol.MAX_FRAME_BYTES,
        help="Bytes one reply of the worker may hold (a student result larger than this fails its test cell).",
    ).tag(config=True)
    max_stdout_chars = Integer(10_000, help="stdout characters kept in a test cell's feedback.").tag(config=True)
    python = Unicode(sys.executable, help="Python interpreter of the sealed worker (needs numpy and IPython).").tag(
        config=True
    )

    def worker_prefix(self, workdir: Path) -> tuple[str, ...]:
        """Sandbox prefix for the sealed worker, or ``()`` when the sandbox is off."""
        if not self.sandbox:
            return ()
        if not sandboxing.bwrap_available():
            raise RuntimeError(
                "bubblewrap is not usable on this machine; set SealedVerdict.sandbox = False "
                "only for development"
            )
        return tuple(sandboxing.sandbox_prefix(workdir, memory_bytes=self.memory_bytes, nproc=self.nproc))

    def preprocess(self, nb: NotebookNode, resources: Any) -> tuple[NotebookNode, Any]:
        restored = restore_test_cells(nb, (resources or {}).get(FULL_TEST_SOURCES) or {})
        if restored:
            self.log.info("Hidden tests put back into %d test cells for the sealed re-check", restored)
        if not Execute(config=self.config).enabled:
            # ``nbgrader autograde --no-execute``: grade the outputs the notebook holds, as nbgrader does.
            self.log.info("Execution disabled (--no-execute): no sealed re-check, the saved outputs are graded")
            return nb, resources
        source_dir = notebook_dir(resources)
        bound = SubmissionLimits(config=self.config).in_force()
        self.log.info("Sealed worker: %s", bound.describe())
        with tempfile.TemporaryDirectory(prefix="sealed-work-") as tmp:
            # The worker gets a copy of the data files, never the notebooks (hidden tests).
            workdir = Path(tmp)
            if source_dir is not None:
                copy_data_files(source_dir, workdir)
            verdicts = run_sealed(
                copy.deepcopy(nb),
                student_names=list(self.student_names),
                setup_grade_ids=tuple(self.setup_grade_ids),
                worker_prefix=self.worker_prefix(workdir),
                cell_timeout=self.cell_timeout,
                startup_timeout=self.startup_timeout,
                python=self.python,
                workdir=str(workdir),
                region=HiddenRegion.from_config(self.config),
                max_result_bytes=self.max_result_bytes,
                memory_bound=bound,
            )
        broken = [v for v in verdicts.values() if v.status is VerdictStatus.INFRASTRUCTURE]
        if broken:
            # A status only the checker sets (student code cannot stop the worker from starting):
            # a grader problem, so the submission is reported as not graded instead of scoring zero.
            raise RuntimeError(f"sealed re-check unavailable: {broken[0].detail}")
        for cell in nb.cells:
            if cell_role(cell, self.setup_grade_ids) != "test":
                continue
            verdict = verdicts.get(grade_id(cell) or "")
            cell.outputs = merged_test_outputs(cell.outputs, verdict, max_stdout_chars=self.max_stdout_chars)
            if verdict is not None:
                self.log.info(
                    "Sealed %s: %s (%.2fs)", verdict.grade_id, verdict.status.value, verdict.seconds
                )
        return nb, resources
