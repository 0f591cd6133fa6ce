"""Performance benchmark of the embeddings assignment's reference solution and of its grading.

Run from the repository root, as a module of the ``bench`` package::

    python -m bench.benchmark            # full run (about 2 minutes)
    python -m bench.benchmark --quick    # fewer repeats, same rows (CI)

Every number is a ratio (or a difference) of measurements taken side by side in this one run.
The candidates of a row are timed in interleaved rounds, one call of each per round, back to back
(the order alternates from round to round); a ratio is the median over rounds of the in-round
ratio, so a busy neighbour on a shared machine slows both sides of a round alike or its rounds
are outvoted. Grading runs are interleaved too and the fastest of each is kept. Seconds are
printed only for the grading rows, whose targets are in seconds, and GB/s only next to the copy
bandwidth measured in the same rounds.

Sections:

1. forward lookup of a 64 x 512 batch of ids from a 50,000 x 512 and a 1,000 x 512 float32 table:
   reference ``Embedding.forward`` against ``np.take`` and against ``np.copyto`` of an output-sized
   buffer (the same number of bytes read and written);
2. backward of the same batch against ``np.add.at`` for random, sorted and repeated ids;
3. where ``import torch`` works: ``torch.nn.functional.embedding`` forward and its autograd backward;
4. the 2048 x 512 sinusoidal table against a plain float32 computation;
5. wall time of grading the reference submission with ``python -m grading.grade`` against grading
   a one-cell assignment in a tiny course (same sandbox settings), and the source notebook's
   execution time with nbclient.

The table ends every run and the exit status is always 0: the tests decide what fails.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import nbformat
import numpy as np

from bench.reference import ASSIGNMENT, NOTEBOOK, REPO, load_reference, reference_submission

BATCH_SHAPE = (64, 512)
EMBED_DIM = 512
VOCAB_SIZES = (50_000, 1_000)
PATTERNS = ("random", "sorted", "repeated")
REPEATED_DISTINCT_IDS = 16
SINUSOID_SHAPE = (2048, 512)
FLOOR_ASSIGNMENT = "floor"
STUDENT = "bench"

FORWARD_TARGET = 1.2        # reference forward time / np.take time, at most
BACKWARD_TARGET = 2.5       # np.add.at time / reference backward time, at least
GRADING_TARGET_S = 10.0     # grading time of the reference minus the one-cell floor, at most
EXECUTION_TARGET_S = 30.0   # nbclient execution of the source notebook, below


Times = dict[str, np.ndarray]  # candidate name -> wall time of each interleaved round


@dataclass(frozen=True)
class Settings:
    """How many interleaved rounds each section takes."""

    forward_repeats: int
    backward_repeats: int
    sinusoid_repeats: int
    grading_repeats: int


FULL = Settings(forward_repeats=30, backward_repeats=9, sinusoid_repeats=60, grading_repeats=2)
QUICK = Settings(forward_repeats=9, backward_repeats=3, sinusoid_repeats=21, grading_repeats=1)


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    section: str
    label: str
    value: str
    target: str = "info"
    result: str = "info"
    note: str = ""


# --------------------------------------------------------------------------------- timing


def interleaved_times(candidates: Mapping[str, Callable[[], Any]], repeats: int) -> Times:
    """Wall time of every call of each candidate over ``repeats`` interleaved rounds (after one warm-up call).

    Within a round every candidate runs once, neighbours in ``candidates`` right after each other;
    the order is reversed on every other round so that neither side always runs first.
    """
    names = list(candidates)
    for name in names:
        candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(repeats):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - start)
    return {name: np.array(values) for name, values in times.items()}


def paired_ratio(times: Mapping[str, np.ndarray], numerator: str, denominator: str) -> float:
    """Median over rounds of ``numerator`` time / ``denominator`` time within the same round.

    Calls of one round run back to back, so they see the same machine; the median then drops the
    rounds a neighbour disturbed.
    """
    return float(np.median(times[numerator] / times[denominator]))


def verdict(passed: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if passed else "FAIL"


# ------------------------------------------------------------------------------------ data


def make_ids(pattern: str, vocab_size: int, seed: int = 0) -> np.ndarray:
    """int64 ids of shape BATCH_SHAPE: uniform ('random'), uniform then sorted ('sorted'), or drawn
    from the first REPEATED_DISTINCT_IDS ids only ('repeated', about 2,000 copies of each)."""
    rng = np.random.default_rng(seed)
    if pattern == "random":
        return rng.integers(0, vocab_size, size=BATCH_SHAPE, dtype=np.int64)
    if pattern == "sorted":
        ids = rng.integers(0, vocab_size, size=math.prod(BATCH_SHAPE), dtype=np.int64)
        return np.sort(ids).reshape(BATCH_SHAPE)
    if pattern == "repeated":
        return rng.integers(0, min(REPEATED_DISTINCT_IDS, vocab_size), size=BATCH_SHAPE, dtype=np.int64)
    raise ValueError(f"unknown pattern {pattern!r}")


def make_grad_output(seed: int = 1) -> np.ndarray:
    """A float32 gradient of the forward output's shape."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(BATCH_SHAPE + (EMBED_DIM,), dtype=np.float32)


