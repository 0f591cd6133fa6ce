"""``TolerantExecute``: nbgrader's ``Execute`` that survives a dying kernel and caps outputs as they stream."""

from __future__ import annotations

from queue import Empty
from typing import Any

from jupyter_core.utils import ensure_async, run_sync
from nbclient.exceptions import CellExecutionComplete, CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute
from traitlets import Bool, Integer, List, Unicode

from grading.memory_bound import SubmissionLimits
from grading.notebook import cell_role, grade_id
from grading.preprocessors.files import notebook_dir, notebooks_hidden, remove_special_files
from grading.preprocessors.outputs import (
    DEFAULT_MAX_IMAGE_CHARS,
    DEFAULT_MAX_OUTPUT_CHARS,
    cap_traceback,
    char_limit,
    error_output,
    output_sizes,
    text_of,
    truncation_note,
)
from grading.sandbox import SEALED_KERNEL_NAME, kernel_limit_arguments

KERNEL_DIED = "the kernel died while running this cell (os._exit, a crash, or the memory limit)"
KERNEL_STOPPED = (
    "the cell was still running after the time limit and did not stop when interrupted; "
    "the kernel was shut down"
)
NOT_RUN = "not run: the kernel died in an earlier cell"
NOT_RUN_STOPPED = "not run: the kernel was shut down in an earlier cell (it did not respond to the interrupt)"
NOT_RUN_STALLED = "not run: the kernel was shut down in an earlier cell (its output did not finish arriving)"


def output_stalled(seconds: int) -> str:
    """Error message of a cell whose output was still arriving ``seconds`` after it ended."""
    return f"the cell ended but its output was still arriving {seconds} s later; the kernel was shut down"


LOST_OUTPUT = (
    "[some of this cell's output was lost on its way: it was written faster than the grader could read "
    "it, so it may be incomplete]"
)

SKIPPED = "Not run while grading: this read-only cell earns no points (run the notebook yourself to see it).\n"


