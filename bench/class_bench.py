"""Class-scale grading benchmark: one synthetic class graded three ways in one run.

The class (default 40 students) is built from the committed release the way the tests build
submissions: realistic students (``tests/fixtures/students.py``), single-bug mutants
(``tests/fixtures/mutants.py``) and hostile submissions (``tests/fixtures/adversarial.py``), cycled
until the class is full.  It is graded

1. by nbgrader's own loop: ``nbgrader autograde ASSIGNMENT --student S`` one student after another,
   in a course copy, with the course's sealed pipeline and the sandboxed kernel (the fair baseline:
   the same preprocessors, no batch machinery);
2. by ``python -m grading.grade --workers 1``;
3. by ``python -m grading.grade --workers 2`` (and ``--workers N`` for more cores here).

It prints throughput ratios, whether every per-cell score agrees, the batch's fixed cost (a
one-student batch minus that submission's own seconds) and where each submission's time goes:
the kernel (from the ``Kernel:`` line TolerantExecute logs to the ``Sealed worker:`` line
SealedVerdict logs: kernel start and every cell), the sealed re-check with the grade saving after
it (to nbgrader's last ``Writing`` line), and the rest (process start and imports, configuration,
sanitizing, the scratch course, collection).  The boundaries come from the grading logs, stamped
with the time by ``c.Application.log_format`` in the benchmark's course copy (both ways alike).
Usage, from the repository root (``tests/`` holds the ``support`` and ``fixtures`` packages, which
pytest puts on the path through ``pythonpath`` in ``pyproject.toml``; here the command names it)::

    PYTHONPATH=tests .venv/bin/python -m bench.class_bench [--students 40] [--workers 2] [--no-sandbox]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ASSIGNMENT, NOTEBOOK = "12_embeddings", "embeddings"
LOG_FORMAT = "%(created).3f [%(name)s | %(levelname)s] %(message)s"
HOSTILE = ("os_exit_in_backward", "lying_ndarray", "honest_noise", "patched_allclose",
           "segfault", "edited_test_cell", "custom_exc_handler")


def build_class(size: int) -> dict[str, object]:
    """student id -> notebook (or raw bytes), mixed correct, buggy and hostile."""
    from fixtures import adversarial, mutants, students

    pool: list[tuple[str, object]] = [(s.name, s.submission.notebook()) for s in students.STUDENTS]
    pool += [(m.name, m.submission().notebook()) for m in mutants.MUTANTS[:12]]
    attacks = {a.name: a for a in adversarial.ATTACKS if not isinstance(a, adversarial.RenamedAttack)}
    pool += [(name, attacks[name].content()) for name in HOSTILE if name in attacks]
    chosen: dict[str, object] = {}
    for i in range(size):
        name, content = pool[i % len(pool)]
        chosen[name if i < len(pool) else f"{name}-{i // len(pool)}"] = content
    return chosen


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} on {os.cpu_count()} cores"


def phase_seconds(log_text: str) -> dict[str, float]:
    """``{"kernel": s, "sealed": s}`` of one autograde log stamped with LOG_FORMAT (missing marks: absent)."""
    marks: dict[str, float] = {}
    for line in log_text.splitlines():
        stamp, _, message = line.partition(" [")
        try:
            when = float(stamp)
        except ValueError:
            continue
        if "] Kernel: " in message:
            marks["kernel"] = when
        elif "] Sealed worker: " in message:
            marks["sealed"] = when
        elif "] Writing " in message and "autograded" in message:
            marks["written"] = when  # the last one: the graded notebook
    found = {}
    if "kernel" in marks and "sealed" in marks:
        found["kernel"] = marks["sealed"] - marks["kernel"]
    if "sealed" in marks and "written" in marks:
        found["sealed"] = marks["written"] - marks["sealed"]
    return found


def breakdown(rows: list[dict[str, float]]) -> str:
    """Median seconds per submission: total, kernel, sealed re-check, the rest."""
    total = statistics.median(r["seconds"] for r in rows)
    kernel = statistics.median(r.get("kernel", 0.0) for r in rows)
    sealed = statistics.median(r.get("sealed", 0.0) for r in rows)
    return f"{total:.1f} | {kernel:.1f} | {sealed:.1f} | {total - kernel - sealed:.1f}"


def read_cells(gradebook: Path) -> dict[str, dict[str, float | None]]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{gradebook}", "ml-systems") as gb:
        return {sub.student.id: {g.name: g.auto_score for nb in sub.notebooks for g in nb.grades}
                for sub in gb.find_assignment(ASSIGNMENT).submissions}


def nbgrader_serial(course: Path, class_: dict[str, object], sandboxed: bool) -> tuple[float, dict]:
    """nbgrader autograde --student, one by one, in a course copy holding the submissions."""
    from support.pipeline import write_submission

    from grading import sandbox
    from grading.grade import nbgrader_env

    env = nbgrader_env()
    if sandboxed:
        sandbox.write_sealed_kernelspec(course / "jupyter")
        env["JUPYTER_PATH"] = str(course / "jupyter")
    for student, content in class_.items():
        write_submission(content, course / "submitted" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb")
    extra = [f"--Execute.kernel_name={sandbox.SEALED_KERNEL_NAME}"] if sandboxed else ["--SealedVerdict.sandbox=False"]
    logs = course / "bench_logs"
    logs.mkdir()
    rows = []
    start = time.monotonic()
    for student in class_:
        tick = time.monotonic()
        with open(logs / f"{student}.log", "wb") as log:
            subprocess.run([sys.executable, "-m", "nbgrader", "autograde", ASSIGNMENT, "--student", student, "--force",
                            *extra], cwd=course, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=3600)
        rows.append({"seconds": time.monotonic() - tick,
                     **phase_seconds((logs / f"{student}.log").read_text(errors="replace"))})
    return time.monotonic() - start, read_cells(course / "gradebook.db"), {"rows": rows}


def ours(course: Path, subs: Path, out: Path, workers: int, sandboxed: bool) -> tuple[float, dict, dict]:
    from grading.grade import nbgrader_env

    cmd = [sys.executable, "-m", "grading.grade", "--course", str(course), "--assignment", ASSIGNMENT,
           "--out", str(out), "--workers", str(workers), str(subs)]
    if not sandboxed:
        cmd.append("--no-sandbox")
    start = time.monotonic()
    subprocess.run(cmd, cwd=REPO, env=nbgrader_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=7200)
    seconds = time.monotonic() - start
    record = json.loads((out / "grading_logs" / ASSIGNMENT / "batch.json").read_text())
    logs = out / "grading_logs" / ASSIGNMENT
    record["rows"] = [{"seconds": r["seconds"], **phase_seconds((logs / f"{r['student']}.log").read_text(errors="replace"))}
                      for r in record["submissions"]]
    return seconds, read_cells(out / "gradebook.db"), record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--no-sandbox", action="store_true")
    args = parser.parse_args()
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    from support.pipeline import copy_course, write_submission

    sandboxed = not args.no_sandbox
    class_ = build_class(args.students)
    print(f"class of {len(class_)}; {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="class-bench-") as tmp:
        work = Path(tmp)
        subs = work / "subs"
        for student, content in class_.items():
            write_submission(content, subs / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb")
        base = copy_course(work / "course", f"c.Application.log_format = {LOG_FORMAT!r}")
        subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT, "--force"], cwd=base,
                       capture_output=True, check=True)
        runs = {}
        course = work / "course-nbgrader"
        shutil.copytree(base, course)
        loads = {}
        runs["nbgrader autograde, serial"] = nbgrader_serial(course, class_, sandboxed)
        loads["nbgrader autograde, serial"] = os.getloadavg()[1]
        print(f"nbgrader serial done; {load()}", flush=True)
        for workers in sorted({1, args.workers}):
            runs[f"grading.grade --workers {workers}"] = ours(base, subs, work / f"out-{workers}", workers, sandboxed)
            loads[f"grading.grade --workers {workers}"] = os.getloadavg()[1]
            print(f"--workers {workers} done; {load()}", flush=True)
        one = next(iter(class_))
        single = work / "single"
        shutil.copytree(subs / one, single / one)
        fixed_total, _, fixed_record = ours(base, single, work / "out-single", 1, sandboxed)
        fixed = fixed_total - fixed_record["submissions"][0]["seconds"]
    baseline_seconds, baseline_cells, _ = runs["nbgrader autograde, serial"]
    print(f"\n| way | wall s | submissions/min | throughput vs nbgrader serial | per-cell scores identical "
          f"| load (5 min) after |")
    print("|---|---|---|---|---|---|")
    for name, (seconds, cells, _) in runs.items():
        same = "yes" if cells == baseline_cells else f"no ({sum(cells.get(s) != c for s, c in baseline_cells.items())} differ)"
        print(f"| {name} | {seconds:.0f} | {60 * len(class_) / seconds:.1f} | {baseline_seconds / seconds:.2f}x | {same} "
              f"| {loads[name]:.1f} |")
    for name, (_, cells, _) in runs.items():
        for student, want in baseline_cells.items():
            got = cells.get(student, {})
            for cell in sorted(set(want) | set(got)):
                if want.get(cell) != got.get(cell):
                    print(f"  {name}: {student} {cell}: nbgrader serial {want.get(cell)}, here {got.get(cell)}")
    print(f"\nfixed cost of a batch (one-student batch minus its submission): {fixed:.1f} s "
          f"(of which {fixed_record['fixed_seconds']:.1f} s before its submission could start)")
    print("\n| way | median s per submission | kernel | sealed re-check and grade saving | the rest |")
    print("|---|---|---|---|---|")
    for name, (_, _, record) in runs.items():
        print(f"| {name} | {breakdown(record['rows'])} |")
    print(load())
    return 0


if __name__ == "__main__":
    sys.exit(main())