def load_torch() -> ModuleType | None:
    """The torch module, or None where it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_description(torch: ModuleType | None) -> str:
    """One line saying which PyTorch (if any) the torch rows used."""
    if torch is None:
        return "torch: not installed, torch rows skipped"
    return (f"torch {torch.__version__}: torch.get_num_threads() = {torch.get_num_threads()} (left as is); "
            "forward = F.embedding with autograd on; backward = torch.autograd.grad(out, weight, g, "
            "retain_graph=True), dense gradient")


# --------------------------------------------------------------------------------- labels


def forward_labels(vocab_size: int) -> list[str]:
    """Labels of the forward rows for one table size."""
    return [f"V={vocab_size}: reference / np.take",
            f"V={vocab_size}: reference / np.copyto (same bytes)",
            f"V={vocab_size}: GB/s reference vs copy"]


def backward_label(vocab_size: int, pattern: str) -> str:
    """Label of the backward row for one table size and id pattern."""
    return f"V={vocab_size} {pattern}: np.add.at / reference"


def torch_forward_label(vocab_size: int) -> str:
    """Label of the torch forward row for one table size."""
    return f"forward V={vocab_size}: reference / F.embedding"


def torch_backward_label(vocab_size: int, pattern: str) -> str:
    """Label of the torch backward row for one table size and id pattern."""
    return f"backward V={vocab_size} {pattern}: reference / autograd"


SINUSOID_LABEL = f"{SINUSOID_SHAPE[0]}x{SINUSOID_SHAPE[1]}: reference / plain float32"
GRADING_LABELS = ("sealed pipeline, reference submission",
                  "one-cell assignment (nbgrader floor)",
                  "reference - floor",
                  "nbclient execution of the source notebook")


def expected_labels() -> list[str]:
    """Every row label a complete run prints (torch rows are printed as skipped without torch)."""
    labels = [label for v in VOCAB_SIZES for label in forward_labels(v)]
    labels += [backward_label(v, p) for v in VOCAB_SIZES for p in PATTERNS]
    labels += [torch_forward_label(v) for v in VOCAB_SIZES]
    labels += [torch_backward_label(v, p) for v in VOCAB_SIZES for p in PATTERNS]
    return labels + [SINUSOID_LABEL, *GRADING_LABELS]


# -------------------------------------------------------------------------- 1. forward


def forward_times(reference: Mapping[str, Any], vocab_size: int, repeats: int,
                  torch: ModuleType | None = None) -> Times:
    """Per-round times of the reference forward, np.take, an output-sized np.copyto and (if given) torch."""
    embedding = reference["Embedding"](vocab_size, EMBED_DIM, seed=0)
    ids = make_ids("random", vocab_size)
    expected = np.take(embedding.weight, ids, axis=0)
    if not np.array_equal(embedding.forward(ids), expected):
        raise AssertionError("reference forward differs from np.take")
    source = np.ones_like(expected)
    target = np.zeros_like(expected)
    candidates: dict[str, Callable[[], Any]] = {
        "np.take": lambda: np.take(embedding.weight, ids, axis=0),
        "reference": lambda: embedding.forward(ids),
        "copy": lambda: np.copyto(target, source),
    }
    if torch is not None:
        weight = torch.from_numpy(embedding.weight).requires_grad_(True)
        ids_t = torch.from_numpy(ids)
        candidates["torch"] = lambda: torch.nn.functional.embedding(ids_t, weight)
    return interleaved_times(candidates, repeats)


def forward_rows(times: Times, vocab_size: int) -> list[Row]:
    """Rows of section 1 for one table size."""
    take_label, copy_label, rate_label = forward_labels(vocab_size)
    ratio = paired_ratio(times, "reference", "np.take")
    copy_ratio = paired_ratio(times, "reference", "copy")
    moved = 2 * math.prod(BATCH_SHAPE) * EMBED_DIM * np.dtype(np.float32).itemsize  # read + write
    reference_rate = moved / float(np.median(times["reference"])) / 1e9
    copy_rate = moved / float(np.median(times["copy"])) / 1e9
    return [
        Row("forward", take_label, f"{ratio:.2f}x", f"<= {FORWARD_TARGET}x", verdict(ratio <= FORWARD_TARGET)),
        Row("forward", copy_label, f"{copy_ratio:.2f}x"),
        Row("forward", rate_label, f"{reference_rate:.1f} vs {copy_rate:.1f} GB/s ({100 / copy_ratio:.0f}%)"),
    ]


# ------------------------------------------------------------------------- 2. backward


def expected_grad(ids: np.ndarray, grad_output: np.ndarray, vocab_size: int) -> np.ndarray:
    """The table gradient computed the naive way."""
    grad = np.zeros((vocab_size, EMBED_DIM), dtype=np.float32)
    np.add.at(grad, ids.reshape(-1), grad_output.reshape(-1, EMBED_DIM))
    return grad


def check_grad(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Raise unless two table gradients agree up to float32 summation order."""
    if not np.allclose(actual, expected, rtol=1e-4, atol=1e-3):
        raise AssertionError(f"{what} gradient differs from np.add.at")


