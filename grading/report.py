"""The class report (``--report DIR``) and Gradescope results (``--gradescope DIR``).

Both are written from data the batch already holds: each :class:`StudentResult` (status, gradebook
record, kernel runs of the test cells, tampering found) and the assignment's test cells with their
points and the Part they belong to.  Nothing here reads the gradebook or runs student code.
"""

from __future__ import annotations

import csv
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from grading.run_one import Status, StudentResult

PART_HEADING = re.compile(r"^\s*#{1,3}\s*(Part\s+\d+[^\n]*)", re.IGNORECASE | re.MULTILINE)
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


@dataclass(frozen=True)
class GradedCell:
    """A graded cell of the assignment."""

    grade_id: str
    notebook: str
    max_score: float
    part: str
    hidden_lines: tuple[str, ...] = ()  # source lines of its hidden tests (never shown)


def assignment_cells(source_notebooks: dict[str, Path], max_scores: dict[tuple[str, str], float]) -> list[GradedCell]:
    """The graded cells in notebook order, each with the Part heading above it (from the source)."""
    import nbformat

    cells = []
    for name, path in source_notebooks.items():
        part = "Other"
        try:
            nb = nbformat.read(path, as_version=4)
        except (OSError, ValueError):
            nb = None
        seen = set()
        for cell in nb.cells if nb is not None else []:
            if cell.cell_type == "markdown":
                match = PART_HEADING.search(cell.source)
                if match:
                    part = match.group(1).strip().rstrip("#").strip()
            gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if (name, gid) in max_scores and gid not in seen:
                seen.add(gid)
                cells.append(GradedCell(gid, name, max_scores[(name, gid)], part, hidden_source_lines(cell.source)))
        for (nb_name, gid), points in max_scores.items():  # cells the source no longer shows
            if nb_name == name and gid not in seen:
                cells.append(GradedCell(gid, name, points, "Other"))
    return cells


def hidden_source_lines(source: str) -> tuple[str, ...]:
    """The non-blank lines between the hidden-test markers of a cell."""
    lines, inside = [], False
    for line in source.splitlines():
        if HIDDEN_BEGIN in line:
            inside = True
        elif HIDDEN_END in line:
            inside = False
        elif inside and line.strip():
            lines.append(line.strip())
    return tuple(lines)


STRING_LITERAL = re.compile(r"'([^'\n]{6,})'|\"([^\"\n]{6,})\"")


def scrub(output: str, hidden: Sequence[str]) -> str:
    """``output`` without any line that quotes hidden-test source or a message string of it."""
    if not hidden:
        return output
    needles = {h for h in hidden if len(h) >= 8}
    needles |= {a or b for h in hidden for a, b in STRING_LITERAL.findall(h)}

    def quotes_hidden(line: str) -> bool:
        text = line.strip()
        return any(n in line for n in needles) or (len(text) >= 8 and any(text in h for h in hidden))

    return "\n".join(line for line in output.splitlines() if not quotes_hidden(line) and line.strip() not in hidden)


def cell_scores(result: StudentResult) -> dict[str, float | None]:
    """grade_id -> auto score of a graded result (None where nbgrader left it unscored)."""
    if result.record is None:
        return {}
    return {c.name: c.auto_score for c in result.record.cells if c.is_grade}


def student_status(result: StudentResult) -> str:
    """The status the report shows: graded, graded (tampered), timeout, crashed, error."""
    status = str(result.status)
    if result.status == Status.GRADED and result.tampered:
        return "graded (tampered)"
    return status


# --------------------------------------------------------------------------- Gradescope


