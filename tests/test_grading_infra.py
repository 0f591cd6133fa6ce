"""Tests of the grading infrastructure: sandbox, preprocessors and the grading entry point.

The end-to-end tests build a tiny dummy course in ``tmp_path`` with the real
``nbgrader generate_assignment`` and grade it with ``python -m grading.grade``.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from grading import grade, sandbox
from grading.preprocessors import (
    LimitOutputSize,
    SafeExecute,
    SanitizeNbgraderMetadata,
    cap_outputs,
    merged_test_outputs,
    notebooks_hidden,
    redact_hidden_source,
    remove_special_files,
)
from grading.sealed import Verdict

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

needs_bwrap = pytest.mark.skipif(not sandbox.bwrap_available(), reason="bubblewrap is not usable here")


def run_sandboxed(workdir: Path, code: str, **kwargs: int) -> subprocess.CompletedProcess[str]:
    cmd = [*sandbox.sandbox_prefix(workdir, **kwargs), PYTHON, "-c", code]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- sandbox


@needs_bwrap
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


@needs_bwrap
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


@needs_bwrap
def test_sandbox_memory_limit_stops_a_10_gb_allocation(tmp_path: Path) -> None:
    code = (
        "try:\n    b = bytearray(10 * 1024**3)\nexcept MemoryError:\n    print('refused')\n"
        "else:\n    print('allocated')\n"
    )
    result = run_sandboxed(tmp_path, code, memory_bytes=1024**3)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "refused"


@needs_bwrap
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
    pre = LimitOutputSize(max_chars=1000)
    nb, _ = pre.preprocess(nb, {})
    assert len(nb.cells[0].outputs[0].text) == 1000
    assert "truncated" in nb.cells[0].outputs[1].text


def fake_stream_msg(text: str, name: str = "stdout") -> dict:
    return {"msg_type": "stream", "header": {"msg_type": "stream"}, "content": {"name": name, "text": text},
            "parent_header": {"msg_id": "m"}}


def test_safe_execute_caps_streaming_output() -> None:
    pre = SafeExecute(max_output_chars=1000)
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
    merged = merged_test_outputs(copy.deepcopy(outs), Verdict("t", True, "", 0.1), max_stdout_chars=100)
    assert [o.output_type for o in merged] == ["stream"] and merged[0].name == "stdout"

    failed = merged_test_outputs(copy.deepcopy(outs), Verdict("t", False, "ValueError: bad", 0.1),
                                 max_stdout_chars=100)
    assert failed[0].output_type == "error" and failed[0].traceback == ["ValueError: bad"]

    kernel_error = [stream("x\n"), new_output("error", ename="AssertionError", evalue="wrong",
                                              traceback=["\x1b[31mTraceback", "assert secret_test()", "AssertionError: wrong"])]
    merged = merged_test_outputs(kernel_error, Verdict("t", True, "", 0.1), max_stdout_chars=100)
    assert merged[0].traceback == ["AssertionError: wrong"]

    missing = merged_test_outputs([], None, max_stdout_chars=100)
    assert missing[0].output_type == "error"


def test_sealed_message_quoting_a_hidden_line_is_redacted() -> None:
    source = "assert f(1) == 1\n### BEGIN HIDDEN TESTS\nassert f(2) == 99\n### END HIDDEN TESTS"
    assert redact_hidden_source("AssertionError: line 3: assert f(2) == 99", source) == (
        "AssertionError: a hidden test failed")
    assert redact_hidden_source("AssertionError: line 1: assert f(1) == 1", source).endswith("== 1")


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


# --------------------------------------------------------------------------- submissions


def test_collect_submissions_layouts(tmp_path: Path) -> None:
    submitted = tmp_path / "submitted"
    for student in ("alice", "bob"):
        (submitted / student / "a1").mkdir(parents=True)
        (submitted / student / "a1" / "nb.ipynb").write_text("{}")
    archive = tmp_path / "carol.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a1/nb.ipynb", "{}")
        zf.writestr("../../escape.txt", "x")
    empty = tmp_path / "dave.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "no notebook")
    subs = grade.collect_submissions([submitted, archive, empty], "a1", tmp_path / "unpacked")
    by_student = {s.student: s for s in subs}
    assert sorted(by_student) == ["alice", "bob", "carol", "dave"]
    assert by_student["carol"].path == tmp_path / "unpacked" / "carol" / "a1"
    assert by_student["dave"].problem is not None
    assert not (tmp_path / "escape.txt").exists()
    with pytest.raises(grade.UsageError):
        grade.collect_submissions([submitted / "alice", submitted / "alice" / "a1"], "a1", tmp_path / "u2")


# --------------------------------------------------------------------------- end to end

STUDENT_NAMES = ["add", "crash", "shout"]


def nbgrader_meta(grade_id: str, *, grade: bool = False, solution: bool = False, locked: bool = False,
                  points: float = 0) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution}
    if grade:
        meta["points"] = points
    return {"nbgrader": meta}


def dummy_source_notebook() -> nbformat.NotebookNode:
    """Setup cell, one answer cell and three 1-point test cells (the first with hidden tests)."""
    cells = [
        new_markdown_cell("# Dummy assignment"),
        new_code_cell("import numpy as np", metadata=nbgrader_meta("imports", locked=True)),
        new_code_cell(
            "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION\n\n"
            "def crash():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n\n"
            "def shout(s):\n    ### BEGIN SOLUTION\n    return s.upper()\n    ### END SOLUTION",
            metadata=nbgrader_meta("answer", solution=True),
        ),
        new_code_cell(
            "import numpy as np\nassert np.allclose(add(1, 2), 3)\nprint('visible test passed')\n"
            "### BEGIN HIDDEN TESTS\nassert add(20, 22) == 42, 'HIDDEN-CHECK-MARKER'\n### END HIDDEN TESTS",
            metadata=nbgrader_meta("test_add", grade=True, locked=True, points=1),
        ),
        new_code_cell("assert crash() == 1", metadata=nbgrader_meta("test_crash", grade=True, locked=True, points=1)),
        new_code_cell("assert shout('a') == 'A'", metadata=nbgrader_meta("test_shout", grade=True, locked=True, points=1)),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


GOOD = "def add(a, b):\n    return a + b\n\ndef crash():\n    return 1\n\ndef shout(s):\n    return s.upper()"

SUBMISSIONS = {
    "good": GOOD,
    # test 2 kills the kernel: test 1 keeps its point, tests 2 and 3 get 0
    "dies": GOOD.replace("def crash():\n    return 1", "def crash():\n    import os\n    os._exit(1)"),
    # prints 20 MB on one line, then answers correctly
    "chatty": GOOD + "\nprint('x' * 20_000_000)\nimport sys\nprint('a warning', file=sys.stderr)",
    # passes test_add in the kernel by patching numpy; the sealed re-check catches it
    "cheater": GOOD.replace("return a + b", "return 42 if (a, b) == (20, 22) else 0")
    + "\nimport numpy as np\nnp.allclose = lambda *a, **k: True",
    # looks around the file system from inside the kernel
    "snoop": GOOD + "\nimport os\nprint('LISTING', sorted(os.listdir('.')))\n"
    "for p in ['../../..', '../../../gradebook.db', '../../../source']:\n"
    "    try:\n        os.listdir(p) if os.path.isdir(p) else open(p).read()\n        print('VISIBLE', p)\n"
    "    except OSError:\n        print('HIDDEN', p)\n",
}


def make_dummy_course(root: Path) -> Path:
    """A course with assignment ``a1`` (notebook ``dummy``), generated with the real nbgrader."""
    root.mkdir(parents=True, exist_ok=True)
    config = (REPO / "nbgrader_config.py").read_text()
    config += f"\nc.SealedVerdict.student_names = {STUDENT_NAMES!r}\nc.Execute.timeout = 20\n"
    (root / "nbgrader_config.py").write_text(config)
    source = root / "source" / "a1"
    source.mkdir(parents=True)
    nbformat.write(dummy_source_notebook(), source / "dummy.ipynb")
    (source / "data.txt").write_text("data\n")
    result = subprocess.run([PYTHON, "-m", "nbgrader", "generate_assignment", "a1", "--force"], cwd=root,
                            env=grade.nbgrader_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return root


def student_notebook(release: Path, answer: str) -> nbformat.NotebookNode:
    nb = nbformat.read(release, as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "answer":
            cell.source = answer
    return nb


def write_submissions(course: Path, dest: Path) -> Path:
    release = course / "release" / "a1" / "dummy.ipynb"
    for student, answer in SUBMISSIONS.items():
        folder = dest / student / "a1"
        folder.mkdir(parents=True)
        nbformat.write(student_notebook(release, answer), folder / "dummy.ipynb")
    # a copy-pasted test cell used to abort nbgrader's whole run
    nb = student_notebook(release, GOOD)
    index = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "test_add")
    pasted = copy.deepcopy(nb.cells[index])
    pasted.id = "pasted-copy"
    nb.cells.insert(index, pasted)
    folder = dest / "pasted" / "a1"
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / "dummy.ipynb")
    return dest


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not sandbox.bwrap_available():
        pytest.skip("bubblewrap is not usable here")
    base = tmp_path_factory.mktemp("grading")
    course = make_dummy_course(base / "course")
    submissions = write_submissions(course, base / "incoming")
    out = base / "out"
    csv = base / "grades.csv"
    result = subprocess.run(
        [PYTHON, "-m", "grading.grade", "--course", str(course), "--assignment", "a1", str(submissions),
         "--out", str(out), "--feedback", "--export", str(csv)],
        cwd=REPO, env=grade.nbgrader_env(), capture_output=True, text=True, timeout=900,
    )
    scores = {}
    from nbgrader.api import Gradebook

    with Gradebook(grade.gradebook_url(out / "gradebook.db")) as gb:
        for student in [*SUBMISSIONS, "pasted"]:
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
    for student in [*SUBMISSIONS, "pasted"]:
        assert student in result.stdout
    assert graded["csv"].read_text().count("\n") == len(SUBMISSIONS) + 2  # header + students


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
def test_feedback_has_no_hidden_tests(graded: dict) -> None:
    out = graded["out"]
    autograded = (out / "autograded" / "good" / "a1" / "dummy.ipynb").read_text()
    assert "HIDDEN-CHECK-MARKER" in autograded  # the hidden test did run
    for student in SUBMISSIONS:
        html = (out / "feedback" / student / "a1" / "dummy.html").read_text()
        assert "HIDDEN-CHECK-MARKER" not in html and "BEGIN HIDDEN TESTS" not in html
        assert "visible test passed" in html