def backward_times(reference: Mapping[str, Any], vocab_size: int, pattern: str, repeats: int,
                   torch: ModuleType | None = None) -> Times:
    """Per-round times of the reference backward, np.add.at into a table-sized buffer and (if given) torch.

    Both numpy candidates accumulate into an already touched table, as a training step would.
    """
    embedding = reference["Embedding"](vocab_size, EMBED_DIM, seed=0)
    ids = make_ids(pattern, vocab_size)
    grad_output = make_grad_output()
    expected = expected_grad(ids, grad_output, vocab_size)
    embedding.forward(ids)
    embedding.zero_grad()
    embedding.backward(grad_output)
    check_grad(embedding.grad_weight, expected, "reference")
    flat_ids = ids.reshape(-1)
    rows = grad_output.reshape(-1, EMBED_DIM)
    naive = np.zeros_like(expected)
    naive.fill(0.0)
    candidates: dict[str, Callable[[], Any]] = {
        "np.add.at": lambda: np.add.at(naive, flat_ids, rows),
        "reference": lambda: embedding.backward(grad_output),
    }
    if torch is not None:
        weight = torch.from_numpy(embedding.weight.copy()).requires_grad_(True)
        out = torch.nn.functional.embedding(torch.from_numpy(ids), weight)
        grad_t = torch.from_numpy(grad_output)
        (torch_grad,) = torch.autograd.grad(out, weight, grad_t, retain_graph=True)
        check_grad(torch_grad.numpy(), expected, "torch")
        candidates["torch"] = lambda: torch.autograd.grad(out, weight, grad_t, retain_graph=True)
    return interleaved_times(candidates, repeats)


def backward_row(times: Times, vocab_size: int, pattern: str) -> Row:
    """Row of section 2 for one table size and id pattern."""
    speedup = paired_ratio(times, "np.add.at", "reference")
    return Row("backward", backward_label(vocab_size, pattern), f"{speedup:.1f}x faster",
               f">= {BACKWARD_TARGET}x", verdict(speedup >= BACKWARD_TARGET))