def gradescope_results(result: StudentResult, cells: Sequence[GradedCell]) -> dict:
    """A Gradescope autograder ``results.json`` for one submission (also when it was not graded)."""
    scores = cell_scores(result)
    runs = result.cell_runs
    tests = []
    for cell in cells:
        score = scores.get(cell.grade_id)
        run = runs.get(cell.grade_id)
        if result.status != Status.GRADED:
            output = f"not graded: {result.status} ({result.note})" if result.note else f"not graded: {result.status}"
        elif score is None:
            output = "graded by hand"
        else:
            output = scrub(run.output if run is not None else "", cell.hidden_lines)
        tests.append({"name": f"{cell.part}: {cell.grade_id}" if cell.part != "Other" else cell.grade_id,
                      "score": float(score or 0.0), "max_score": float(cell.max_score),
                      "status": "passed" if score is not None and score >= cell.max_score else "failed",
                      "output": output})
    total = result.score if result.status == Status.GRADED and result.score is not None else 0.0
    data = {"score": float(total), "execution_time": round(float(result.seconds), 3), "tests": tests}
    notes = [n for n in (result.note, "; ".join(result.tampered)) if n]
    if notes:
        data["output"] = "\n".join(notes)
    return data


def write_gradescope(folder: Path, results: Sequence[StudentResult], cells: Sequence[GradedCell]) -> list[Path]:
    """``folder/<student>/results.json`` for every submission."""
    written = []
    for result in results:
        path = folder / result.student / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(gradescope_results(result, cells), indent=1) + "\n")
        written.append(path)
    return written


# --------------------------------------------------------------------------- class report


@dataclass(frozen=True)
class CellStats:
    """One test cell across the class."""

    cell: GradedCell
    graded: int
    passed: int
    mean_score: float
    median_seconds: float | None
    max_seconds: float | None

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.graded if self.graded else None


def class_cell_stats(results: Sequence[StudentResult], cells: Sequence[GradedCell]) -> list[CellStats]:
    """Pass rate, mean score and kernel seconds of every test cell over the graded submissions."""
    graded = [r for r in results if r.status == Status.GRADED]
    stats = []
    for cell in cells:
        scores = np.array([s for r in graded if (s := cell_scores(r).get(cell.grade_id)) is not None], dtype=float)
        seconds = np.array([run.seconds for r in graded if (run := r.cell_runs.get(cell.grade_id)) is not None
                            and run.seconds is not None], dtype=float)
        stats.append(CellStats(cell, int(scores.size), int(np.sum(scores >= cell.max_score)),
                               float(scores.mean()) if scores.size else 0.0,
                               float(np.median(seconds)) if seconds.size else None,
                               float(seconds.max()) if seconds.size else None))
    return stats


