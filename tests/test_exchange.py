"""The nbgrader exchange with an instructor and three students on one machine, real commands only.

Flow: ``release_assignment`` -> each student ``tito module view`` (which runs ``fetch_assignment``)
-> work -> submit (alice twice, first the untouched release with ``nbgrader submit``, then her
finished notebook with ``tito module submit``: the later one must be graded; bob with
``tito module submit`` although visible checks fail; carol with ``nbgrader submit`` after the due
date, which the course's late policy, ``LateSubmissionPlugin.penalty_method = "zero"``, penalises)
-> ``collect`` -> ``python -m grading.grade`` (the sealed grading command) -> ``generate_feedback``
-> ``release_feedback`` -> each student ``fetch_feedback``.

Every person has their own ``HOME``, ``JUPYTER_CONFIG_DIR`` (their ``nbgrader_config.py``, which
names the course, the exchange and, as several students share one OS user here, their
``CourseDirectory.student_id``), ``JUPYTER_DATA_DIR`` (so their own exchange cache) and workspace.
The exchange root is a fresh directory with mode 0777, as nbgrader requires.

What keeps students apart, and what this test can prove: nbgrader's exchange relies on file modes
and unguessable names, not on a server.  ``inbound/`` is write-and-enter only for students (0733:
they can drop a submission in but not list anyone's), every submission's name ends in a random
string, and released feedback sits in ``feedback/`` (0711, not listable) under a name derived from
a secret that only the submitter's own cache and the instructor hold.  The test asserts those modes
and names, that each student's feedback holds their own scores and no hidden-test code, and that
asking the exchange for another student's feedback (``fetch_feedback --student alice`` from bob's
account) yields only bob's own.  It cannot prove that another OS user is refused by the kernel: the
students here share the test's uid (root in CI, which bypasses file modes, and the interpreter
lives under root's private home, so dropping to other uids is not possible), so the refusal follows
from the modes asserted, not from an observed ``EACCES``.
"""

from __future__ import annotations

import re
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import pytest

from fixtures.students import MAX_SCORE, PARTIAL, POINTS, REFERENCE, TYPICAL_BUGS, Student
from grading.grade import nbgrader_env
from support import ASSIGNMENT, NOTEBOOK, RELEASE_NB, VENV_BIN, home_env
from support.pipeline import copy_course, hidden_test_lines, read_scores, visible_text

pytestmark = [pytest.mark.exchange, pytest.mark.slow]

COURSE_ID = "ml-systems"
TITO = VENV_BIN / "tito"
WORKING_COPY = Path(ASSIGNMENT) / f"{NOTEBOOK}.ipynb"
STEP_TIMEOUT = 600
STEP_SECONDS: list[tuple[str, str, float]] = []  # (who, command, wall seconds) of every step, for the log


