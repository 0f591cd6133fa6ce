"""Run the notebook's hidden speed tests under artificial CPU load and count how often they pass.

The speed tests (every test cell of the source notebook that imports ``grading.timing``) are run
on the reference solution and on a Python-loop solution (forward, backward and the sinusoidal
table all loops), ``--rounds`` times each, while ``--busy`` processes spin on the machine's cores.
Two ways, as in grading: ``kernel`` runs the cells in one namespace of this process (what nbgrader's
kernel does), ``sealed`` through :func:`grading.sealed.run_sealed` (student code in a worker
process, the test code here, the round trip timed by the checker). Every ratio ``speed_ratio``
returns is recorded, so passing runs show their margin too.

The busy processes end by themselves after ``--max-seconds`` and are killed when the run ends::

    PYTHONPATH=tests .venv/bin/python -m bench.speed_checks_under_load --busy 6 --rounds 10

(from the repository root; ``tests/`` on the path for the loop solution in ``fixtures``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat


import grading.timing
from grading import notebook
from grading.sealed import run_sealed

from bench.reference import SOURCE_NB

SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@contextmanager
def busy(processes: int, seconds: float) -> Iterator[None]:
    """``processes`` busy loops, each ending by itself after ``seconds``; killed on exit.

    Each runs in a session of its own, as other users' programs and other submissions' graders do:
    with the scheduler's autogroups (``/proc/sys/kernel/sched_autogroup_enabled``), busy loops in
    this script's session would slow the checker (and the reference it times) more than the sealed
    worker, which has a session of its own, and flatter slow student code."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=seconds)], start_new_session=True)
                for _ in range(processes)]
    try:
        yield
    finally:
        for proc in spinners:
            proc.kill()
        for proc in spinners:
            proc.wait()


def speed_notebook(answers: dict[str, str] | None = None, source: Path = SOURCE_NB) -> nbformat.NotebookNode:
    """The imports cell, the answer cells before the last speed test (``answers`` replacing some)
    and the speed tests of the source notebook."""
    cells = nbformat.read(str(source), as_version=4).cells
    last = max(n for n, c in enumerate(cells) if is_speed_test(c))
    keep = []
    for cell in cells[:last + 1]:
        gid = notebook.grade_id(cell)
        if notebook.is_code_answer(cell):
            cell.source = (answers or {}).get(gid, notebook.strip_solution_markers(cell.source))
            keep.append(cell)
        elif notebook.cell_role(cell) == "setup" or is_speed_test(cell):
            keep.append(cell)
    nb = nbformat.v4.new_notebook()
    nb.cells = keep
    return nb


def is_speed_test(cell: Any) -> bool:
    return notebook.cell_role(cell) == "test" and "grading.timing" in cell.source


class Recorder:
    """Wraps ``grading.timing.speed_ratio`` to keep every ratio it returns, by current cell."""

    def __init__(self) -> None:
        self.cell = ""
        self.ratios: dict[str, list[float]] = defaultdict(list)
        self._original = grading.timing.speed_ratio

    def __enter__(self) -> "Recorder":
        def recorded(*args: Any, **kwargs: Any) -> float:
            ratio = self._original(*args, **kwargs)
            self.ratios[self.cell].append(ratio)
            return ratio
        grading.timing.speed_ratio = recorded
        return self

    def __exit__(self, *exc: object) -> None:
        grading.timing.speed_ratio = self._original


def run_kernel(nb: nbformat.NotebookNode, recorder: Recorder) -> dict[str, tuple[bool, float, str]]:
    """grade_id -> (passed, seconds, error) with every cell run in one namespace of this process."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    out = {}
    for cell in nb.cells:
        gid = notebook.grade_id(cell)
        recorder.cell = gid
        start = time.perf_counter()
        try:
            exec(compile(cell.source, gid, "exec"), namespace)
            error = ""
        except Exception as exc:  # noqa: BLE001 - a failing test cell is data here
            error = f"{type(exc).__name__}: {exc}"
        if is_speed_test(cell):
            out[gid] = (not error, time.perf_counter() - start, error)
    return out


def run_sealed_cells(nb: nbformat.NotebookNode, recorder: Recorder) -> dict[str, tuple[bool, float, str]]:
    """grade_id -> (passed, seconds, message) from the sealed re-check."""
    names = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if is_speed_test(c)]
    recorder.cell = "+".join(names)  # sealed cells run inside run_sealed: ratios are kept in order
    verdicts = run_sealed(nb, student_names=["Embedding", "create_sinusoidal_embeddings"],
                          cell_timeout=120.0, startup_timeout=60.0)
    return {gid: (v.passed, v.seconds, v.message) for gid, v in verdicts.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, default=6, help="busy-loop processes (default 6)")
    parser.add_argument("--rounds", type=int, default=10, help="runs of the speed tests per way and solution")
    parser.add_argument("--ways", default="kernel,sealed", help="kernel, sealed or both (default both)")
    parser.add_argument("--solutions", default="reference,loops", help="reference, loops or both")
    parser.add_argument("--notebook", type=Path, default=SOURCE_NB,
                        help="source notebook whose speed tests run (e.g. an earlier version's)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="the busy loops end by themselves after this")
    args = parser.parse_args(argv)

    from fixtures.adversarial import SLOW_LOOPS

    solutions = {"reference": speed_notebook(source=args.notebook),
                 "loops": speed_notebook(dict(SLOW_LOOPS), source=args.notebook)}
    runners = {"kernel": run_kernel, "sealed": run_sealed_cells}
    print(f"{os.cpu_count()} CPUs, {args.busy} busy processes, load average before {os.getloadavg()[0]:.1f}")
    failures = 0
    with busy(args.busy, args.max_seconds):
        time.sleep(1.0)
        for way in args.ways.split(","):
            for name in args.solutions.split(","):
                passes: dict[str, int] = defaultdict(int)
                seconds: dict[str, float] = defaultdict(float)
                messages: dict[str, list[str]] = defaultdict(list)
                with Recorder() as recorder:
                    for _ in range(args.rounds):
                        for gid, (ok, secs, message) in runners[way](solutions[name], recorder).items():
                            passes[gid] += ok
                            seconds[gid] += secs
                            if not ok:
                                messages[gid].append(message)
                for gid in sorted(passes):
                    print(f"{way:6s} {name:9s} {gid:36s} passed {passes[gid]:2d} of {args.rounds}, "
                          f"{seconds[gid] / args.rounds:6.2f} s per run")
                    for message in messages[gid][:3]:
                        print(f"{'':17s}{message[:160]}")
                    expected = args.rounds if name == "reference" else 0
                    failures += passes[gid] != expected
                for cell, ratios in recorder.ratios.items():
                    shown = ", ".join(f"{r:.3g}" for r in ratios[:40])
                    print(f"{'':17s}ratios {cell}: {shown}")
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
