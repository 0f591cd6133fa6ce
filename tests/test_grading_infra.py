"""Tests of the grading infrastructure: sandbox, preprocessors and the grading entry point.

The end-to-end tests build a tiny dummy course in ``tmp_path`` with the real
``nbgrader generate_assignment`` and grade it with ``python -m grading.grade``.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import grading.preprocessors as preprocessors
from grading import grade, sandbox
from grading.kernel_provisioner import SealedProvisioner
from grading.preprocessors import (
    LOST_OUTPUT,
    LimitOutputChars,
    OverwriteCellsAnywhere,
    TolerantExecute,
    SanitizeNbgraderMetadata,
    SealedVerdict,
    StripHiddenTests,
    cap_outputs,
    merged_test_outputs,
    notebooks_hidden,
    output_sizes,
    remove_special_files,
)
from grading.sealed import Verdict, VerdictStatus
from support import PYTHON, REPO, bwrap_usable, run_sandboxed
from support.courses import (DUMMY_ANSWERS, TAMPERED, dummy_source_notebook, nbgrader_meta, run_grade,
                             write_dummy_class)


def test_the_sandbox_is_usable_here():
    """Can bubblewrap create the grading sandbox on this machine? (scripts/setup.sh installs it and
    grading refuses to run without it, so the tests marked needs_bwrap must never be skipped.)"""
    assert bwrap_usable(), "bubblewrap cannot create the grading sandbox here"


# --------------------------------------------------------------------------- sandbox


@pytest.mark.needs_bwrap
def test_sandbox_hides_files_outside_the_workdir(tmp_path: Path) -> None:
    work = tmp_path / "course" / "autograded" / "alice" / "a1"
    work.mkdir(parents=True)
    secret = tmp_path / "course" / "gradebook.db"
    secret.write_text("secret")
    code = (
        "import os, sys\n"
        f"for p in [{str(secret)!r}, {str(REPO / 'source')!r}, {str(REPO / 'nbgrader_config.py')!r}]:\n"
        "    assert not os.path.exists(p), p\n"
        f"try:\n    os.listdir({str(tmp_path / 'course')!r})\nexcept PermissionError:\n    pass\n"
        "else:\n    sys.exit('course root is listable')\n"
        "print('ok')\n"
    )
    result = run_sandboxed(work, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.needs_bwrap
def test_sandbox_writes_only_in_the_workdir(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    code = (
        "import os, sys\n"
        "open('inside.txt', 'w').write('x')\n"
        f"for p in ['/usr/evil', {str(sandbox.grading_package_dir() / 'evil')!r}, "
        f"{str(Path(sys.prefix) / 'evil')!r}, '/evil']:\n"
        "    try:\n        open(p, 'w').write('x')\n    except OSError:\n        continue\n"
        "    sys.exit(f'wrote {p}')\n"
        "open('/tmp/scratch.txt', 'w').write('private tmp is fine')\n"
    )
    result = run_sandboxed(work, code)
    assert result.returncode == 0, result.stderr
    assert (work / "inside.txt").read_text() == "x"
    assert not (sandbox.grading_package_dir() / "evil").exists()


@pytest.mark.needs_bwrap
def test_sandbox_memory_limit_stops_a_10_gb_allocation(tmp_path: Path) -> None:
    code = (
        "try:\n    b = bytearray(10 * 1024**3)\nexcept MemoryError:\n    print('refused')\n"
        "else:\n    print('allocated')\n"
    )
    result = run_sandboxed(tmp_path, code, memory_bytes=1024**3)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "refused"


@pytest.mark.needs_bwrap
def test_sandbox_environment_is_an_allowlist(tmp_path: Path) -> None:
    env = {"SECRET_TOKEN": "x", "LANG": "C.UTF-8"}
    cmd = [*sandbox.sandbox_prefix(tmp_path, environ=env), PYTHON, "-c", "import os; print(sorted(os.environ))"]
    names = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, **env}).stdout
    assert "SECRET_TOKEN" not in names and "LANG" in names


def test_sealed_kernelspec(tmp_path: Path) -> None:
    kernel_dir = sandbox.write_sealed_kernelspec(tmp_path, memory_bytes=123)
    spec = json.loads((kernel_dir / "kernel.json").read_text())
    assert kernel_dir == tmp_path / "kernels" / "python3-sealed"
    assert spec["argv"][-1] == "{connection_file}"
    assert spec["argv"][1].endswith("sandbox.py") and "123" in spec["argv"]
    assert spec["interrupt_mode"] == "message"
    provisioner = spec["metadata"]["kernel_provisioner"]["provisioner_name"]
    (entry_point,) = importlib.metadata.entry_points(group="jupyter_client.kernel_provisioners", name=provisioner)
    assert entry_point.load() is SealedProvisioner


SOCKET_PROBE = """\
import os, socket
from ipykernel.kernelapp import IPKernelApp
app = IPKernelApp.instance()
sockets = os.path.dirname(app.ip)
info = os.stat(sockets)
print(app.transport, sockets, oct(info.st_mode & 0o777), info.st_uid, os.getuid(),
      os.path.exists(os.path.join(os.path.dirname(sockets), "grader")),
      sorted(name for _, name in socket.if_nameindex()))