def torch_rows(forward: Mapping[int, Times],
               backward: Mapping[tuple[int, str], Times]) -> list[Row]:
    """Section 3: reference time / torch time for every forward and backward case (< 1: reference faster)."""
    rows = [Row("torch", torch_forward_label(v), f"{paired_ratio(t, 'reference', 'torch'):.2f}x")
            for v, t in forward.items() if "torch" in t]
    rows += [Row("torch", torch_backward_label(v, p), f"{paired_ratio(t, 'reference', 'torch'):.2f}x")
             for (v, p), t in backward.items() if "torch" in t]
    return rows


def skipped_torch_rows() -> list[Row]:
    """Section 3 when torch is not installed."""
    labels = [torch_forward_label(v) for v in VOCAB_SIZES]
    labels += [torch_backward_label(v, p) for v in VOCAB_SIZES for p in PATTERNS]
    return [Row("torch", label, "-", "info", "skipped (no torch)") for label in labels]


# ------------------------------------------------------------------------- 4. sinusoid


def plain_sinusoid(max_seq_len: int, embed_dim: int, base: float = 10000.0) -> np.ndarray:
    """The interleaved sin/cos table computed entirely in float32."""
    positions = np.arange(max_seq_len, dtype=np.float32)[:, None]
    exponents = np.arange(0, embed_dim, 2, dtype=np.float32) / np.float32(embed_dim)
    angles = positions * np.power(np.float32(base), -exponents)
    table = np.empty((max_seq_len, embed_dim), dtype=np.float32)
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : embed_dim // 2])
    return table


def sinusoid_times(reference: Mapping[str, Any], repeats: int) -> Times:
    """Per-round times of the reference sinusoidal table and the plain float32 one."""
    create = reference["create_sinusoidal_embeddings"]
    if not np.allclose(create(*SINUSOID_SHAPE), plain_sinusoid(*SINUSOID_SHAPE), atol=2e-3):
        raise AssertionError("reference sinusoidal table differs from the plain float32 one")
    return interleaved_times({"reference": lambda: create(*SINUSOID_SHAPE),
                              "plain": lambda: plain_sinusoid(*SINUSOID_SHAPE)}, repeats)


def sinusoid_row(times: Times) -> Row:
    """Row of section 4."""
    return Row("sinusoid", SINUSOID_LABEL, f"{paired_ratio(times, 'reference', 'plain'):.2f}x")


# -------------------------------------------------------------------------- 5. grading