@dataclass(frozen=True)
class Person:
    """Someone with their own home, Jupyter directories and workspace."""

    name: str
    home: Path
    workspace: Path
    exchange: Path

    def env(self) -> dict[str, str]:
        return {**home_env(self.home, nbgrader_env()), "USER": self.name, "LOGNAME": self.name}

    @property
    def cache(self) -> Path:
        return self.home / ".local" / "share" / "jupyter" / "nbgrader_cache" / COURSE_ID

    def run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        proc = subprocess.run(list(cmd), cwd=self.workspace, env=self.env(), capture_output=True, text=True,
                              timeout=STEP_TIMEOUT, stdin=subprocess.DEVNULL)
        STEP_SECONDS.append((self.name, " ".join(Path(c).name if "/" in c else c for c in cmd[:4]),
                             time.monotonic() - start))
        return proc

    def nbgrader(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "nbgrader", *args)

    def tito(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(str(TITO), *args)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{proc.args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def make_person(root: Path, name: str, exchange: Path, workspace: Path | None = None,
                student_id: str | None = None) -> Person:
    home = root / "homes" / name
    config = home / ".jupyter"
    config.mkdir(parents=True)
    home.chmod(0o700)
    lines = ["c = get_config()", f"c.CourseDirectory.course_id = {COURSE_ID!r}", f"c.Exchange.root = {str(exchange)!r}"]
    if student_id:
        lines.append(f"c.CourseDirectory.student_id = {student_id!r}")
    (config / "nbgrader_config.py").write_text("\n".join(lines) + "\n")
    ws = workspace or home / "work"
    ws.mkdir(parents=True, exist_ok=True)
    return Person(name, home, ws, exchange)


@dataclass
class Flow:
    """Everything the flow produced, for the assertions."""

    instructor: Person
    course: Path
    students: dict[str, Person]
    expected: dict[str, Student]
    views: dict[str, subprocess.CompletedProcess[str]]
    fetched: dict[str, bytes]  # each working copy right after `tito module view`
    submits: dict[str, subprocess.CompletedProcess[str]]
    alice_first: str
    alice_second: str
    due: str
    scores: dict[str, dict[str, float]]
    grade_output: str


def inbound_timestamps(exchange: Path, student: str) -> list[str]:
    """Timestamps of a student's submissions in the exchange (the instructor can list inbound)."""
    inbound = exchange / COURSE_ID / "inbound"
    return sorted((p / "timestamp.txt").read_text() for p in inbound.iterdir() if p.name.startswith(f"{student}+"))


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Flow:
    root = tmp_path_factory.mktemp("exchange")
    exchange = root / "exchange"
    exchange.mkdir()
    exchange.chmod(0o777)  # nbgrader: "writable to everyone, MUST be preexisting"
    course = copy_course(root / "course", config=(
        f"c.Exchange.root = {str(exchange)!r}\n"
        "# Late submissions score zero.\n"
        'c.LateSubmissionPlugin.penalty_method = "zero"\n'))
    instructor = make_person(root, "instructor", exchange, workspace=course)
    ok(instructor.nbgrader("generate_assignment", ASSIGNMENT, "--force"))
    ok(instructor.nbgrader("release_assignment", ASSIGNMENT))

    expected = {"alice": REFERENCE, "bob": TYPICAL_BUGS, "carol": PARTIAL}
    students = {name: make_person(root, name, exchange, student_id=name) for name in expected}
    views = {name: ok(s.tito("module", "view", "12", "--no-lab")) for name, s in students.items()}
    fetched = {name: (s.workspace / WORKING_COPY).read_bytes() for name, s in students.items()}

    alice, bob, carol = students["alice"], students["bob"], students["carol"]
    submits = {}
    ok(alice.nbgrader("submit", ASSIGNMENT))                       # the untouched release
    (alice_first,) = inbound_timestamps(exchange, "alice")
    nbformat.write(REFERENCE.notebook(), str(alice.workspace / WORKING_COPY))
    submits["alice"] = ok(alice.tito("module", "submit", "12"))    # the finished notebook, later
    alice_second = max(inbound_timestamps(exchange, "alice"))
    nbformat.write(TYPICAL_BUGS.notebook(), str(bob.workspace / WORKING_COPY))
    submits["bob"] = ok(bob.tito("module", "submit", "embeddings"))

    time.sleep(1.1)
    due = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    ok(instructor.nbgrader("db", "assignment", "add", ASSIGNMENT, f"--duedate={due}"))
    time.sleep(1.1)
    nbformat.write(PARTIAL.notebook(), str(carol.workspace / WORKING_COPY))
    ok(carol.nbgrader("submit", ASSIGNMENT))                       # after the due date

    ok(instructor.nbgrader("collect", ASSIGNMENT))
    graded = ok(instructor.run(sys.executable, "-m", "grading.grade", "--course", str(course),
                               "--assignment", ASSIGNMENT, str(course / "submitted")))
    ok(instructor.nbgrader("generate_feedback", ASSIGNMENT))
    ok(instructor.nbgrader("release_feedback", ASSIGNMENT))
    for student in students.values():
        ok(student.nbgrader("fetch_feedback", ASSIGNMENT))
    scores, _ = read_scores(course / "gradebook.db")
    for who, command, seconds in STEP_SECONDS:
        print(f"{seconds:7.1f} s  {who:<10} {command}")
    return Flow(instructor, course, students, expected, views, fetched, submits, alice_first, alice_second, due,
                scores, graded.stdout)


def fetched_feedback(student: Person) -> list[Path]:
    return sorted((student.workspace / ASSIGNMENT / "feedback").glob(f"*/{NOTEBOOK}.html"))


STUDENTS = ["alice", "bob", "carol"]


# --------------------------------------------------------------------------- fetch and submit


@pytest.mark.parametrize("name", STUDENTS)
def test_view_fetches_the_released_notebook(flow: Flow, name: str):
    """Did `tito module view` fetch the released notebook from the exchange into the workspace?"""
    assert "fetched from the exchange" in flow.views[name].stdout, flow.views[name].stdout
    outbound = flow.instructor.exchange / COURSE_ID / "outbound" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    assert flow.fetched[name] == outbound.read_bytes(), f"{name}'s working copy is not the released notebook"
    assert nbformat.reads(flow.fetched[name].decode(), as_version=4) == nbformat.read(str(RELEASE_NB), as_version=4)


def test_tito_submit_says_what_and_when(flow: Flow):
    """Does `tito module submit` report the file, the course and nbgrader's timestamp, and warn on failures?"""
    alice = flow.submits["alice"]
    assert f"Submitted {WORKING_COPY.as_posix()} to {COURSE_ID} at {flow.alice_second}" in alice.stdout, alice.stdout
    total = sum(1 for c in nbformat.read(str(RELEASE_NB), as_version=4).cells
                if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get("solution"))
    assert f"{total}/{total} visible checks pass" in alice.stdout and "warning" not in alice.stderr
    bob = flow.submits["bob"]
    assert "some visible checks fail; submitting anyway" in bob.stderr, bob.stderr
    status = ok(flow.students["alice"].tito("module", "status")).stdout
    assert f"submitted {flow.alice_second}" in status and "Parts 1, 2, 3, 4, 5, 6, 7, 8, 9 pass" in status, status


def test_the_later_submission_is_collected(flow: Flow):
    """Of alice's two submissions, is the later (finished) one collected and graded?"""
    assert flow.alice_first < flow.alice_second
    collected = flow.course / "submitted" / "alice" / ASSIGNMENT
    assert (collected / "timestamp.txt").read_text() == flow.alice_second
    assert nbformat.read(str(collected / f"{NOTEBOOK}.ipynb"), as_version=4) == REFERENCE.notebook()


# --------------------------------------------------------------------------- grades and the late policy


# Timing checks compare ratios measured while other graders share the machine; whether they pass
# under heavy load is the business of tests/test_performance.py and tests/test_autograde.py, so
# here they are only required to score all or nothing.
def is_timing_check(gid: str) -> bool:
    return gid.endswith("_vectorised")


@pytest.mark.parametrize("name", STUDENTS)
def test_each_student_gets_their_exact_cell_scores(flow: Flow, name: str):
    """Does the gradebook hold each student's expected score in every cell (timing checks: all or nothing)?"""
    want = dict(flow.expected[name].scores)
    got = dict(flow.scores.get(name, {}))
    assert got.keys() == want.keys(), f"{name}: graded cells differ: {sorted(got.keys() ^ want.keys())}"
    for gid in [g for g in want if is_timing_check(g)]:
        assert got.pop(gid) in (0.0, POINTS[gid]), f"{name}: {gid} must score 0 or {POINTS[gid]}"
        want.pop(gid)
    assert got == want, f"{name}: expected {want}, got {got}\n{flow.grade_output}"


def test_students_scores_differ(flow: Flow):
    """Are the three gradebook score vectors distinct, so that 'their own feedback' means something?"""
    vectors = {name: tuple(sorted(flow.scores[name].items())) for name in STUDENTS}
    assert len(set(vectors.values())) == 3


def lateness(flow: Flow) -> dict[str, tuple[float, float, float]]:
    """student -> (seconds late, late penalty, score before the penalty), from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{flow.course / 'gradebook.db'}", course_id=COURSE_ID) as gb:
        return {s.student.id: (s.total_seconds_late, s.late_submission_penalty, s.score)
                for s in gb.find_assignment(ASSIGNMENT).submissions}


def test_late_submission_is_penalised_by_the_policy(flow: Flow):
    """Is carol's submission after the due date zeroed by the late policy, and nobody else's?"""
    subs = lateness(flow)
    late, penalty, score = subs["carol"]
    assert late > 0, f"carol submitted after {flow.due} but is {late} s late"
    raw = sum(flow.scores["carol"].values())
    assert penalty == score == raw > 0, f"expected a penalty of her whole raw score {raw}, got {penalty} of {score}"
    for name in ("alice", "bob"):
        assert subs[name][:2] == (0, 0), f"{name} submitted on time but got {subs[name]}"


# --------------------------------------------------------------------------- feedback


def cell_scores_in_feedback(text: str) -> list[tuple[float, float]]:
    """The ``Score: x / y`` pairs of a feedback page, in order: the total after any late penalty, then
    each graded cell in the table of contents, then each graded cell again below its cell."""
    return [(float(a), float(b)) for a, b in re.findall(r"Score:\s*([\d.]+)\s*/\s*([\d.]+)", text)]


@pytest.mark.parametrize("name", STUDENTS)
def test_each_student_fetches_their_own_feedback(flow: Flow, name: str):
    """Does each student's fetched feedback show their own total and per-cell scores, in cell order?"""
    pages = fetched_feedback(flow.students[name])
    assert len(pages) == 1, f"{name}: expected one feedback page, got {pages}"
    text = visible_text(pages[0])
    scores = flow.scores[name]
    release = nbformat.read(str(RELEASE_NB), as_version=4)
    graded = [c.metadata["nbgrader"] for c in release.cells if c.metadata.get("nbgrader", {}).get("grade")]
    want = [(scores[meta["grade_id"]], float(meta["points"])) for meta in graded]
    found = cell_scores_in_feedback(text)
    penalty = lateness(flow)[name][1]
    total = sum(scores.values()) - penalty
    assert found[0] == (total, MAX_SCORE), f"{name}: expected total {total}, got {found[:1]}"
    assert found[1:] == want + want, f"{name}: per-cell scores differ:\nexpected {want}\ngot      {found[1:]}"
    assert (f"Late submission penalty (Score: -{penalty:.1f})" in text) == (penalty > 0), f"{name}: penalty {penalty}"


@pytest.mark.parametrize("name", STUDENTS)
def test_feedback_holds_no_hidden_test_source(flow: Flow, name: str):
    """Is none of the hidden tests' code in a student's fetched feedback?"""
    (page,) = fetched_feedback(flow.students[name])
    raw = page.read_text(encoding="utf-8")
    assert "BEGIN HIDDEN TESTS" not in raw and "_hidden_" not in raw
    own = {line.strip() for cell in flow.expected[name].notebook().cells for line in cell.source.splitlines()}
    leaked = sorted(line for line in hidden_test_lines() - own if line in visible_text(page))
    assert not leaked, f"hidden test code in {name}'s feedback: {leaked[:3]}"


# --------------------------------------------------------------------------- isolation


def test_students_cannot_list_submissions_or_feedback(flow: Flow):
    """Are inbound/ and feedback/ closed to listing by students, with unguessable entry names?"""
    course = flow.instructor.exchange / COURSE_ID
    inbound, feedback = (course / "inbound").stat().st_mode, (course / "feedback").stat().st_mode
    assert stat.S_IMODE(inbound) & 0o044 == 0 and stat.S_IMODE(inbound) & 0o033 == 0o033, oct(inbound)
    assert stat.S_IMODE(feedback) & 0o044 == 0 and stat.S_IMODE(feedback) & 0o011 == 0o011, oct(feedback)
    for entry in (course / "inbound").iterdir():
        student, assignment, _timestamp, random = entry.name.split("+")
        assert assignment == ASSIGNMENT and len(random) >= 12, entry.name
    names = [p.name for p in (course / "feedback").iterdir()]
    assert len(names) == 3 and all(re.fullmatch(r"[0-9a-f]{32,}\.html", n) for n in names), names
    assert not any(s in n for s in STUDENTS for n in names)


def test_each_student_keeps_only_their_own_secrets(flow: Flow):
    """Does each student's cache hold only their own submissions (the secrets feedback names derive from)?"""
    for name, student in flow.students.items():
        owners = {p.name.split("+")[0] for p in student.cache.iterdir()}
        assert owners == {name}, f"{name}'s cache holds submissions of {owners}"
        assert stat.S_IMODE(student.home.stat().st_mode) == 0o700


def test_asking_for_another_students_feedback_yields_only_ones_own(flow: Flow, tmp_path: Path):
    """Does bob, claiming to be alice (`--student alice`), still get nothing but his own feedback?"""
    bob = flow.students["bob"]
    ws = tmp_path / "bob-as-alice"
    ws.mkdir()
    spy = Person("bob", bob.home, ws, bob.exchange)
    ok(spy.nbgrader("fetch_feedback", ASSIGNMENT, "--student", "alice"))
    pages = sorted(ws.glob(f"{ASSIGNMENT}/feedback/*/{NOTEBOOK}.html"))
    assert pages, "bob's own feedback should still be found through his cache"
    for page in pages:
        total = cell_scores_in_feedback(visible_text(page))[0]
        assert total == (sum(flow.scores["bob"].values()), MAX_SCORE), f"bob obtained feedback that is not his: {total}"
        assert total != (sum(flow.scores["alice"].values()), MAX_SCORE)
        assert page.read_bytes() == fetched_feedback(bob)[0].read_bytes()