"""


@pytest.fixture
def sealed_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The sealed kernelspec installed for this test, socket directories under ``tmp_path/tmp``;
    returns the kernel's work directory."""
    sandbox.write_sealed_kernelspec(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    short = Path(tempfile.mkdtemp(prefix="sealed-test-", dir="/tmp"))  # tmp_path can be too long for sockets
    (tmp_path / "tmp").symlink_to(short)
    monkeypatch.setattr(tempfile, "tempdir", str(short))  # where the provisioner makes them
    work = tmp_path / "work"
    work.mkdir()
    yield work
    shutil.rmtree(short)


def run_sealed(work: Path, *sources: str, timeout: int = 30) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[new_code_cell(source) for source in sources])
    nb, _ = TolerantExecute(timeout=timeout, kernel_name=sandbox.SEALED_KERNEL_NAME).preprocess(
        nb, {"metadata": {"path": str(work)}})
    return nb


@pytest.mark.slow
@pytest.mark.needs_bwrap
def test_sealed_kernel_talks_over_a_private_socket_directory(sealed_kernel: Path) -> None:
    """The sealed kernel has loopback only and is reached over ipc sockets in a directory of its own:
    mode 0700, owned by the kernel's uid (not root), fresh for every kernel and removed afterwards;
    the grader's side of it is not visible in the sandbox."""
    reports = []
    for _ in range(2):
        nb = run_sealed(sealed_kernel, SOCKET_PROBE, "print(6 * 7)")
        assert nb.cells[1].outputs[0].text == "42\n"
        reports.append(nb.cells[0].outputs[0].text.split(maxsplit=6))
    for transport, directory, mode, owner, uid, sees_grader, interfaces in reports:
        assert (transport, mode, sees_grader, interfaces.strip()) == ("ipc", "0o700", "False", "['lo']"), reports
        assert owner == uid and (os.geteuid() != 0 or uid != "0"), reports
        top = Path(directory).parent
        assert top.parent == (sealed_kernel.parent / "tmp").resolve() and not top.exists(), reports
    assert reports[0][1] != reports[1][1], "each kernel gets a socket directory of its own"


REDIRECT = """\
import os, time
from ipykernel.kernelapp import IPKernelApp
app = IPKernelApp.instance()
path = app.ip + "-" + str(app.stdin_port)
os.unlink(path)
os.symlink({target!r}, path)
app.stdin_socket.close(linger=0)  # the grader's stdin channel reconnects
time.sleep(2)
print("stdin socket replaced by a link to", os.readlink(path))
"""


@pytest.mark.slow
@pytest.mark.needs_bwrap
def test_kernel_cannot_redirect_the_graders_connections(sealed_kernel: Path) -> None:
    """Student code that replaces one of its sockets by a link to a unix socket of the grading machine
    and drops the connection does not make the grader connect there (it connects through its own
    links), and the kernel goes on running cells."""
    target = sealed_kernel.parent / "host.sock"
    with socket.socket(socket.AF_UNIX) as host:
        host.bind(str(target))
        host.listen()
        host.setblocking(False)
        nb = run_sealed(sealed_kernel, REDIRECT.format(target=str(target)), "print(6 * 7)")
        assert nb.cells[0].outputs[0].text == f"stdin socket replaced by a link to {target}\n", nb.cells[0].outputs
        assert nb.cells[1].outputs[0].text == "42\n"
        with pytest.raises(BlockingIOError):
            host.accept()


