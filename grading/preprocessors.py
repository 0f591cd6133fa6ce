"""nbgrader preprocessors used by ``nbgrader autograde`` in this course.

``SanitizeNbgraderMetadata``
    keeps a copy-pasted or foreign nbgrader cell from aborting the grading.
``OverwriteCellsAnywhere``
    nbgrader's ``OverwriteCells`` that can put back a deleted test cell even
    when the cell before it is missing too (an empty notebook, say).
``StripHiddenTests``
    records every test cell's full source and removes its hidden tests, so the
    student's kernel only ever runs (and sees) the visible checks.
``SafeExecute``
    nbgrader's ``Execute`` that survives a dying or unresponsive kernel (the
    rest of the notebook is marked "not run" instead of the whole submission
    failing) and caps outputs while they stream in.
``SealedVerdict``
    re-checks every test cell, hidden tests included, out of process with
    :func:`grading.sealed.run_sealed`, keeps a test cell's points only if it
    passed in the kernel *and* sealed, and puts the full test sources back.
``LimitOutputSize``
    caps the characters of every cell's outputs after execution (nbgrader's
    ``LimitOutput`` only counts lines), per cell and for the whole notebook.

See ``nbgrader_config.py`` for where they sit in the preprocessor lists.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from jupyter_core.utils import ensure_async, run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbformat.v4 import new_output
from traitlets import Bool, Float, Integer, List, Unicode

from nbgrader.preprocessors import Execute, NbGraderPreprocessor, OverwriteCells

import sys

from grading import sandbox as sandboxing
from grading.hidden_region import (
    FULL_TEST_SOURCES,
    HiddenRegion,
    hidden_line_numbers,
    restore_test_cells,
    strip_test_cells,
)
from grading.notebook import cell_role, grade_id
from grading.sealed import Verdict, VerdictStatus, run_sealed

__all__ = ["FULL_TEST_SOURCES", "hidden_line_numbers"]

DEFAULT_MAX_OUTPUT_CHARS = 100_000
DEFAULT_MAX_IMAGE_CHARS = 5_000_000
DEFAULT_MAX_TOTAL_CHARS = 1_000_000
DEFAULT_MAX_TOTAL_IMAGE_CHARS = 5_000_000
MIN_ERROR_CHARS = 2_000  # an error's message and traceback keep at least this much, budget or not
TRUNCATED_NOTE = "\n... output truncated ({limit} characters per cell) ...\n"
TOTAL_TRUNCATED_NOTE = (
    "\n... output truncated (the whole notebook keeps {chars} characters of text and {images} of images) ...\n"
)
KERNEL_DIED = "the kernel died while running this cell (os._exit, a crash, or the memory limit)"
KERNEL_STOPPED = (
    "the cell was still running after the time limit and did not stop when interrupted; "
    "the kernel was shut down"
)
NOT_RUN = "not run: the kernel died in an earlier cell"
NOT_RUN_STOPPED = "not run: the kernel was shut down in an earlier cell (it did not respond to the interrupt)"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --------------------------------------------------------------------------- sizes


def _is_image(mime: str) -> bool:
    return mime.startswith("image/") and mime != "image/svg+xml"


def _text_of(value: Any) -> str:
    """A MIME bundle value or stream text as one string (nbformat allows lists)."""
    if isinstance(value, list):
        return "".join(str(part) for part in value)
    if isinstance(value, str):
        return value
    return str(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


def output_sizes(output: Mapping[str, Any]) -> tuple[int, int]:
    """``(text_chars, image_chars)`` of one output (stream, display, result or error)."""
    kind = output.get("output_type")
    if kind == "stream":
        return len(_text_of(output.get("text", ""))), 0
    if kind == "error":
        return sum(len(line) for line in output.get("traceback", [])), 0
    text = image = 0
    for mime, value in (output.get("data") or {}).items():
        if _is_image(mime):
            image += len(_text_of(value))
        else:
            text += len(_text_of(value))
    return text, image


def _truncation_note(name: str, limit: int, text: str | None = None) -> NotebookNode:
    return new_output("stream", name=name, text=TRUNCATED_NOTE.format(limit=limit) if text is None else text)


def error_output(ename: str, evalue: str) -> NotebookNode:
    """An error output whose traceback is the single line ``ename: evalue``."""
    line = f"{ename}: {evalue}" if evalue else ename
    return new_output("error", ename=ename, evalue=evalue, traceback=[line])


def cap_traceback(output: NotebookNode, max_chars: int) -> NotebookNode:
    """Shorten an error output's message and traceback to about ``max_chars`` characters each."""
    output["evalue"] = _clip(str(output.get("evalue", "")), max_chars)
    lines: list[str] = []
    used = 0
    for line in output.get("traceback", []):
        if used + len(line) > max_chars:
            lines.append("... traceback truncated ...")
            break
        lines.append(line)
        used += len(line)
    output["traceback"] = lines
    return output