def _plots(folder: Path, results: Sequence[StudentResult], stats: Sequence[CellStats]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    totals = np.array([r.score for r in results if r.status == Status.GRADED and r.score is not None], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    top = max([r.max_score or 0 for r in results] + [1.0])
    ax.hist(totals, bins=np.linspace(0, top, 21), color="#4c72b0", edgecolor="white")
    ax.set_xlabel("score")
    ax.set_ylabel("submissions")
    ax.set_title(f"Score distribution ({totals.size} graded)")
    fig.tight_layout()
    fig.savefig(folder / "score_distribution.png", dpi=100)
    plt.close(fig)
    names.append("score_distribution.png")

    fig, ax = plt.subplots(figsize=(8, max(3, 0.28 * len(stats) + 1)))
    labels = [f"{s.cell.part[:18]} | {s.cell.grade_id}" for s in stats]
    rates = [100 * (s.pass_rate or 0.0) for s in stats]
    parts = sorted({s.cell.part for s in stats})
    colours = plt.cm.tab10(np.arange(len(parts)) % 10)
    colour = {p: colours[i] for i, p in enumerate(parts)}
    ax.barh(np.arange(len(stats)), rates, color=[colour[s.cell.part] for s in stats])
    ax.set_yticks(np.arange(len(stats)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of graded submissions with full marks")
    ax.set_title("Pass rate of every test cell, by Part")
    fig.tight_layout()
    fig.savefig(folder / "pass_rate.png", dpi=100)
    plt.close(fig)
    names.append("pass_rate.png")

    timed = sorted((s for s in stats if s.median_seconds is not None), key=lambda s: -(s.median_seconds or 0))[:15]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(timed) + 1)))
    ax.barh(np.arange(len(timed)), [s.median_seconds for s in timed], color="#dd8452")
    ax.set_yticks(np.arange(len(timed)), [s.cell.grade_id for s in timed], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("median kernel seconds")
    ax.set_title("Slowest test cells")
    fig.tight_layout()
    fig.savefig(folder / "slowest_cells.png", dpi=100)
    plt.close(fig)
    names.append("slowest_cells.png")
    return names


def write_report(folder: Path, assignment: str, results: Sequence[StudentResult], cells: Sequence[GradedCell]) -> Path:
    """``report.html``, its PNG plots and ``per_cell.csv`` in ``folder``; returns the HTML path."""
    folder.mkdir(parents=True, exist_ok=True)
    stats = class_cell_stats(results, cells)
    with open(folder / "per_cell.csv", "w", newline="") as fout:
        writer = csv.writer(fout)
        writer.writerow(["part", "notebook", "grade_id", "max_score", "graded", "full_marks", "pass_rate",
                         "mean_score", "median_kernel_seconds", "max_kernel_seconds"])
        for s in stats:
            writer.writerow([s.cell.part, s.cell.notebook, s.cell.grade_id, f"{s.cell.max_score:g}", s.graded,
                             s.passed, "" if s.pass_rate is None else f"{s.pass_rate:.3f}", f"{s.mean_score:.3f}",
                             "" if s.median_seconds is None else f"{s.median_seconds:.3f}",
                             "" if s.max_seconds is None else f"{s.max_seconds:.3f}"])
    plots = _plots(folder, results, stats)
    esc = html.escape
    counts: dict[str, int] = {}
    for r in results:
        counts[student_status(r)] = counts.get(student_status(r), 0) + 1
    parts: dict[str, list[CellStats]] = {}
    for s in stats:
        parts.setdefault(s.cell.part, []).append(s)
    rows = []
    for part, members in parts.items():
        rows.append(f"<tr class='part'><th colspan='5'>{esc(part)}</th></tr>")
        for s in members:
            rate = "by hand" if s.graded == 0 else f"{100 * (s.pass_rate or 0):.0f}% ({s.passed}/{s.graded})"
            secs = "-" if s.median_seconds is None else f"{s.median_seconds:.2f}"
            rows.append(f"<tr><td>{esc(s.cell.grade_id)}</td><td>{s.cell.max_score:g}</td><td>{rate}</td>"
                        f"<td>{s.mean_score:.2f}</td><td>{secs}</td></tr>")
    students = []
    for r in sorted(results, key=lambda r: r.student):
        score = f"{r.score:g}/{r.max_score:g}" if r.score is not None and r.max_score is not None else "-"
        students.append(f"<tr class='{esc(str(r.status))}'><td>{esc(r.student)}</td><td>{esc(student_status(r))}</td>"
                        f"<td>{score}</td><td>{r.seconds:.1f}</td><td>{esc('; '.join(r.tampered))}</td>"
                        f"<td>{esc(r.note)}</td></tr>")
    problems = [r for r in results if r.status != Status.GRADED or r.tampered]
    problem_items = "".join(f"<li>{esc(r.student)}: {esc(student_status(r))} {esc(r.note)}</li>" for r in problems)
    summary = ", ".join(f"{esc(k)}: {v}" for k, v in sorted(counts.items()))
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{esc(assignment)}: class report</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:1em auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}} tr.part th{{background:#eef}}</style></head>
<body><h1>{esc(assignment)}: class report</h1>
<p>{len(results)} submissions ({summary}).</p>
<h2>Needs attention</h2><ul>{problem_items or '<li>nothing: every submission was graded untampered</li>'}</ul>
<h2>Score distribution</h2><img src="{plots[0]}" alt="score distribution">
<h2>Test cells by Part</h2><img src="{plots[1]}" alt="pass rate by cell">
<table><tr><th>cell</th><th>points</th><th>full marks</th><th>mean score</th><th>median kernel s</th></tr>
{''.join(rows)}</table>
<h2>Slowest cells</h2><img src="{plots[2]}" alt="slowest cells">
<h2>Students</h2>
<table><tr><th>student</th><th>status</th><th>score</th><th>seconds</th><th>tampered</th><th>notes</th></tr>
{''.join(students)}</table>
<p>Per-cell figures: <a href="per_cell.csv">per_cell.csv</a>.</p></body></html>
"""
    path = folder / "report.html"
    path.write_text(page)
    return path