# --------------------------------------------------------------------------- output capping


def stream(text: str, name: str = "stdout") -> nbformat.NotebookNode:
    return new_output("stream", name=name, text=text)


def test_cap_outputs_limits_one_long_line_and_keeps_errors() -> None:
    outputs = [
        stream("x" * 10_000_000),
        stream("warning\n", "stderr"),
        new_output("display_data", data={"text/html": "<b>" * 1000, "image/png": "A" * 5000}),
        new_output("error", ename="AssertionError", evalue="", traceback=["line"] * 10),
    ]
    capped = cap_outputs(outputs, max_chars=1000, max_image_chars=100)
    total = sum(len(o.get("text", "")) for o in capped if o.output_type == "stream")
    assert total < 1200
    assert any(o.output_type == "stream" and o.name == "stderr" for o in capped)  # stderr presence kept
    assert capped[-1].output_type == "error"
    assert not any("image/png" in o.get("data", {}) for o in capped)


def test_limit_output_size_preprocessor() -> None:
    nb = new_notebook(cells=[new_code_cell("print()", outputs=[stream("y" * 500_000)]), new_markdown_cell("m")])
    pre = LimitOutputChars(max_chars=1000)
    nb, _ = pre.preprocess(nb, {})
    assert len(nb.cells[0].outputs[0].text) == 1000
    assert "truncated" in nb.cells[0].outputs[1].text


def test_limit_output_size_caps_the_whole_notebook_and_serves_test_cells_first() -> None:
    """30 cells each under the per-cell cap add up to 3,000,000 characters; the notebook keeps
    about max_total_chars, every error, and the outputs of the test cell at the end."""
    flood = [new_code_cell(f"print({n})", outputs=[stream("w" * 100_000)]) for n in range(30)]
    crash = new_code_cell("1/0", outputs=[stream("x" * 100_000), new_output(
        "error", ename="ZeroDivisionError", evalue="division by zero", traceback=["t" * 50_000])])
    test = new_code_cell("check()", metadata=nbgrader_meta("test_x", grade=True, locked=True, points=1),
                         outputs=[stream("Visible checks passed\n"), new_output("display_data", data={
                             "text/plain": "table", "image/png": "A" * 1000})])
    nb = new_notebook(cells=[*flood, crash, test])
    nb, _ = LimitOutputChars(max_chars=100_000, max_total_chars=1_000_000, max_total_image_chars=500).preprocess(nb, {})
    text = sum(output_sizes(o)[0] for c in nb.cells for o in c.outputs)
    assert 900_000 < text < 1_010_000
    assert nb.cells[-1].outputs[0].text == "Visible checks passed\n"
    assert "image/png" not in nb.cells[-1].outputs[1].data  # over the notebook's image budget
    assert "whole notebook" in "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert len(nb.cells[0].outputs[0].text) == 100_000
    assert [o.output_type for o in nb.cells[-3].outputs] == ["stream"]  # only the note is left
    assert "whole notebook" in nb.cells[-3].outputs[0].text
    errors = [o for o in nb.cells[-2].outputs if o.output_type == "error"]
    assert errors and errors[0].evalue == "division by zero" and len("".join(errors[0].traceback)) < 3_000


def test_limit_output_size_budget_is_configurable() -> None:
    nb = new_notebook(cells=[new_code_cell("p()", outputs=[stream("y" * 600)]) for _ in range(3)])
    nb, _ = LimitOutputChars(max_chars=1000, max_total_chars=1000).preprocess(nb, {})
    assert [len(o.text) for o in nb.cells[0].outputs] == [600]
    assert len(nb.cells[1].outputs[0].text) == 400 and "whole notebook" in nb.cells[1].outputs[1].text
    assert [o.text for o in nb.cells[2].outputs if "whole notebook" not in o.text] == []


def fake_stream_msg(text: str, name: str = "stdout") -> dict:
    return {"msg_type": "stream", "header": {"msg_type": "stream"}, "content": {"name": name, "text": text},
            "parent_header": {"msg_id": "m"}}