def cap_outputs(
    outputs: Sequence[NotebookNode],
    max_chars: int,
    max_image_chars: int,
    *,
    note_text: str | None = None,
    error_chars: int | None = None,
) -> list[NotebookNode]:
    """Outputs of one cell limited to ``max_chars`` of text and ``max_image_chars`` of images.

    Error outputs are always kept (grading depends on them) with their message
    and traceback shortened to ``error_chars`` each (default ``max_chars``);
    stream text is cut at the limit and followed by one note per stream name
    (so a cell that wrote to stderr still has stderr output); other text data
    (``text/plain``, ``text/html``...) over the limit is replaced by a note;
    images over the image budget are dropped.  ``note_text`` replaces the
    default "truncated (N characters per cell)" note.
    """
    max_chars = max(max_chars, 0)
    max_image_chars = max(max_image_chars, 0)
    kept: list[NotebookNode] = []
    text_used = image_used = 0
    noted: set[str] = set()

    def note(name: str) -> None:
        if name not in noted:
            noted.add(name)
            kept.append(_truncation_note(name, max_chars, note_text))

    for output in outputs:
        kind = output.get("output_type")
        if kind == "error":
            kept.append(cap_traceback(output, max_chars if error_chars is None else error_chars))
            continue
        if kind == "stream":
            text = _text_of(output.get("text", ""))
            name = output.get("name", "stdout")
            remaining = max_chars - text_used
            if len(text) <= remaining:
                kept.append(output)
                text_used += len(text)
                continue
            if remaining > 0:
                output["text"] = text[:remaining]
                kept.append(output)
                text_used = max_chars
            note(name)
            continue
        data = output.get("data") or {}
        new_data: dict[str, Any] = {}
        for mime, value in data.items():
            size = len(_text_of(value))
            if _is_image(mime):
                if image_used + size <= max_image_chars:
                    new_data[mime] = value
                    image_used += size
            elif text_used + size <= max_chars:
                new_data[mime] = value
                text_used += size
        if new_data:
            output["data"] = new_data
            kept.append(output)
        if len(new_data) < len(data):
            note("stdout")
    return kept


# --------------------------------------------------------------------------- files


def notebook_dir(resources: Mapping[str, Any]) -> Path | None:
    """Directory of the notebook being converted (the kernel's working directory)."""
    path = (resources.get("metadata") or {}).get("path")
    return Path(path).resolve() if path else None


def remove_special_files(directory: Path) -> list[Path]:
    """Delete symlinks, FIFOs, sockets and devices below ``directory``; return them.

    Student code may create them in its working directory; nbgrader later
    copies that directory by following links (into ``feedback/``, for
    example), so a link to a course file would leak it.
    """
    removed: list[Path] = []
    for root, dirs, files in os.walk(directory):
        for name in [*dirs, *files]:
            path = Path(root) / name
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                path.unlink()
                removed.append(path)
        dirs[:] = [d for d in dirs if (Path(root) / d).is_dir() and not (Path(root) / d).is_symlink()]
    return removed