def grading_env() -> dict[str, str]:
    """Environment for nbgrader subprocesses: this interpreter's bin directory first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def run_checked(command: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command, raising with its output if it fails."""
    result = subprocess.run(list(command), cwd=cwd, env=grading_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result


def generate_assignment(course: Path, assignment: str) -> None:
    """Run ``nbgrader generate_assignment`` in a course (untimed preparation)."""
    run_checked([sys.executable, "-m", "nbgrader", "generate_assignment", assignment, "--force"], course)


def copy_course(dest: Path) -> Path:
    """A scratch copy of the course with its assignment generated from the current source.

    Grading then never writes to the repository, and the gradebook, the release notebook the
    submission starts from and the source notebook the answers come from always agree.
    """
    dest.mkdir(parents=True)
    shutil.copy2(REPO / "nbgrader_config.py", dest / "nbgrader_config.py")
    shutil.copytree(REPO / "source" / ASSIGNMENT, dest / "source" / ASSIGNMENT,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    generate_assignment(dest, ASSIGNMENT)
    return dest


def floor_notebook() -> nbformat.NotebookNode:
    """A notebook with a single graded test cell."""
    cell = nbformat.v4.new_code_cell("assert 1 + 1 == 2", metadata={"nbgrader": {
        "grade": True, "solution": False, "locked": True, "points": 1,
        "grade_id": "test_floor", "schema_version": 3}})
    kernelspec = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    return nbformat.v4.new_notebook(cells=[cell], metadata={"kernelspec": kernelspec})


def build_floor_course(dest: Path) -> Path:
    """A tiny course with the course's own config (the same sealed pipeline) and one one-cell
    assignment: what grading costs before any notebook content."""
    (dest / "source" / FLOOR_ASSIGNMENT).mkdir(parents=True)
    shutil.copy2(REPO / "nbgrader_config.py", dest / "nbgrader_config.py")
    nbformat.write(floor_notebook(), str(dest / "source" / FLOOR_ASSIGNMENT / f"{FLOOR_ASSIGNMENT}.ipynb"))
    generate_assignment(dest, FLOOR_ASSIGNMENT)
    return dest


def write_submission(notebook: nbformat.NotebookNode, directory: Path) -> Path:
    """Write a student notebook named after the student, as ``python -m grading.grade`` takes it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{STUDENT}.ipynb"
    nbformat.write(notebook, str(path))
    return path


@dataclass(frozen=True)
class GradingCase:
    """One course, assignment and submission to grade."""

    course: Path
    assignment: str
    submission: Path


@dataclass(frozen=True)
class GradingRun:
    """Wall time and outcome of one ``python -m grading.grade`` run."""

    seconds: float
    score: str
    failed_tests: str


def grade_once(case: GradingCase, out: Path, sandboxed: bool) -> GradingRun:
    """Grade one submission through ``python -m grading.grade`` and time the whole command."""
    command = [sys.executable, "-m", "grading.grade", "--course", str(case.course),
               "--assignment", case.assignment, str(case.submission), "--out", str(out)]
    if not sandboxed:
        command.append("--no-sandbox")
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=grading_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    match = re.search(rf"^{STUDENT}\s+graded\s+(\S+)\s+\S+[ \t]*(.*)$", result.stdout, re.MULTILINE)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"grading {case.assignment} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return GradingRun(seconds, match.group(1), match.group(2).strip())


def grading_runs(cases: Mapping[str, GradingCase], work: Path, repeats: int,
                 sandboxed: bool) -> dict[str, GradingRun]:
    """The fastest run of grading each case, over interleaved rounds."""
    names = list(cases)
    best: dict[str, GradingRun] = {}
    for round_number in range(repeats):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            run = grade_once(cases[name], work / f"out-{name}-{round_number}", sandboxed)
            if name not in best or run.seconds < best[name].seconds:
                best[name] = run
    return best


def execution_seconds(notebook_path: Path, work: Path) -> float:
    """Wall time of executing a notebook with nbclient (kernel start included), in a scratch copy."""
    from nbclient import NotebookClient

    run_dir = work / "execute"
    shutil.copytree(notebook_path.parent, run_dir, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    notebook = nbformat.read(str(run_dir / notebook_path.name), as_version=4)
    kernel = notebook.metadata.get("kernelspec", {}).get("name", "python3")
    client = NotebookClient(notebook, timeout=600, kernel_name=kernel, resources={"metadata": {"path": str(run_dir)}})
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def sandbox_available() -> bool:
    """Can the grading sandbox (bubblewrap) run here?"""
    from grading import sandbox

    return sandbox.bwrap_available()


def grading_rows(repeats: int, sandboxed: bool) -> list[Row]:
    """Section 5: grading the reference submission against the one-cell floor, and notebook execution."""
    notebook = f"{NOTEBOOK}.ipynb"
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        work = Path(tmp)
        course = copy_course(work / "course")
        source = course / "source" / ASSIGNMENT / notebook
        submission = reference_submission(release=course / "release" / ASSIGNMENT / notebook, source=source)
        cases = {
            "reference": GradingCase(course, ASSIGNMENT, write_submission(submission, work / "submissions")),
            "floor": GradingCase(build_floor_course(work / "floor-course"), FLOOR_ASSIGNMENT,
                                 write_submission(floor_notebook(), work / "floor-submissions")),
        }
        best = grading_runs(cases, work, repeats, sandboxed)
        executed = execution_seconds(source, work)
    reference, floor = best["reference"], best["floor"]
    difference = reference.seconds - floor.seconds
    pipeline_label, floor_label, difference_label, execution_label = GRADING_LABELS
    return [
        Row("grading", pipeline_label, f"{reference.seconds:.1f} s (score {reference.score})",
            note=f"points not given: {reference.failed_tests}" if reference.failed_tests else ""),
        Row("grading", floor_label, f"{floor.seconds:.1f} s (score {floor.score})"),
        Row("grading", difference_label, f"{difference:.1f} s", f"<= {GRADING_TARGET_S:g} s",
            verdict(difference <= GRADING_TARGET_S)),
        Row("grading", execution_label, f"{executed:.1f} s", f"< {EXECUTION_TARGET_S:g} s",
            verdict(executed < EXECUTION_TARGET_S)),
    ]


# ---------------------------------------------------------------------------------- report


def error_rows(section: str, labels: Sequence[str], exc: BaseException) -> list[Row]:
    """Rows standing in for a section that raised."""
    message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:60]
    return [Row(section, label, message, "-", "ERROR") for label in labels]


def format_table(rows: Sequence[Row]) -> str:
    """The rows as a fixed-width text table."""
    header = Row("section", "measurement", "value", "target", "result")
    table = [header, *rows]
    widths = [max(len(getattr(row, name)) for row in table) for name in ("section", "label", "value", "target")]
    lines = []
    for row in table:
        cells = [row.section, row.label, row.value, row.target]
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + "  " + row.result)
        if row is header:
            lines.append("-" * len(lines[0]))
    notes = [f"note, {row.label}: {row.note}" for row in rows if row.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def progress(message: str) -> None:
    """Say on stderr what is being measured (the table goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


def numeric_rows(reference: Mapping[str, Any], settings: Settings, torch: ModuleType | None) -> list[Row]:
    """Sections 1 to 4."""
    rows: list[Row] = []
    forward: dict[int, Times] = {}
    backward: dict[tuple[int, str], Times] = {}
    for vocab_size in VOCAB_SIZES:
        progress(f"forward V={vocab_size} ...")
        try:
            forward[vocab_size] = forward_times(reference, vocab_size, settings.forward_repeats, torch)
            rows += forward_rows(forward[vocab_size], vocab_size)
        except Exception as exc:  # a broken section must not hide the others
            rows += error_rows("forward", forward_labels(vocab_size), exc)
    for vocab_size in VOCAB_SIZES:
        for pattern in PATTERNS:
            progress(f"backward V={vocab_size} {pattern} ...")
            try:
                times = backward_times(reference, vocab_size, pattern, settings.backward_repeats, torch)
                backward[(vocab_size, pattern)] = times
                rows.append(backward_row(times, vocab_size, pattern))
            except Exception as exc:
                rows += error_rows("backward", [backward_label(vocab_size, pattern)], exc)
    rows += torch_rows(forward, backward) if torch is not None else skipped_torch_rows()
    progress("sinusoid ...")
    try:
        rows.append(sinusoid_row(sinusoid_times(reference, settings.sinusoid_repeats)))
    except Exception as exc:
        rows += error_rows("sinusoid", [SINUSOID_LABEL], exc)
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (CI); prints the same rows")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every section, print the table and return 0."""
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    load_before = os.getloadavg()[0]
    torch = load_torch()
    sandboxed = sandbox_available()
    reference = load_reference()
    rows = numeric_rows(reference, settings, torch)
    progress("grading (a few nbgrader runs) ...")
    try:
        rows += grading_rows(settings.grading_repeats, sandboxed)
    except Exception as exc:
        traceback.print_exc()
        rows += error_rows("grading", GRADING_LABELS, exc)
    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs (1-min load average {load_before:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end); ids {BATCH_SHAPE[0]}x{BATCH_SHAPE[1]}, embed_dim {EMBED_DIM}, float32")
    print(f"ratios: median over {settings.forward_repeats} (forward), {settings.backward_repeats} (backward), "
          f"{settings.sinusoid_repeats} (sinusoid) interleaved rounds of the in-round time ratio; "
          f"grading: best of {settings.grading_repeats} interleaved runs each")
    print(torch_description(torch))
    print("grading sandbox: " + ("bubblewrap, python3-sealed kernel (both courses)" if sandboxed
                                 else "none, --no-sandbox for both courses (bwrap unusable here)"))
    print()
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