def kernel_names() -> list[object]:
    sealed = pytest.param("python3-sealed", marks=pytest.mark.needs_bwrap)
    return ["python3", sealed]


@pytest.mark.slow
@pytest.mark.parametrize("kernel_name", kernel_names())
def test_safe_execute_shuts_down_a_kernel_that_ignores_the_interrupt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_name: str) -> None:
    """A cell that ignores SIGINT and loops past the time limit fails, later cells are not run,
    the kernel is gone and no exception escapes."""
    if kernel_name == "python3-sealed":
        sandbox.write_sealed_kernelspec(tmp_path / "jupyter")
        monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    work = tmp_path / "work"
    work.mkdir()
    nb = new_notebook(cells=[
        new_code_cell("x = 1\nprint('before')"),
        new_code_cell("import signal\n\ndef spin():\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                      "    while True:\n        pass\n\nprint('spinning', flush=True)\nspin()"),
        new_markdown_cell("after"),
        new_code_cell("print(x)"),
    ])
    pre = TolerantExecute(timeout=2, kernel_name=kernel_name)
    nb, _ = pre.preprocess(nb, {"metadata": {"path": str(work)}})
    assert nb.cells[0].outputs[0].text == "before\n"
    assert nb.cells[1].outputs[0].text == "spinning\n"
    assert nb.cells[1].outputs[-1].ename == "CellTimeoutError"
    assert nb.cells[3].outputs[0].ename == "KernelDied" and nb.cells[3].outputs[0].evalue.startswith("not run")
    assert pre.km is None  # shut down and cleaned up


class BusyGraderExecute(TolerantExecute):
    """TolerantExecute on a machine so busy that each output message takes 10 ms to handle."""

    def output(self, outs, msg, display_id, cell_index):
        time.sleep(0.01)
        return super().output(outs, msg, display_id, cell_index)


CHATTY = "for i in range(300):\n    print(i, flush=True)\nx = 'kept'"


@pytest.mark.slow
def test_output_still_arriving_after_a_cell_ends_is_waited_for(tmp_path: Path) -> None:
    """A cell that ends at once but leaves 300 messages for a busy grader (3 s of work, more than
    iopub_timeout): are all its lines kept, with no error, and does the next cell run in the same
    kernel?"""
    nb = new_notebook(cells=[new_code_cell(CHATTY), new_code_cell("print(x)")])
    pre = BusyGraderExecute(timeout=30, iopub_timeout=1, kernel_name="python3")
    nb, _ = pre.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    first, second = nb.cells
    assert not [o for o in first.outputs if o.output_type == "error"], first.outputs[-1:]
    assert "".join(o.get("text", "") for o in first.outputs).split() == [str(i) for i in range(300)]
    assert [o.get("text") for o in second.outputs] == ["kept\n"], second.outputs


@pytest.mark.slow
def test_output_that_never_finishes_arriving_stops_the_kernel(tmp_path: Path) -> None:
    """Past output_timeout, is a cell whose output is still arriving failed with a message that
    says so, the kernel shut down and every later cell marked as not run?"""
    nb = new_notebook(cells=[new_code_cell(CHATTY), new_code_cell("print(x)")])
    pre = BusyGraderExecute(timeout=30, iopub_timeout=1, output_timeout=1, kernel_name="python3")
    nb, _ = pre.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    first, second = nb.cells
    assert first.outputs[-1].ename == "CellTimeoutError", first.outputs[-1:]
    assert "output was still arriving 1 s later" in first.outputs[-1].evalue
    assert second.outputs[0].ename == "KernelDied" and "output" in second.outputs[0].evalue
    assert pre.km is None


class PausedGraderExecute(TolerantExecute):
    """TolerantExecute on a machine where the grader stalls at a cell's third output message until
    the kernel has written all of its output (the cell then creates ``flood-done`` in its working
    directory), and one second more: 3,000 messages, more than ZeroMQ's queues hold (1,000 a
    socket), so the kernel drops some, its final "idle" status among them."""

    done_file: Path

    def output(self, outs, msg, display_id, cell_index):
        if len(outs) == 2:
            deadline = time.monotonic() + 30
            while not self.done_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1)
        return super().output(outs, msg, display_id, cell_index)