class TolerantExecute(Execute):
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
    * A cell that has ended may leave output still on its way (megabytes of it
      take seconds to handle on a busy machine).  nbclient waits only
      ``iopub_timeout`` for it; here that short wait is kept for a cell
      interrupted at its time limit (where it detects the ignored interrupt),
      and a cell that ended by itself gets ``output_timeout``.  Output still
      arriving after that stops the kernel as above, with a message that says so.
    * ZeroMQ drops the messages a slow reader has no room for (1,000 queued per
      socket), and the status that ends a cell may be among them.  After
      ``_probe_after`` seconds without a message a ``kernel_info`` request is
      sent: the kernel answers one shell request at a time, so the idle status
      of that request proves the cell is over and nothing more of it is coming.
      The cell then ends with a note that output was lost (nbgrader's
      ``Execute`` adds an error output that was lost from the kernel's reply,
      so a failing cell still fails).
    * Outputs are counted while they arrive: past ``max_output_chars`` text
      characters (or ``max_image_chars`` of images) per cell, further output
      is dropped and one "output truncated" note is added.  Error outputs
      are always kept.
    * The notebooks are moved out of the kernel's working directory while it
      runs (they hold the hidden tests), and links or special files the
      student code left there are removed afterwards.
    * Read-only cells named in ``skip_cells`` (measurements and plots that earn
      no points) are not run; they get a one-line note instead.  Only cells that
      are read-only after nbgrader restored them from the gradebook qualify, so
      student code cannot skip a test cell or its own code this way.
    """

    max_output_chars = char_limit(DEFAULT_MAX_OUTPUT_CHARS, "Text characters of output kept per cell while executing.")
    max_image_chars = char_limit(DEFAULT_MAX_IMAGE_CHARS, "Characters of image data kept per cell while executing.")

    _dead_at: int | None = None
    _interrupted = False
    _iopub_after_interrupt = 4
    _probe_after = 2
    _not_run_message = NOT_RUN
    _text_used = 0
    _image_used = 0
    _noted: set[str]

    memory_bytes = Integer(
        None,
        allow_none=True,
        help="Address-space limit (bytes) of each process of the sandboxed kernel (python3-sealed); "
        "None keeps the kernelspec's --memory-bytes (4 GiB unless written otherwise).",
    ).tag(config=True)
    nproc = Integer(
        None,
        allow_none=True,
        help="Processes the sandboxed kernel (python3-sealed) may have at once; None keeps 512.",
    ).tag(config=True)

    skip_cells = List(
        Unicode(),
        default_value=[],
        help="grade_ids of read-only, ungraded code cells not to run while grading (profiling and plots "
        "that take seconds and earn no points). Test, answer and student cells are always run.",
    ).tag(config=True)

    output_timeout = Integer(
        60,
        help="Seconds to wait, once a cell has ended by itself, for the rest of its output (iopub_timeout "
        "stays the wait after the interrupt at the time limit). Past it the kernel is shut down and later "
        "cells are not run.",
    ).tag(config=True)

    hide_notebooks = Bool(
        True, help="Move the notebooks out of the kernel's working directory while it runs."
    ).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: Any = None, km: Any = None) -> tuple[NotebookNode, Any]:
        self._dead_at = None
        self._not_run_message = NOT_RUN
        self._reset_budget()
        workdir = notebook_dir(resources or {})
        if self.kernel_name == SEALED_KERNEL_NAME:
            # The kernel's provisioner (grading.kernel_provisioner) applies the bound per submission.
            self.log.info("Kernel: %s", SubmissionLimits(config=self.config).in_force().describe())
            limits = kernel_limit_arguments(memory_bytes=self.memory_bytes, nproc=self.nproc)
            self.extra_arguments = [*self.extra_arguments, *(a for a in limits if a not in self.extra_arguments)]
        self._iopub_after_interrupt = self.iopub_timeout
        try:
            with notebooks_hidden(workdir if self.hide_notebooks else None):
                return super().preprocess(nb, resources, km)
        finally:
            self.iopub_timeout = self._iopub_after_interrupt
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
        if cell_role(cell) == "readonly" and grade_id(cell) in self.skip_cells:
            cell.outputs = [NotebookNode(output_type="stream", name="stdout", text=SKIPPED)]
            cell.execution_count = None
            return cell, self.resources
        # nbclient reads iopub_timeout after the reply; _async_handle_timeout shortens it on an interrupt.
        self._interrupted = False
        self.iopub_timeout = max(self.output_timeout, self._iopub_after_interrupt)
        try:
            return super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            self.log.error("Kernel died in cell %d; later cells are marked as not run", index)
            self._dead_at = index
            tree = getattr(getattr(getattr(self, "km", None), "provisioner", None), "tree", None)
            ended = tree is not None and tree.exceeded
            if ended:
                self.log.error("The kernel was ended by the memory bound per submission")
            cell.outputs.append(error_output("DeadKernelError", tree.describe() if ended else KERNEL_DIED))
            return cell, self.resources
        except CellTimeoutError:
            # The cell's output did not finish arriving: after the interrupt at the time limit the
            # kernel ignores it; otherwise the output took longer than output_timeout. Either way
            # nbclient's reader of that output is still running, so the kernel must go.
            if self._interrupted:
                self.log.error("Cell %d still ran after the interrupt; the kernel is shut down and later "
                               "cells are marked as not run", index)
                message, self._not_run_message = KERNEL_STOPPED, NOT_RUN_STOPPED
            else:
                waited = self.iopub_timeout
                self.log.error("The output of cell %d was still arriving %d s after it ended; the kernel is "
                               "shut down and later cells are marked as not run", index, waited)
                message, self._not_run_message = output_stalled(waited), NOT_RUN_STALLED
            self._dead_at = index
            self._stop_kernel()
            cell.outputs.append(error_output("CellTimeoutError", message))
            return cell, self.resources

    async def _async_handle_timeout(self, timeout: int, cell: NotebookNode | None = None) -> dict[str, Any] | None:
        """nbclient's handling of the time limit, after which only ``iopub_timeout`` is waited for output."""
        self._interrupted = True
        self.iopub_timeout = self._iopub_after_interrupt
        return await super()._async_handle_timeout(timeout, cell)

    async def _async_poll_output_msg(self, parent_msg_id: str, cell: NotebookNode, cell_index: int) -> None:
        """nbclient's reader of a cell's output, which also ends when the kernel is idle after the cell."""
        assert self.kc is not None
        probe_id: str | None = None
        while True:
            try:
                msg = await ensure_async(self.kc.iopub_channel.get_msg(timeout=self._probe_after))
            except Empty:
                if probe_id is None:
                    probe_id = self.kc.kernel_info()
                continue
            parent = msg["parent_header"].get("msg_id")
            if parent == parent_msg_id:
                try:
                    self.process_message(msg, cell, cell_index)
                except CellExecutionComplete:
                    return
            elif parent is not None and parent == probe_id and _is_idle(msg):
                self.log.warning("Messages of cell %d were lost on their way; the cell is over", cell_index)
                cell.outputs.append(truncation_note("stdout", self.max_output_chars, LOST_OUTPUT + "\n"))
                return

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
        text = text_of(content.get("text", ""))
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
        outs.append(truncation_note(name, self.max_output_chars))


def _is_idle(msg: dict[str, Any]) -> bool:
    return msg.get("msg_type") == "status" and msg.get("content", {}).get("execution_state") == "idle"


class SafeExecute(TolerantExecute):
    """Former name of :class:`TolerantExecute`, kept for configurations that still use it."""
