"""The student CLI ``tito``: module names, working copies, complete and export, status, submit, JupyterLab.

Every test works in its own workspace under ``tmp_path`` with its own ``HOME`` and Jupyter
directories, and runs the installed ``tito`` console script as a student would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from support import ASSIGNMENT, NOTEBOOK, RELEASE_NB, REPO, SOURCE_NB, VENV_BIN, home_env, submissions
from support.submissions import Submission, mutate, read
from tito import lab
from tito.complete import course_parts
from tito.errors import TitoError
from tito.export import export_plan
from tito.modules import Course, discover_modules, find_course, resolve_module
from tito.status import ModuleRecord, PartResult, format_status

TITO = VENV_BIN / "tito"
WORKING_COPY = Path(ASSIGNMENT) / f"{NOTEBOOK}.ipynb"
EXPORTED = Path("tinytorch", "core", "embeddings.py")
def heading_points(nb) -> dict[int, int]:
    """Part number -> points, read from the '## Part N: ... (k points' headings with a regex."""
    found = {}
    for cell in nb.cells:
        match = re.match(r"## Part (\d+):.*\((\d+) points", cell.source) if cell.cell_type == "markdown" else None
        if match:
            found[int(match.group(1))] = int(match.group(2))
    return found


def part_test_counts(nb) -> dict[int, int]:
    """Part number -> how many test cells follow its '## Part N' heading (before the next one)."""
    counts: dict[int, int] = {}
    part = None
    for cell in nb.cells:
        match = re.match(r"## Part (\d+):", cell.source) if cell.cell_type == "markdown" else None
        if match:
            part = int(match.group(1))
            counts[part] = 0
        elif part is not None and cell.metadata.get("nbgrader", {}).get("grade") \
                and not cell.metadata["nbgrader"].get("solution"):
            counts[part] += 1
    return counts


def released_test_cells() -> list[str]:
    """grade_ids of the release's test cells, in order."""
    return [submissions.grade_id(c) for c in read(RELEASE_NB).cells
            if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get("solution")]


def contract_names() -> list[str]:
    """The graded names listed in grading/CONTRACT.md."""
    text = (REPO / "grading" / "CONTRACT.md").read_text()
    section = text.split("## Student-facing names (the graded contract)", 1)[1].split("\n## ", 1)[0]
    return [name.strip() for name in section.replace("\n", " ").split(",") if name.strip()]