FLOOD_THEN_FAIL = ("for i in range(3000):\n    print(i, flush=True)\nx = 'kept'\nopen('flood-done', 'w').close()\n"
                   "raise ValueError('after the flood')")


@pytest.mark.slow
@pytest.mark.needs_bwrap
def test_a_cell_whose_idle_status_was_dropped_ends_when_the_kernel_is_idle(sealed_kernel: Path) -> None:
    """A cell floods a stalled grader with 3,000 messages, so ZeroMQ drops some, the status that
    ends the cell included: does the cell end anyway, with its error (read from the kernel's reply
    when the error output was dropped) and a note that output was lost, and does the next cell run
    in the same kernel?"""
    work = sealed_kernel
    nb = new_notebook(cells=[new_code_cell(FLOOD_THEN_FAIL), new_code_cell("print(x)")])
    pre = PausedGraderExecute(timeout=30, iopub_timeout=1, output_timeout=20, kernel_name="python3-sealed")
    pre.done_file = work / "flood-done"
    nb, _ = pre.preprocess(nb, {"metadata": {"path": str(work)}})
    first, second = nb.cells
    errors = [o for o in first.outputs if o.output_type == "error"]
    assert [(o.ename, o.evalue) for o in errors] == [("ValueError", "after the flood")], errors
    texts = "".join(o.get("text", "") for o in first.outputs)
    assert LOST_OUTPUT in texts, first.outputs[-3:]
    assert [o.get("text") for o in second.outputs] == ["kept\n"], second.outputs


@pytest.mark.slow
@pytest.mark.needs_bwrap
def test_kernel_limits_come_from_the_configuration(sealed_kernel: Path) -> None:
    """Do TolerantExecute.memory_bytes and .nproc set the sandboxed kernel's address-space and
    process limits, with nothing else passed on to ipykernel?"""
    nb = new_notebook(cells=[new_code_cell(
        "import resource, sys\n"
        "print(resource.getrlimit(resource.RLIMIT_AS)[0], resource.getrlimit(resource.RLIMIT_NPROC)[0],\n"
        "      any(a.startswith('--sandbox') for a in sys.argv))")])
    pre = TolerantExecute(timeout=30, kernel_name="python3-sealed", memory_bytes=3 * 1024**3, nproc=77)
    nb, _ = pre.preprocess(nb, {"metadata": {"path": str(sealed_kernel)}})
    assert nb.cells[0].outputs[0].text.split() == [str(3 * 1024**3), "77", "False"], nb.cells[0].outputs


def test_kernel_launcher_takes_its_limits_from_the_end_of_its_arguments() -> None:
    """Does the launcher take --sandbox-* limits from the kernel arguments and pass the rest on?"""
    args = sandbox._parse_kernel_args(["kernel", "c.json", "--foo", "--sandbox-nproc=9",
                                       *sandbox.kernel_limit_arguments(memory_bytes=5)])
    assert (args.memory_bytes, args.nproc, args.kernel_args) == (5, 9, ["--foo"])


@pytest.mark.slow
def test_skip_cells_skips_only_read_only_cells(tmp_path: Path) -> None:
    """Are read-only cells named in TolerantExecute.skip_cells left unrun with a note, while a test
    cell, an answer cell and a student cell carrying a listed grade_id still run?"""
    def cell(source: str, grade_id: str, **flags: bool):
        return new_code_cell(source, metadata=nbgrader_meta(grade_id, **{"locked": False, **flags}))

    nb = new_notebook(cells=[
        cell("print('profiling ran')", "profile", locked=True),
        cell("print('test ran')", "profile_test", locked=True, grade=True),
        cell("print('answer ran')", "profile_answer", solution=True),
        cell("print('student ran')", "profile_student"),
        cell("print('other read-only ran')", "plot", locked=True),
    ])
    listed = ["profile", "profile_test", "profile_answer", "profile_student"]
    pre = TolerantExecute(timeout=30, kernel_name="python3", skip_cells=listed)
    nb, _ = pre.preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    texts = ["".join(o.get("text", "") for o in c.outputs) for c in nb.cells]
    assert texts[0].startswith("Not run while grading") and "profiling ran" not in texts[0], texts[0]
    assert texts[1:] == ["test ran\n", "answer ran\n", "student ran\n", "other read-only ran\n"], texts


