"""Adversarial submissions graded end to end with ``python -m grading.grade``.

Every attack in ``fixtures/adversarial.py`` is graded in one of three batch runs that run side by
side (module scope), each batch with a reference submission as a control. Short timeouts keep the
runaway fixtures short: 10 s per cell in the kernel, 5 s per test cell in the sealed re-check; a
2 GiB address space per process (the default is 4 GiB) halves what the memory hog writes before it
is stopped.

Every attack proves that it actually ran (a stale attack would otherwise pass by doing nothing):
a marker its own code prints in the kernel once its exploit is in place, a probe that passes in a
real sealed worker only with the exploit in place, or, for a tampered notebook, the notebook
itself differing from the reference submission.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from support import ASSIGNMENT, NOTEBOOK, pipeline
from support.pipeline import GradeRun, grade
from support.submissions import Submission, grade_id

from grading import notebook

from fixtures import adversarial as adv
from fixtures.students import expected_scores

pytestmark = pytest.mark.slow

CONFIG = """\
c.Execute.timeout = 10
c.SealedVerdict.cell_timeout = 5
c.TolerantExecute.memory_bytes = 2 * 1024**3
c.SealedVerdict.memory_bytes = 2 * 1024**3
"""
SUBMISSION_TIMEOUT = 150      # seconds per submission before grading gives up on it
MAX_NOTEBOOK_BYTES = 2 * 1024**2
NOT_RUN = "KernelDied"        # ename of the outputs of cells after a kernel death

# Batch "a" also generates feedback (for the flood and peeking checks); "c" holds the attack that
# makes the grading command lose every result, so it cannot take the other rows with it.
BATCHES: dict[str, tuple[str, ...]] = {
    "a": ("output_flood", "many_cells_flood", "peek_source_and_gradebook", "frame_walking", "changed_kernelspec",
          "network_probe", "os_exit_in_backward", "segfault", "infinite_loop_in_forward", "uninterruptible_loop",
          "huge_allocation", "honest_noise", "lying_ndarray_subclass", "empty_notebook", "truncated_json",
          "not_json"),
    "b": ("lying_int_subclass", "patched_numpy_allclose", "patched_builtins", "patched_speed_ratio",
          "patched_sealed_worker", "kernel_input_transformer", "custom_exc_handler", "excepthook_and_stderr",
          "warnings_filters", "memoized_loop_forward", "spinners_while_idle", "edited_test_cell",
          "deleted_test_cells", "reordered_cells", "duplicated_test_cell", "changed_points", "changed_grade_ids",
          "changed_cell_ids", "renamed_notebook"),
    "c": ("file_flood",),
}
FEEDBACK = {"a"}
CONTROL = "reference"


# --------------------------------------------------------------------------------- fixtures


@dataclass
class Listener:
    """A TCP and a UDP server on the grading machine's loopback that record what reaches them."""

    port: int
    udp_port: int
    received: list[bytes]      # over TCP
    datagrams: list[bytes]     # over UDP


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.5)
    record = Listener(server.getsockname()[1], udp.getsockname()[1], [], [])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    record.received.append(conn.recv(100) or b"<connected>")
                except OSError:
                    record.received.append(b"<connected>")

    def receive() -> None:
        while not stop.is_set():
            try:
                record.datagrams.append(udp.recv(100))
            except OSError:
                continue

    threads = [threading.Thread(target=target, daemon=True) for target in (serve, receive)]
    for thread in threads:
        thread.start()
    yield record
    stop.set()
    for thread in threads:
        thread.join()
    server.close()
    udp.close()


@pytest.fixture(scope="module")
def attacks(listener: Listener) -> dict[str, adv.Attack]:
    probe = adv.network_probe(listener.port, listener.udp_port)
    everything = {a.name: a for a in (*adv.ATTACKS, adv.many_cells_flood, probe)}
    batched = [name for names in BATCHES.values() for name in names]
    assert sorted(batched) == sorted(everything), "every attack is graded in exactly one batch"
    return everything


@pytest.fixture(scope="module")
def runs(attacks: Mapping[str, adv.Attack], tmp_path_factory: pytest.TempPathFactory) -> dict[str, GradeRun]:
    """Batch name -> its grading run; the batches run at the same time, one submission at a time each."""

    def run(batch: str) -> GradeRun:
        subs = {name: attacks[name].content() for name in BATCHES[batch]}
        subs[CONTROL] = Submission(CONTROL).notebook()
        return grade(tmp_path_factory.mktemp(f"adversarial-{batch}"), subs, feedback=batch in FEEDBACK,
                     config=CONFIG, timeout=SUBMISSION_TIMEOUT, workers=1)

    # The pipeline names every notebook embeddings.ipynb; a renamed one is written under its own name.
    renamed = {a.name: a.filename for a in attacks.values() if isinstance(a, adv.RenamedAttack)}
    write = pipeline.write_submission

    def write_renamed(content: object, path: Path) -> Path:
        student = path.parents[1].name
        return write(content, path.with_name(renamed[student]) if student in renamed else path)

    with pytest.MonkeyPatch.context() as patch, ThreadPoolExecutor(max_workers=len(BATCHES)) as pool:
        patch.setattr(pipeline, "write_submission", write_renamed)
        futures = {batch: pool.submit(run, batch) for batch in BATCHES}
        return {batch: future.result() for batch, future in futures.items()}