@contextlib.contextmanager
def notebooks_hidden(directory: Path | None) -> Iterator[None]:
    """Move the ``*.ipynb`` files of ``directory`` away while the block runs.

    During autograding the notebook being executed lies in the kernel's
    working directory with the hidden tests restored; student code must not
    be able to read them.
    """
    if directory is None or not directory.is_dir():
        yield
        return
    stash = Path(tempfile.mkdtemp(prefix="nbgrader-hidden-"))
    moved = []
    try:
        for path in directory.glob("*.ipynb"):
            if path.is_file() and not path.is_symlink():
                shutil.move(str(path), stash / path.name)
                moved.append(path)
        yield
    finally:
        for path in moved:
            if path.exists() or path.is_symlink():
                path.unlink()
            shutil.move(str(stash / path.name), path)
        shutil.rmtree(stash, ignore_errors=True)


def copy_data_files(src: Path, dest: Path) -> None:
    """Copy regular files (not notebooks, not links) from ``src`` into ``dest``."""
    for root, dirs, files in os.walk(src):
        root_path = Path(root)
        dirs[:] = [d for d in dirs if not (root_path / d).is_symlink() and d not in {".ipynb_checkpoints"}]
        target = dest / root_path.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            path = root_path / name
            if path.suffix != ".ipynb" and path.is_file() and not path.is_symlink():
                shutil.copy2(path, target / name)


# --------------------------------------------------------------------------- StripHiddenTests


class StripHiddenTests(NbGraderPreprocessor):
    """Run only the visible part of every test cell in the student's kernel.

    Whatever the kernel executes, student code can read back (IPython's input
    history ``In``/``_ih``, ``linecache``, the caller's frame) and print into
    the feedback, so the hidden tests must never reach the kernel.  This
    preprocessor records the full source of every test cell in
    ``resources[FULL_TEST_SOURCES]`` (by grade_id) and removes the hidden-test
    regions from the cells.  :class:`SealedVerdict` re-checks the *full*
    sources out of process (so the hidden tests still decide the points) and
    puts them back into the cells, so the autograded notebook holds the
    instructor's test cells as nbgrader expects.  Sits before ``SafeExecute``
    in ``Autograde.autograde_preprocessors``; it needs ``SealedVerdict`` after
    it (without it, the hidden tests would not be run at all).
    """

    def preprocess(self, nb: NotebookNode, resources: Any) -> tuple[NotebookNode, Any]:
        region = HiddenRegion.from_config(self.config)
        resources[FULL_TEST_SOURCES] = strip_test_cells(nb, region, self.log)
        return nb, resources


# --------------------------------------------------------------------------- SafeExecute