def test_safe_execute_caps_streaming_output() -> None:
    pre = TolerantExecute(max_output_chars=1000)
    pre.reset_execution_trackers()
    pre._reset_budget()
    pre.clear_before_next_output = False
    outs: list = []
    for _ in range(10_000):
        pre.output(outs, fake_stream_msg("z" * 100 + "\n"), None, 0)
    pre.output(outs, fake_stream_msg("oops\n", "stderr"), None, 0)
    text = "".join(o.text for o in outs if o.name == "stdout")
    assert len(text) < 1100 and "truncated" in text
    assert [o.name for o in outs].count("stderr") == 1


# --------------------------------------------------------------------------- SealedVerdict merging


def test_merged_outputs_drop_stderr_and_keep_points_only_if_both_pass() -> None:
    outs = [stream("hello\n"), stream("DeprecationWarning: x\n", "stderr")]
    merged = merged_test_outputs(copy.deepcopy(outs), Verdict("t", VerdictStatus.PASSED), max_stdout_chars=100)
    assert [o.output_type for o in merged] == ["stream"] and merged[0].name == "stdout"

    failed = merged_test_outputs(copy.deepcopy(outs), Verdict("t", VerdictStatus.FAILED, "ValueError", "bad"),
                                 max_stdout_chars=100)
    assert failed[0].output_type == "error" and failed[0].traceback == ["ValueError: bad"]

    kernel_error = [stream("x\n"), new_output("error", ename="AssertionError", evalue="wrong",
                                              traceback=["\x1b[31mTraceback", "assert secret_test()", "AssertionError: wrong"])]
    merged = merged_test_outputs(kernel_error, Verdict("t", VerdictStatus.PASSED), max_stdout_chars=100)
    assert merged[0].traceback == ["AssertionError: wrong"]

    missing = merged_test_outputs([], None, max_stdout_chars=100)
    assert missing[0].output_type == "error"


def test_student_text_imitating_an_infrastructure_failure_is_an_ordinary_failure() -> None:
    """Does a student exception whose message reads like a failed sealed worker cost only that
    cell (the submission is graded), instead of making the whole submission come out not graded?"""
    imitation = "not run: the sealed worker could not be started: the worker did not start"
    nb = new_notebook(cells=[
        new_code_cell(f"def add(a, b):\n    raise ValueError({imitation!r})",
                      metadata=nbgrader_meta("answer", solution=True)),
        new_code_cell("assert add(1, 2) == 3", metadata=nbgrader_meta("test_add", grade=True, locked=True, points=1)),
        new_code_cell("assert callable(add)", metadata=nbgrader_meta("test_def", grade=True, locked=True, points=1)),
    ])
    nb, resources = StripHiddenTests().preprocess(nb, {})
    nb, resources = SealedVerdict(sandbox=False, student_names=["add"]).preprocess(nb, resources)
    failed, passed = nb.cells[1].outputs, nb.cells[2].outputs
    assert [o.output_type for o in failed] == ["error"] and failed[0].ename == "ValueError", failed
    assert passed == [], passed


def test_a_worker_that_cannot_start_leaves_the_submission_not_graded(tmp_path: Path) -> None:
    """Does a sealed worker that cannot be started (a grader problem) raise, so nbgrader reports
    the submission as not graded instead of scoring it zero?"""
    nb = new_notebook(cells=[
        new_code_cell("def add(a, b):\n    return a + b", metadata=nbgrader_meta("answer", solution=True)),
        new_code_cell("assert add(1, 2) == 3", metadata=nbgrader_meta("test_add", grade=True, locked=True, points=1)),
    ])
    nb, resources = StripHiddenTests().preprocess(nb, {})
    broken = SealedVerdict(sandbox=False, student_names=["add"], python=str(tmp_path / "no-python"))
    with pytest.raises(RuntimeError, match="sealed re-check unavailable"):
        broken.preprocess(nb, resources)


# --------------------------------------------------------------------------- missing cells put back