def batch_of(name: str) -> str:
    return next(batch for batch, names in BATCHES.items() if name in names)


def status(run: GradeRun, student: str) -> str | None:
    """The status column of ``student`` in the score table grading printed."""
    match = re.search(rf"^{re.escape(student)}\s+(\w+)\s", run.stdout, flags=re.M)
    return match.group(1) if match else None


def graded_notebook(run: GradeRun, student: str) -> Path:
    return run.out / "autograded" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb"


def feedback_page(run: GradeRun, student: str) -> Path:
    return run.out / "feedback" / student / ASSIGNMENT / f"{NOTEBOOK}.html"


def outputs_text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(str(output.get("text", "")))
        parts.append(str(output.get("evalue", "")))
        parts.extend(str(v) for v in (output.get("data") or {}).values())
    return "".join(parts)


# ------------------------------------------------------------------------------- one per row


ALL_ATTACKS = {a.name: a for a in (*adv.ATTACKS, adv.many_cells_flood, adv.network_probe(0, 0))}


@pytest.mark.parametrize("name", sorted(set(ALL_ATTACKS) - {"file_flood"}))
def test_attack_gets_exactly_the_expected_scores(name: str, attacks: Mapping[str, adv.Attack],
                                                 runs: Mapping[str, GradeRun]) -> None:
    """Does each attack get exactly the expected score in every graded cell (or, for a file that
    is not a notebook, no score at all and a reported error), with nothing gained by the attack?"""
    attack = attacks[name]
    run = runs[batch_of(name)]
    if attack.scores is None:
        assert status(run, name) == "error", run.stdout
        assert not run.scores.get(name), f"{name} must not be scored"
        return
    assert status(run, name) == "graded", run.stdout
    got, want = run.scores.get(name, {}), dict(attack.scores)
    differ = {gid: (want.get(gid), got.get(gid)) for gid in want.keys() | got.keys() if want.get(gid) != got.get(gid)}
    assert not differ, f"{attack.what}\ncells that differ (expected, got): {differ}"


def test_file_flood_does_not_cost_anyone_their_grades(runs: Mapping[str, GradeRun]) -> None:
    """Does a student who fills the notebook directory with files still leave everyone's grades
    (their own and the control's) in the results?"""
    run = runs["c"]
    assert run.totals.get(CONTROL) == 100.0, run.stdout[-3000:]
    assert run.scores.get("file_flood") == dict(adv.file_flood.scores), run.stdout[-3000:]


# ---------------------------------------------------------------------- the attacks really ran


@pytest.mark.parametrize("name", sorted(ALL_ATTACKS))
def test_attack_carries_a_proof_that_it_ran(name: str) -> None:
    """Does every attack say how it proves that it ran (marker, worker probe or tampered notebook)?"""
    attack = ALL_ATTACKS[name]
    assert attack.marker or attack.worker_probe or attack.tampered, f"{name} cannot show that it ran"


@pytest.mark.parametrize("name", sorted(n for n, a in ALL_ATTACKS.items() if a.marker))
def test_attack_marker_is_in_the_graded_notebook(name: str, attacks: Mapping[str, adv.Attack],
                                                 runs: Mapping[str, GradeRun]) -> None:
    """Did the attack's own code run in the kernel and find its exploit in place (its marker is in
    the outputs of the graded notebook)?"""
    attack = attacks[name]
    nb = nbformat.read(graded_notebook(runs[batch_of(name)], name), as_version=4)
    text = "".join(outputs_text(c) for c in nb.cells if c.cell_type == "code")
    added = [c.get("outputs") for c in nb.cells if c.cell_type == "code" and "nbgrader" not in c.metadata]
    assert attack.marker in text, f"{name}: marker {attack.marker!r} not in the graded notebook; added cells: {added}"[:5000]