class SafeExecute(Execute):
    """nbgrader's ``Execute`` with dead-kernel tolerance and streaming output caps.

    * If the kernel dies in a cell, that cell gets an error output and every
      later code cell gets a "not run" error output; no exception escapes, so
      the cells that ran are still graded and the batch goes on.  A kernel
      that fails to *start* still raises (that is a grader problem, not a
      student one).
    * A kernel that ignores the interrupt sent at the time limit (student code
      that ignores SIGINT and loops) is treated the same way: nbclient raises
      ``CellTimeoutError`` when no output arrives after the interrupt, the
      kernel is shut down (killed), that cell gets an error output and every
      later code cell a "not run" one.
    * Outputs are counted while they arrive: past ``max_output_chars`` text
      characters (or ``max_image_chars`` of images) per cell, further output
      is dropped and one "output truncated" note is added.  Error outputs
      are always kept.
    * The notebooks are moved out of the kernel's working directory while it
      runs (they hold the hidden tests), and links or special files the
      student code left there are removed afterwards.
    """

    max_output_chars = Integer(
        DEFAULT_MAX_OUTPUT_CHARS, help="Text characters of output kept per cell while executing."
    ).tag(config=True)
    max_image_chars = Integer(
        DEFAULT_MAX_IMAGE_CHARS, help="Characters of image data kept per cell while executing."
    ).tag(config=True)

    _dead_at: int | None = None
    _not_run_message = NOT_RUN
    _text_used = 0
    _image_used = 0
    _noted: set[str]

    hide_notebooks = Bool(
        True, help="Move the notebooks out of the kernel's working directory while it runs."
    ).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: Any = None, km: Any = None) -> tuple[NotebookNode, Any]:
        self._dead_at = None
        self._not_run_message = NOT_RUN
        self._reset_budget()
        workdir = notebook_dir(resources or {})
        try:
            with notebooks_hidden(workdir if self.hide_notebooks else None):
                return super().preprocess(nb, resources, km)
        finally:
            if workdir is not None:
                for path in remove_special_files(workdir):
                    self.log.warning("Removed %s created by the notebook (not a regular file)", path)

    def _reset_budget(self) -> None:
        self._text_used = 0
        self._image_used = 0
        self._noted = set()

    def preprocess_cell(self, cell: NotebookNode, resources: Any, index: int) -> tuple[NotebookNode, Any]:
        self._reset_budget()
        if self._dead_at is not None:
            if cell.cell_type == "code":
                cell.outputs = [error_output("KernelDied", self._not_run_message)]
                cell.execution_count = None
            return cell, self.resources
        try:
            return super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            self.log.error("Kernel died in cell %d; later cells are marked as not run", index)
            self._dead_at = index
            cell.outputs.append(error_output("DeadKernelError", KERNEL_DIED))
            return cell, self.resources
        except CellTimeoutError:
            # nbclient interrupted the kernel at the time limit and then got no output within
            # iopub_timeout: the kernel ignores the interrupt and is as good as dead.
            self.log.error("Cell %d still ran after the interrupt; the kernel is shut down and later cells "
                           "are marked as not run", index)
            self._dead_at = index
            self._not_run_message = NOT_RUN_STOPPED
            self._stop_kernel()
            cell.outputs.append(error_output("CellTimeoutError", KERNEL_STOPPED))
            return cell, self.resources

    def _stop_kernel(self) -> None:
        """Kill the kernel now (no polite shutdown request: it would not be answered)."""
        if getattr(self, "km", None) is None:
            return
        try:
            run_sync(self._async_stop_kernel)()
        except Exception as exc:  # noqa: BLE001 - the cleanup of setup_kernel() tries again
            self.log.warning("Could not shut the unresponsive kernel down: %s", exc)

    async def _async_stop_kernel(self) -> None:
        assert self.km is not None
        if await ensure_async(self.km.is_alive()):
            await ensure_async(self.km.shutdown_kernel(now=True))

    def clear_output(self, outs: list[NotebookNode], msg: dict[str, Any], cell_index: int) -> None:
        super().clear_output(outs, msg, cell_index)
        if not outs:
            self._reset_budget()

    def output(
        self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None, cell_index: int
    ) -> NotebookNode | None:
        if self.clear_before_next_output:
            self._reset_budget()
        msg_type = msg["msg_type"]
        content = msg.get("content", {})
        if msg_type == "error":
            out = super().output(outs, msg, display_id, cell_index)
            if out is not None:
                cap_traceback(out, self.max_output_chars)
            return out
        if msg_type == "stream":
            return self._stream_output(outs, msg, display_id, cell_index)
        text, image = output_sizes({"output_type": msg_type, "data": content.get("data", {})})
        if self._text_used + text > self.max_output_chars or self._image_used + image > self.max_image_chars:
            self._note(outs, "stdout")
            return None
        self._text_used += text
        self._image_used += image
        return super().output(outs, msg, display_id, cell_index)

    def _stream_output(
        self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None, cell_index: int
    ) -> NotebookNode | None:
        content = msg["content"]
        name = content.get("name", "stdout")
        text = _text_of(content.get("text", ""))
        remaining = self.max_output_chars - self._text_used
        if len(text) <= remaining:
            self._text_used += len(text)
            return super().output(outs, msg, display_id, cell_index)
        out = None
        if remaining > 0:
            clipped = dict(msg, content=dict(content, text=text[:remaining]))
            out = super().output(outs, clipped, display_id, cell_index)
            self._text_used = self.max_output_chars
        self._note(outs, name)
        return out

    def _note(self, outs: list[NotebookNode], name: str) -> None:
        """Append one truncation note per stream name and cell."""
        if name in self._noted:
            return
        self._noted.add(name)
        outs.append(_truncation_note(name, self.max_output_chars))


# --------------------------------------------------------------------------- SanitizeNbgraderMetadata