def tito(workspace: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the ``tito`` console script in ``workspace`` as that workspace's student."""
    return subprocess.run([str(TITO), *args], cwd=workspace, env=home_env(workspace / "home"),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "home").mkdir(parents=True)
    return ws


def write_working_copy(workspace: Path, sub: Submission) -> Path:
    return submissions.write_submission(sub.notebook(), workspace / WORKING_COPY)


# --------------------------------------------------------------------------- module names and course


def test_console_script_is_installed():
    """Does the README's setup install a `tito` command?"""
    assert TITO.is_file(), f"expected the console script at {TITO}"
    proc = subprocess.run([str(TITO), "module", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and all(c in proc.stdout for c in ("view", "complete", "status", "submit"))


def test_course_is_found_from_the_installed_package():
    """Is the course the checkout tito is installed from, with 12_embeddings among its modules?"""
    course = find_course()
    assert course.root == REPO, f"expected the course at {REPO}, got {course.root}"
    assert [m.name for m in discover_modules(course)] == [ASSIGNMENT]


@pytest.mark.parametrize("name", ["12", "12_embeddings", "embeddings", " 12 ", "012"])
def test_module_names_resolve(name):
    """Do `12`, `12_embeddings` and `embeddings` all name Module 12?"""
    module = resolve_module(name, discover_modules(Course(REPO)))
    assert (module.name, module.short, module.notebook, module.number) == (ASSIGNMENT, "embeddings", NOTEBOOK, 12)


@pytest.mark.parametrize("name", ["13", "13_attention", "embedding", "12_embedding", "", "12.0"])
def test_unknown_module_names_list_the_modules(name):
    """Does any other name fail with the list of the course's modules?"""
    with pytest.raises(TitoError, match=r"unknown module .*; the course's modules are: 12_embeddings$"):
        resolve_module(name, discover_modules(Course(REPO)))


def test_unknown_module_is_one_line_and_exit_2(workspace):
    """Does the command line say so in one line, with a non-zero exit?"""
    proc = tito(workspace, "module", "view", "attention", "--no-lab")
    assert proc.returncode == 2, proc
    assert proc.stderr.strip().splitlines() == [
        "tito: error: unknown module 'attention'; the course's modules are: 12_embeddings"]
    assert not (workspace / ASSIGNMENT).exists()


def test_course_option_must_be_a_course(workspace, tmp_path):
    """Is a --course that holds no modules refused clearly?"""
    proc = tito(workspace, "module", "status", "--course", str(tmp_path))
    assert proc.returncode == 2 and "is not a course" in proc.stderr, proc


def test_parts_follow_the_notebook_headings():
    """Are the release's Parts, points and checks those of its '## Part N' headings and test cells?"""
    release = read(RELEASE_NB)
    parts = course_parts(release)
    assert {p.number: p.points for p in parts} == heading_points(release)
    checks = [gid for p in parts for gid in p.checks]
    tests = released_test_cells()
    assert checks == tests and len(checks) >= 27, f"expected the {len(tests)} test cells in order, got {checks}"
    assert parts[0].title == "Embedding layers are lookup tables" and parts[-1].checks == ()


# --------------------------------------------------------------------------- export directives


@pytest.mark.parametrize("path", [SOURCE_NB, RELEASE_NB], ids=["source", "release"])
def test_notebook_exports_the_contract_names_to_core_embeddings(path):
    """Do the nbdev directives export exactly the imports and the graded answer cells, defining the contract?"""
    nb = read(path)
    plan = export_plan(nb)
    assert plan is not None and plan.module == "core.embeddings" and plan.dotted == "tinytorch.core.embeddings"
    exported = [submissions.grade_id(nb.cells[i]) for i, _ in plan.cells]
    answers = [submissions.grade_id(c) for c in nb.cells if submissions.is_code_answer(c)]
    assert exported == ["imports", *answers], f"expected imports and every code answer cell, got {exported}"
    assert sorted(plan.names) == sorted(contract_names()), f"expected {contract_names()}, got {plan.names}"
    for index, code in plan.cells:
        assert "#|" not in code, f"cell {index + 1}: directives must not reach the module"


# --------------------------------------------------------------------------- working copies and bad states


def test_view_copies_the_release_and_never_overwrites(workspace):
    """Does view create the working copy from release/ once, and leave the student's edits alone?"""
    proc = tito(workspace, "module", "view", "12", "--no-lab")
    assert proc.returncode == 0, proc
    copy = workspace / WORKING_COPY
    assert copy.read_bytes() == RELEASE_NB.read_bytes()
    copy.write_text(copy.read_text().replace("YOUR ANSWER HERE", "my own answer"))
    edited = copy.read_bytes()
    proc = tito(workspace, "module", "view", "embeddings", "--no-lab")
    assert proc.returncode == 0 and "left as it is" in proc.stdout, proc
    assert copy.read_bytes() == edited


@pytest.mark.parametrize("command", ["complete", "submit"])
def test_no_working_copy_is_a_clear_error(workspace, command):
    """Does complete (or submit) without a working copy say how to get one?"""
    if command == "submit":  # an exchange, so that the missing copy is what stops it
        (workspace / "home" / ".jupyter").mkdir()
        (workspace / "home" / ".jupyter" / "nbgrader_config.py").write_text(
            f"c = get_config()\nc.CourseDirectory.course_id = 'ml-systems'\nc.Exchange.root = {str(workspace)!r}\n")
    proc = tito(workspace, "module", command, "12")
    assert proc.returncode == 2, proc
    assert f"no working copy at {workspace / WORKING_COPY}: run `tito module view 12_embeddings` first" in proc.stderr


def test_notebook_that_is_not_json_is_a_clear_error(workspace):
    """Does a working copy that is not JSON get one message and exit 2, and nothing exported?"""
    path = workspace / WORKING_COPY
    path.parent.mkdir(parents=True)
    path.write_text('{"cells": [')
    proc = tito(workspace, "module", "complete", "12")
    assert proc.returncode == 2, proc
    assert re.search(r"is not a readable notebook \(not valid notebook JSON", proc.stderr), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (workspace / "tinytorch").exists()


def test_submit_without_an_exchange_is_a_clear_error(workspace):
    """Does submit with no exchange configured refuse before running anything?"""
    write_working_copy(workspace, Submission("student"))
    proc = tito(workspace, "module", "submit", "12")
    assert proc.returncode == 2, proc
    assert "no exchange is configured" in proc.stderr and "Running" not in proc.stdout


def test_status_of_a_new_workspace():
    """Does status say plainly that nothing ran and nothing was submitted?"""
    assert format_status([ASSIGNMENT], {}) == f"{ASSIGNMENT}: never completed; not submitted"
    record = ModuleRecord(ASSIGNMENT, "2026-12-01T09:00:00+00:00", "failed",
                          [PartResult(1, "a", 8, 8, 30), PartResult(2, "b", 1, 6, 20, ["t"]),
                           PartResult(3, "c", 3, 3, 12), PartResult(8, "r", 0, 0, 6)],
                          submitted_at="2026-12-01 09:10:00.000000 UTC")
    assert format_status([ASSIGNMENT], {ASSIGNMENT: record}) == (
        f"{ASSIGNMENT}: last complete 2026-12-01T09:00:00+00:00: Parts 1, 3 pass; Part 2 fails; "
        "submitted 2026-12-01 09:10:00.000000 UTC")


# --------------------------------------------------------------------------- complete and export (kernels)

# Calls the probe makes on inputs the notebook never uses; results are compared exactly.
BEHAVIOUR_PROBE = r"""
import pickle, sys
import numpy as np

def probe(ns):
    rng = np.random.default_rng(20261201)
    out = {}
    emb = ns["Embedding"](37, 6, padding_idx=3, seed=11)
    ids = rng.integers(0, 37, size=(4, 9))
    ids[0, :3] = 5
    out["forward"] = emb.forward(ids)
    grad = rng.normal(size=(4, 9, 6)).astype(np.float32)
    emb.backward(grad)
    out["grad_weight"] = emb.grad_weight
    out["sinusoid"] = ns["create_sinusoidal_embeddings"](23, 7, base=500.0)
    pe = ns["PositionalEncoding"](16, 6, seed=2)
    x = rng.normal(size=(3, 10, 6)).astype(np.float32)
    out["pe"] = pe.forward(x)
    layer = ns["EmbeddingLayer"](41, 8, 12, pos_encoding="sinusoidal", scale_embeddings=True, seed=5)
    out["layer"] = layer.forward(rng.integers(0, 41, size=(2, 11)))
    out["memory"] = ns["embedding_memory_bytes"](50257, 768, np.float16)
    out["training"] = ns["training_memory_bytes"](1000, 64)
    out["tied"] = ns["tied_output_logits"](rng.normal(size=(2, 3, 6)).astype(np.float32), emb.weight)
    out["factorized"] = ns["factorized_embedding_params"](30000, 128, 4096)
    q, scale = ns["quantize_int8"](rng.normal(size=(9, 5)).astype(np.float32))
    out["q"], out["scale"] = q, scale
    out["deq"] = ns["dequantize_int8"](q, scale, np.array([[1, 8], [0, 0]]))
    out["bytes"] = ns["lookup_bytes_moved"](1234, 96, np.float64)
    out["pattern"] = ns["make_access_pattern"]("sorted", 50, 17, seed=9)
    out["signature"] = ns["student_signature"]()
    return out

if sys.argv[1] == "module":
    import importlib
    ns = vars(importlib.import_module("tinytorch.core.embeddings"))
    out = probe(ns)
    out["modules"] = sorted(m for m in ("matplotlib", "matplotlib.pyplot") if m in sys.modules)
else:
    import nbformat
    nb = nbformat.read(sys.argv[2], as_version=4)
    ns = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (meta.get("solution") or meta.get("grade_id") == "imports"):
            exec(compile(cell.source, meta.get("grade_id", "cell"), "exec"), ns)
    out = probe(ns)
sys.stdout.buffer.write(pickle.dumps(out))
"""

SIGNATURE = '\n\ndef student_signature():\n    """This student\'s own addition."""\n    return "written-by-this-student"\n'
SENTINEL_CELL = "open('SENTINEL-try-it-ran', 'w').write('x')"


def probe_behaviour(cwd: Path, *args: str) -> dict:
    import pickle

    proc = subprocess.run([sys.executable, "-c", BEHAVIOUR_PROBE, *args], cwd=cwd, capture_output=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(cwd), "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr.decode()
    return pickle.loads(proc.stdout)


@pytest.mark.slow
def test_buggy_working_copy_fails_and_exports_nothing(workspace):
    """Does a working copy with a wrong forward fail complete, name the check, and export nothing?"""
    write_working_copy(workspace, Submission(
        "buggy", answers=mutate("embedding_class", "np.take(self.weight, ids, axis=0)",
                                "np.take(self.weight, ids, axis=0) * 2")))
    proc = tito(workspace, "module", "complete", "12_embeddings")
    assert proc.returncode == 1, proc
    lines = proc.stdout.splitlines()
    part1 = next(line for line in lines if line.startswith("Part 1:"))
    release = read(RELEASE_NB)
    checks, points = part_test_counts(release), heading_points(release)
    passed = re.search(rf"\b(\d+)/{checks[1]} visible checks pass\s+{points[1]} points at stake$", part1)
    assert passed and int(passed.group(1)) < checks[1], part1
    assert any(line.strip().startswith("FAILED test_embedding_forward:") for line in lines), proc.stdout
    assert re.search(rf"^Part 4: Memory scaling\s+{checks[4]}/{checks[4]} visible checks pass\s+{points[4]} points at stake$",
                     proc.stdout, re.M)
    assert "Hidden tests run only at grading" in proc.stdout
    assert not (workspace / "tinytorch").exists(), "a failing complete must not export"
    status = tito(workspace, "module", "status")
    # The wrong forward fails Part 1 and every later Part whose checks use the student's Embedding.
    line = re.search(r"Parts? ([\d, ]+) pass; Parts? ([\d, ]+) fails?; not submitted$", status.stdout.strip())
    assert status.returncode == 0 and line, status.stdout
    passing, failing = ({int(n) for n in group.split(", ")} for group in line.groups())
    assert 1 in failing and {2, 4} <= passing and not passing & failing, status.stdout


@pytest.mark.slow
def test_correct_working_copy_exports_its_own_code(workspace):
    """Does a correct working copy export code that behaves like it, import cleanly and re-export identically?"""
    answers = {"sharing": submissions.reference_answers()["sharing"] + SIGNATURE}
    copy = write_working_copy(workspace, Submission("correct", answers=answers,
                                                    extra_cells=[("embedding_class", SENTINEL_CELL)]))
    proc = tito(workspace, "module", "complete", "12")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    graded_parts = sum(1 for count in part_test_counts(read(RELEASE_NB)).values() if count)
    total = len(released_test_cells())
    # one line per Part with checks, and the total line
    assert proc.stdout.count("visible checks pass") == graded_parts + 1 and f"{total}/{total} visible checks pass" in proc.stdout
    assert not (workspace / ASSIGNMENT / "SENTINEL-try-it-ran").exists(), "complete must not write into the workspace"
    module = workspace / EXPORTED
    assert (workspace / "tinytorch" / "__init__.py").is_file() and (workspace / "tinytorch/core/__init__.py").is_file()
    text = module.read_text()
    assert "written-by-this-student" in text and "#|" not in text and "matplotlib" not in text
    assert SENTINEL_CELL not in text and "Try it" not in text and '"""Check' not in text

    from_module = probe_behaviour(workspace, "module")
    from_notebook = probe_behaviour(workspace, "notebook", str(copy))
    assert from_module.pop("modules") == [], "importing the module must not load the profiling cells' matplotlib"
    assert not (workspace / "SENTINEL-try-it-ran").exists(), "importing the module ran a try-it cell"
    assert from_module.keys() == from_notebook.keys()
    for key, want in from_notebook.items():
        got = from_module[key]
        if isinstance(want, (bytes, str, int, float)):
            assert got == want, f"{key}: expected {want!r}, got {got!r}"
        else:
            got, want = (tuple(x) for x in (got, want)) if isinstance(want, tuple) else ((got,), (want,))
            for g, w in zip(got, want):
                assert g.dtype == w.dtype and g.shape == w.shape and (g == w).all(), f"{key}: exported differs"

    before = (module.read_bytes(), module.stat().st_mtime_ns)
    again = tito(workspace, "module", "complete", "embeddings")
    assert again.returncode == 0, again
    assert (module.read_bytes(), module.stat().st_mtime_ns) == before, "re-running complete must be idempotent"
    assert sorted(p.relative_to(workspace).as_posix() for p in (workspace / "tinytorch").rglob("*.py")) == [
        "tinytorch/__init__.py", "tinytorch/core/__init__.py", "tinytorch/core/embeddings.py"]


@pytest.mark.slow
def test_edited_test_cell_runs_as_released(workspace):
    """Does complete run the released test cells, not the student's edited copies?"""
    def gut_forward_test(nb):
        for cell in nb.cells:
            if submissions.grade_id(cell) == "test_embedding_forward":
                cell.source = "pass"
        return nb

    write_working_copy(workspace, Submission(
        "editor", answers=mutate("embedding_class", "np.take(self.weight, ids, axis=0)",
                                 "np.take(self.weight, ids, axis=0) * 2"), transform=gut_forward_test))
    proc = tito(workspace, "module", "complete", "12")
    assert proc.returncode == 1 and "FAILED test_embedding_forward:" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_dead_kernel_is_a_clear_error(workspace):
    """Does a kernel that dies give one message naming the cell, exit 2, and no export?"""
    write_working_copy(workspace, Submission("crash", answers={
        "memory": submissions.reference_answers()["memory"] + "\nimport os\nos._exit(3)\n"}))
    proc = tito(workspace, "module", "complete", "12")
    assert proc.returncode == 2, proc
    assert re.search(r"tito: error: the kernel died while running cell \d+ \(memory\)", proc.stderr), proc.stderr
    assert not (workspace / "tinytorch").exists()
    assert "the kernel died" in tito(workspace, "module", "status").stdout


# --------------------------------------------------------------------------- JupyterLab


@pytest.mark.slow
def test_view_starts_jupyterlab_once_and_reuses_it(workspace):
    """Does view start one JupyterLab serving the working copy, and a second view reuse it?"""
    try:
        first = tito(workspace, "module", "view", "12", "--no-browser", timeout=180)
        assert first.returncode == 0, first
        server = lab.recorded_server(workspace)
        assert server is not None and lab.is_alive(server), "expected a live JupyterLab recorded in .tito/lab.json"
        assert server.url(WORKING_COPY) in first.stdout and str(workspace / WORKING_COPY) in first.stdout
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/api/contents/{WORKING_COPY.as_posix()}?content=0",
            headers={"Authorization": f"token {server.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.load(response)["type"] == "notebook"

        second = tito(workspace, "module", "view", "embeddings", "--no-browser", timeout=180)
        assert second.returncode == 0 and "already running" in second.stdout, second
        assert lab.recorded_server(workspace) == server, "the second view must reuse the first server"
    finally:
        stopped = tito(workspace, "module", "stop-lab", timeout=60)
        server = lab.recorded_server(workspace) or locals().get("server")
    assert stopped.returncode == 0, stopped
    if server is not None:
        deadline = time.monotonic() + 30
        while lab._process_exists(server.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not lab._process_exists(server.pid), "stop-lab left JupyterLab running"