@pytest.mark.parametrize("name", sorted(n for n, a in ALL_ATTACKS.items() if a.worker_probe))
def test_attack_is_in_place_in_a_real_sealed_worker(name: str) -> None:
    """With the attack's cells replayed in a real sealed worker, does its probe (a test cell that
    passes only with the exploit in place) pass?"""
    from traitlets.config.loader import PyFileConfigLoader

    from grading.sealed import VerdictStatus, run_sealed

    attack = ALL_ATTACKS[name]
    nb = attack.content()
    probe = copy.deepcopy(next(c for c in nb.cells if notebook.cell_role(c) == "test"))
    probe.source = attack.worker_probe
    probe.metadata["nbgrader"]["grade_id"] = "attack_probe"
    nb.cells = [c for c in nb.cells if notebook.cell_role(c) != "test"] + [probe]
    names = list(PyFileConfigLoader("nbgrader_config.py", path=str(pipeline.REPO)).load_config()
                 .SealedVerdict.student_names)
    verdict = run_sealed(nb, student_names=names, cell_timeout=30, startup_timeout=60)["attack_probe"]
    assert verdict.status is VerdictStatus.PASSED, f"{name}: the attack is not in place: {verdict.message}"


@pytest.mark.parametrize("name", sorted(n for n, a in ALL_ATTACKS.items() if a.tampered))
def test_tampered_notebook_differs_from_the_reference(name: str) -> None:
    """Does each tampering attack hand in something other than the untampered submission?"""
    attack = ALL_ATTACKS[name]
    untampered = dataclasses.replace(attack.submission, transform=None).notebook()
    if isinstance(attack, adv.RenamedAttack):
        assert attack.filename != f"{NOTEBOOK}.ipynb"
    else:
        assert attack.content() != untampered


# ------------------------------------------------------------------------------ whole batches


@pytest.mark.parametrize("batch", sorted(BATCHES))
def test_every_submission_ends_within_its_own_bounds(batch: str, runs: Mapping[str, GradeRun]) -> None:
    """Does every submission of every batch, runaway fixtures included, end on the bounds of its
    cells (cell timeouts, kernel deaths, output caps), so that none is cut off by the per-submission
    timeout and the batch ends within its submissions' bounds, however busy the machine?"""
    record = json.loads((runs[batch].out / "grading_logs" / ASSIGNMENT / "batch.json").read_text())
    statuses = {r["student"]: r["status"] for r in record["submissions"]}
    assert sorted(statuses) == sorted([*BATCHES[batch], CONTROL]), statuses
    assert not [s for s, status in statuses.items() if status == "timeout"], statuses


@pytest.mark.parametrize("batch", ["a", "b"])
def test_control_in_the_same_batch_gets_full_marks(batch: str, runs: Mapping[str, GradeRun]) -> None:
    """Does the reference submission graded in the same batch as the attacks still get every
    point (nothing carries over from one student to the next)?"""
    run = runs[batch]
    assert status(run, CONTROL) == "graded", run.stdout
    assert run.scores.get(CONTROL) == expected_scores()


@pytest.mark.parametrize("batch", ["a", "b"])
def test_exit_status_reports_the_ungraded(batch: str, runs: Mapping[str, GradeRun]) -> None:
    """Does grading exit with 1 exactly when some submission in the batch was not graded?"""
    run = runs[batch]
    ungraded = [name for name in BATCHES[batch] if status(run, name) != "graded"]
    assert run.returncode == (1 if ungraded else 0), run.stdout[-3000:]


# ------------------------------------------------------------------------------ output floods


@pytest.mark.parametrize("name", [
    "output_flood",
    "many_cells_flood",
])
def test_graded_notebook_and_feedback_stay_small(name: str, runs: Mapping[str, GradeRun]) -> None:
    """Do the graded notebook and the feedback page of a flooding submission stay under 2 MB?"""
    run = runs[batch_of(name)]
    sizes = {path.name: path.stat().st_size for path in (graded_notebook(run, name), feedback_page(run, name))}
    assert all(size < MAX_NOTEBOOK_BYTES for size in sizes.values()), sizes


def test_flood_keeps_the_error_of_a_failing_test(runs: Mapping[str, GradeRun]) -> None:
    """Under the flood, does each failing test cell still show its error first, with the flood
    cut to a short stdout excerpt and no stderr?"""
    nb = nbformat.read(graded_notebook(runs["a"], "output_flood"), as_version=4)
    cell = next(c for c in nb.cells if grade_id(c) == "test_embedding_forward")
    assert cell.outputs[0].output_type == "error"
    assert not any(o.get("name") == "stderr" for o in cell.outputs)
    assert len(outputs_text(cell)) < 20_000


# ------------------------------------------------------------------------------- kernel death