class SanitizeNbgraderMetadata(NbGraderPreprocessor):
    """Turn cells with unusable nbgrader metadata into plain student cells.

    Two cases abort the grading of a whole submission (or, for the first,
    the whole ``nbgrader autograde`` run) in nbgrader 0.9.6:

    * ``DeduplicateIds`` empties the metadata of every extra copy of a cell
      whose ``grade_id`` repeats (a student copy-pasted a test cell) and the
      validator then rejects the empty dict as an old schema version;
    * ``OverwriteCells`` deletes a ``grade_id`` the gradebook does not know
      (a cell pasted from another notebook, a renamed id) and the validator
      then rejects the cell.

    Removing ``metadata.nbgrader`` from such cells keeps their code as
    ordinary student code.  Runs between ``DeduplicateIds`` and
    ``OverwriteCells`` in ``Autograde.sanitize_preprocessors``.
    """

    def preprocess(self, nb: NotebookNode, resources: Any) -> tuple[NotebookNode, Any]:
        self._known = known_grade_ids(resources)
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell: NotebookNode, resources: Any, index: int) -> tuple[NotebookNode, Any]:
        if "nbgrader" not in cell.metadata:
            return cell, resources
        meta = cell.metadata["nbgrader"]
        gid = meta.get("grade_id") if isinstance(meta, Mapping) else None
        if not meta or (gid is not None and self._known is not None and gid not in self._known):
            self.log.warning("Cell %d: nbgrader metadata %r removed (empty or unknown grade_id)", index, gid)
            del cell.metadata["nbgrader"]
        return cell, resources


def known_grade_ids(resources: Mapping[str, Any]) -> set[str] | None:
    """grade_ids of the notebook's source cells in the gradebook (``None`` if unavailable)."""
    from nbgrader.api import Gradebook, MissingEntry

    info = resources.get("nbgrader") or {}
    if not all(key in info for key in ("db_url", "notebook", "assignment")):
        return None
    with Gradebook(info["db_url"]) as gb:
        try:
            notebook = gb.find_notebook(info["notebook"], info["assignment"])
        except MissingEntry:
            return None
        return {cell.name for cell in notebook.source_cells}


# --------------------------------------------------------------------------- OverwriteCellsAnywhere


class OverwriteCellsAnywhere(OverwriteCells):
    """nbgrader's ``OverwriteCells`` that puts back any deleted grade cell.

    With ``add_missing_cells``, nbgrader 0.9.6 inserts a missing grade cell
    right after the source cell before it and raises ``KeyError`` when that
    cell is missing too (an empty notebook; an answer cell deleted together
    with the test after it), so the submission is not graded.  Here a missing
    grade cell goes after the nearest preceding source cell that is present
    (answer, test or read-only), or at the start of the notebook; cells put
    back earlier count as present, so consecutive missing cells keep their
    order.  Used in place of ``OverwriteCells`` in
    ``Autograde.sanitize_preprocessors`` (it reads ``OverwriteCells``'s
    configuration, ``add_missing_cells`` included).
    """

    def add_missing_grade_cells(self, nb: NotebookNode, resources: Any) -> tuple[NotebookNode, Any]:
        source_nb = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        source_cells = list(source_nb.source_cells)
        grade_cells = {cell.name: cell for cell in source_nb.grade_cells}
        solution_ids = {cell.name for cell in source_nb.solution_cells}
        for position, source_cell in enumerate(source_cells):
            name = source_cell.name
            if name not in grade_cells or name in _present_grade_ids(nb):
                continue
            self.log.warning("Missing grade cell %s encountered, adding to notebook", name)
            cell = self.missing_cell_transform(source_cell, grade_cells[name].max_score,
                                               is_solution=name in solution_ids)
            present = _present_grade_ids(nb)
            before = [c.name for c in source_cells[:position] if c.name in present]
            nb.cells.insert(present[before[-1]] + 1 if before else 0, cell)
        return nb, resources


def _present_grade_ids(nb: NotebookNode) -> dict[str, int]:
    """grade_id -> index of the notebook's cells that have one (the last one if repeated)."""
    return {gid: index for index, cell in enumerate(nb.cells) if (gid := grade_id(cell)) is not None}


# --------------------------------------------------------------------------- LimitOutputSize