@pytest.fixture(scope="module")
def saved_gradebook(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A gradebook holding the dummy notebook's cells, as generate_assignment leaves it (read only by
    the tests, so created once: nbgrader's migrations take seconds)."""
    tmp_path = tmp_path_factory.mktemp("saved-gradebook")
    from nbgrader.api import Gradebook
    from nbgrader.preprocessors import ComputeChecksums, SaveCells

    db_url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with Gradebook(db_url) as gb:
        gb.add_assignment("a1")
    resources = {"nbgrader": {"db_url": db_url, "assignment": "a1", "notebook": "dummy"}}
    nb, resources = ComputeChecksums().preprocess(dummy_source_notebook(), resources)
    SaveCells().preprocess(nb, resources)
    return resources


def cell_ids(nb: nbformat.NotebookNode) -> list[str | None]:
    return [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]


@pytest.mark.parametrize("kept, expected", [
    ([], ["test_add", "test_crash", "test_shout"]),                      # an empty notebook
    (["imports", "test_crash"], ["imports", "test_add", "test_crash", "test_shout"]),  # answer and test gone
    (["test_shout"], ["test_add", "test_crash", "test_shout"]),
])
def test_missing_test_cells_are_put_back_after_the_nearest_cell_present(
        saved_gradebook: dict, kept: list[str], expected: list[str]) -> None:
    from nbgrader.preprocessors import CheckCellMetadata

    resources = copy.deepcopy(saved_gradebook)
    nb = dummy_source_notebook()
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") in kept]
    nb, resources = OverwriteCellsAnywhere(add_missing_cells=True).preprocess(nb, resources)
    assert cell_ids(nb) == expected
    CheckCellMetadata().preprocess(nb, resources)  # valid nbgrader cells
    added = nb.cells[cell_ids(nb).index("test_add")]
    assert "HIDDEN-CHECK-MARKER" in added["source"] and added["metadata"]["nbgrader"]["points"] == 1


# --------------------------------------------------------------------------- files and metadata


def test_notebooks_hidden_and_special_files_removed(tmp_path: Path) -> None:
    (tmp_path / "nb.ipynb").write_text("{}")
    (tmp_path / "data.txt").write_text("d")
    with notebooks_hidden(tmp_path):
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt"]
        (tmp_path / "link").symlink_to("/etc/passwd")
        os.mkfifo(tmp_path / "fifo")
    removed = remove_special_files(tmp_path)
    assert sorted(p.name for p in removed) == ["fifo", "link"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt", "nb.ipynb"]


def test_sanitize_drops_empty_nbgrader_metadata() -> None:
    nb = new_notebook(cells=[new_code_cell("x = 1", metadata={"nbgrader": {}})])
    nb, _ = SanitizeNbgraderMetadata().preprocess(nb, {})
    assert "nbgrader" not in nb.cells[0].metadata


# --------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory, dummy_course: Path) -> dict:
    if not bwrap_usable():
        pytest.skip("bubblewrap is not usable here")
    base = tmp_path_factory.mktemp("grading")
    course = dummy_course
    submissions = write_dummy_class(course, base / "incoming", [*DUMMY_ANSWERS, *TAMPERED])
    out = base / "out"
    csv = base / "grades.csv"
    result = run_grade(course, submissions, out, "--feedback", "--export", str(csv))
    scores = {}
    from nbgrader.api import Gradebook

    with Gradebook(grade.gradebook_url(out / "gradebook.db")) as gb:
        for student in [*DUMMY_ANSWERS, *TAMPERED]:
            notebook = gb.find_submission_notebook("dummy", "a1", student)
            scores[student] = {g.name: g.auto_score for g in notebook.grades}
    return {"result": result, "out": out, "csv": csv, "scores": scores}


def autograded_cells(out: Path, student: str) -> dict[str, nbformat.NotebookNode]:
    nb = nbformat.read(out / "autograded" / student / "a1" / "dummy.ipynb", as_version=4)
    return {c.metadata.get("nbgrader", {}).get("grade_id", f"cell{i}"): c for i, c in enumerate(nb.cells)}


@pytest.mark.slow
def test_batch_exits_zero_and_reports_every_student(graded: dict) -> None:
    result = graded["result"]
    assert result.returncode == 0, result.stdout + result.stderr
    for student in [*DUMMY_ANSWERS, *TAMPERED]:
        assert student in result.stdout
    assert graded["csv"].read_text().count("\n") == len(DUMMY_ANSWERS) + len(TAMPERED) + 1  # header + students


@pytest.mark.slow
def test_dead_kernel_keeps_earlier_points(graded: dict) -> None:
    assert graded["scores"]["good"] == {"test_add": 1, "test_crash": 1, "test_shout": 1}
    assert graded["scores"]["dies"] == {"test_add": 1, "test_crash": 0, "test_shout": 0}
    cells = autograded_cells(graded["out"], "dies")
    assert cells["test_shout"].outputs[0].evalue.startswith("not run")


@pytest.mark.slow
def test_huge_output_is_capped_and_stderr_costs_nothing(graded: dict) -> None:
    assert graded["scores"]["chatty"] == {"test_add": 1, "test_crash": 1, "test_shout": 1}
    size = (graded["out"] / "autograded" / "chatty" / "a1" / "dummy.ipynb").stat().st_size
    assert size < 500_000


@pytest.mark.slow
def test_sealed_recheck_catches_a_patched_library(graded: dict) -> None:
    assert graded["scores"]["cheater"]["test_add"] == 0
    error = autograded_cells(graded["out"], "cheater")["test_add"].outputs[0]
    assert error.output_type == "error" and len(error.traceback) == 1


@pytest.mark.slow
def test_kernel_sees_only_its_directory(graded: dict) -> None:
    answer = autograded_cells(graded["out"], "snoop")["answer"]
    text = "".join(o.get("text", "") for o in answer.outputs)
    assert "LISTING ['data.txt']" in text  # the notebook itself is moved away while it runs
    assert "VISIBLE" not in text and text.count("HIDDEN") == 3


@pytest.mark.slow
def test_copy_pasted_test_cell_is_graded(graded: dict) -> None:
    assert graded["scores"]["pasted"] == {"test_add": 1, "test_crash": 1, "test_shout": 1}


@pytest.mark.slow
def test_deleted_answer_and_test_cells_are_graded(graded: dict) -> None:
    assert graded["scores"]["gutted"] == {"test_add": 0, "test_crash": 0, "test_shout": 0}
    assert "test_add" in autograded_cells(graded["out"], "gutted")


@pytest.mark.slow
def test_kernel_never_sees_the_hidden_tests(graded: dict) -> None:
    """Student code that prints the kernel's input history finds the visible checks only; the
    hidden test still counts (sealed) and is back in the graded notebook."""
    assert graded["scores"]["peek"] == {"test_add": 1, "test_crash": 1, "test_shout": 1}
    cells = autograded_cells(graded["out"], "peek")
    printed = "".join(o.get("text", "") for o in cells["test_shout"].outputs)
    assert "PEEKED" in printed and "[]" in printed and "HIDDEN" not in printed
    assert "HIDDEN-CHECK-MARKER" in cells["test_add"].source


@pytest.mark.slow
def test_feedback_has_no_hidden_tests(graded: dict) -> None:
    out = graded["out"]
    autograded = (out / "autograded" / "good" / "a1" / "dummy.ipynb").read_text()
    assert "HIDDEN-CHECK-MARKER" in autograded  # the sealed re-check ran it; the graded notebook holds it
    for student in DUMMY_ANSWERS:
        html = (out / "feedback" / student / "a1" / "dummy.html").read_text()
        assert "HIDDEN-CHECK-MARKER" not in html and "BEGIN HIDDEN TESTS" not in html
        assert "visible test passed" in html


def test_former_preprocessor_names_still_load_and_take_their_settings() -> None:
    """Do configurations written for the former names (SafeExecute, LimitOutputSize) still load
    the same preprocessors, with their old configuration sections applied?"""
    from traitlets.config import Config
    from traitlets.utils.importstring import import_item

    assert issubclass(import_item("grading.preprocessors.SafeExecute"), preprocessors.TolerantExecute)
    assert issubclass(import_item("grading.preprocessors.LimitOutputSize"), LimitOutputChars)
    config = Config()
    config.LimitOutputSize.max_total_chars = 123
    assert import_item("grading.preprocessors.LimitOutputSize")(config=config).max_total_chars == 123