def test_dead_kernel_marks_every_later_cell_not_run(runs: Mapping[str, GradeRun]) -> None:
    """After os._exit in a test cell, is every later code cell marked as not run (and graded 0)
    while the cells before it keep their results?"""
    nb = nbformat.read(graded_notebook(runs["a"], "os_exit_in_backward"), as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if grade_id(c) == "test_embedding_backward")
    later = [c for c in nb.cells[index + 1:] if c.cell_type == "code"]
    assert later and all(c.outputs and c.outputs[0].get("ename") == NOT_RUN for c in later)
    earlier = [c for c in nb.cells[:index] if c.cell_type == "code"]
    assert not any(o.get("ename") == NOT_RUN for c in earlier for o in c.outputs)


# ------------------------------------------------------------------------------------ peeking


def test_peeking_probe_ran_and_found_nothing(runs: Mapping[str, GradeRun]) -> None:
    """Did the peeking cell run in the kernel, try many paths and find no course file?"""
    nb = nbformat.read(graded_notebook(runs["a"], "peek_source_and_gradebook"), as_version=4)
    report = "".join(outputs_text(c) for c in nb.cells if c.cell_type == "code" and "found" in outputs_text(c))
    match = re.search(r"kernel tried (\d+) paths; found (\[.*?\])", report)
    assert match, report[:2000]
    assert int(match.group(1)) > 20 and match.group(2) == "[]", match.group(0)


def test_kernel_runs_sandboxed_whatever_the_notebook_asks(runs: Mapping[str, GradeRun]) -> None:
    """With the plain python3 kernel requested in the notebook, does the kernel still run in the
    sandbox (it cannot see the course) and does the graded notebook name the course's kernel?"""
    run = runs["a"]
    nb = nbformat.read(graded_notebook(run, "changed_kernelspec"), as_version=4)
    assert "kernel sees the course: False" in "".join(outputs_text(c) for c in nb.cells)
    assert nb.metadata.kernelspec.display_name != "Python 3 (no sandbox, please)"


def test_feedback_of_the_control_has_no_hidden_tests(runs: Mapping[str, GradeRun]) -> None:
    """Does the feedback page of the reference submission leave the hidden tests out (so finding
    their text in a feedback page means student code put it there)?"""
    page = feedback_page(runs["a"], CONTROL).read_text(encoding="utf-8")
    assert "Visible checks passed" in page and adv.HIDDEN_TEXT not in page


def test_hidden_tests_stay_out_of_feedback(runs: Mapping[str, GradeRun]) -> None:
    """Does text of the hidden tests stay out of the feedback page, even when student code finds it
    in the kernel's input history and prints it?"""
    page = feedback_page(runs["a"], "peek_source_and_gradebook").read_text(encoding="utf-8")
    assert adv.HIDDEN_TEXT not in page


def test_sealed_worker_cannot_reach_the_grading_machine(listener: Listener, runs: Mapping[str, GradeRun]) -> None:
    """Did the sealed worker's probe run, and did nothing from it reach a TCP or UDP server on the
    grading machine's loopback interface (the worker has a network namespace of its own)?"""
    assert b"worker" not in listener.received, listener.received
    assert b"worker" not in listener.datagrams, listener.datagrams
    # The probe deletes a graded function in the worker unless it ran and was refused there.
    run = runs[batch_of("network_probe")]
    cell = adv.NETWORK_PROOF_CELL
    got = run.scores.get("network_probe", {}).get(cell)
    assert got == expected_scores()[cell], f"the worker's network probe did not run or got through ({cell}: {got})"


def test_kernel_cannot_reach_the_grading_machine(listener: Listener, runs: Mapping[str, GradeRun]) -> None:
    """Did the probe run in the student's kernel (its report is in the graded notebook), see no network
    interface but loopback and reach neither the TCP nor the UDP server on the grading machine's
    loopback, while the visible checks still ran in that kernel and scored?"""
    run = runs[batch_of("network_probe")]
    nb = nbformat.read(graded_notebook(run, "network_probe"), as_version=4)
    text = "".join(outputs_text(c) for c in nb.cells if c.cell_type == "code")
    report = re.search(rf"{adv.NETWORK_REPORT} kernel: tcp (\w+), udp (\w+), interfaces (\[.*?\])", text)
    assert report, f"the network probe left no report from the kernel in the graded notebook:\n{text[:2000]}"
    assert report.group(1) != "connected" and report.group(3) == "['lo']", report.group(0)
    assert b"kernel" not in listener.received, listener.received
    assert b"kernel" not in listener.datagrams, listener.datagrams
    visible = [grade_id(c) for c in nb.cells if grade_id(c) and "Visible checks passed" in outputs_text(c)]
    assert len(visible) >= 5, f"visible checks that ran in the kernel: {visible}"
    # Timing cells move with machine load; the cell the probe's proof decides must score in full.
    cell = adv.NETWORK_PROOF_CELL
    got = run.scores.get("network_probe", {}).get(cell)
    assert got == expected_scores()[cell], f"{cell}: {got}\n{run.stdout[-3000:]}"