class LimitOutputSize(NbGraderPreprocessor):
    """Cap the characters of the outputs (text and images), per cell and for the whole notebook.

    Every code cell keeps at most ``max_chars`` characters of text and
    ``max_image_chars`` of images (see :func:`cap_outputs`), and all cells
    together at most ``max_total_chars`` and ``max_total_image_chars``: many
    cells that each stay under the per-cell cap cannot add up to a huge
    graded notebook and feedback page.  The notebook budget is spent on test
    cells first (their outputs are the feedback that matters), then on the
    other cells in notebook order; a cell cut because the budget ran out gets
    a note saying so.  Error outputs are always kept (their message and
    traceback shortened to ``max_chars`` each, or to 2,000 characters once the
    budget is spent) and count against the budget.  Sits after
    ``SealedVerdict``, so it measures the outputs that are saved.
    """

    max_chars = Integer(DEFAULT_MAX_OUTPUT_CHARS, help="Text characters of output kept per cell.").tag(
        config=True
    )
    max_image_chars = Integer(DEFAULT_MAX_IMAGE_CHARS, help="Characters of image data kept per cell.").tag(
        config=True
    )
    max_total_chars = Integer(
        DEFAULT_MAX_TOTAL_CHARS, help="Text characters of output kept in the whole notebook."
    ).tag(config=True)
    max_total_image_chars = Integer(
        DEFAULT_MAX_TOTAL_IMAGE_CHARS, help="Characters of image data kept in the whole notebook."
    ).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: Any) -> tuple[NotebookNode, Any]:
        text_left, image_left = self.max_total_chars, self.max_total_image_chars
        code = [(index, cell) for index, cell in enumerate(nb.cells) if cell.cell_type == "code"]
        code.sort(key=lambda item: (cell_role(item[1]) != "test", item[0]))
        budget_note = TOTAL_TRUNCATED_NOTE.format(chars=self.max_total_chars, images=self.max_total_image_chars)
        for _, cell in code:
            text_limit = min(self.max_chars, text_left)
            image_limit = min(self.max_image_chars, image_left)
            by_budget = text_limit < self.max_chars or image_limit < self.max_image_chars
            cell.outputs = cap_outputs(
                cell.outputs,
                text_limit,
                image_limit,
                note_text=budget_note if by_budget else None,
                error_chars=max(text_limit, min(self.max_chars, MIN_ERROR_CHARS)),
            )
            for output in cell.outputs:
                text, image = output_sizes(output)
                text_left = max(text_left - text - len(str(output.get("evalue", ""))), 0)
                image_left = max(image_left - image, 0)
        return nb, resources


# --------------------------------------------------------------------------- SealedVerdict


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
            text = _text_of(output.get("text", ""))
            if stdout_used >= max_stdout_chars:
                continue
            output["text"] = _clip(text, max_stdout_chars - stdout_used)
            stdout_used += len(text)
        kept.append(output)
    if failure is None:
        return kept
    ename, message = failure
    return [error_output(ename, _clip(message, max_message_chars)), *kept]


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

    student_names = List(Unicode(), help="Names the tests may use from the student's code.").tag(config=True)
    setup_grade_ids = List(Unicode(), default_value=["imports"], help="grade_ids of setup cells.").tag(
        config=True
    )
    cell_timeout = Float(30.0, help="Seconds per cell in the sealed run.").tag(config=True)
    startup_timeout = Float(60.0, help="Seconds for the sealed worker to start.").tag(config=True)
    sandbox = Bool(True, help="Run the sealed worker inside the bubblewrap sandbox.").tag(config=True)
    memory_bytes = Integer(sandboxing.DEFAULT_MEMORY_BYTES, help="Address-space limit of the sandboxed worker.").tag(
        config=True
    )
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
        return tuple(sandboxing.sandbox_prefix(workdir, memory_bytes=self.memory_bytes))

    def preprocess(self, nb: NotebookNode, resources: Any) -> tuple[NotebookNode, Any]:
        restored = restore_test_cells(nb, (resources or {}).get(FULL_TEST_SOURCES) or {})
        if restored:
            self.log.info("Hidden tests put back into %d test cells for the sealed re-check", restored)
        source_dir = notebook_dir(resources)
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
