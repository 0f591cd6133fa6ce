"""``python -m grading.grade`` and its sandbox: results copied back per student and bounded, renamed
notebooks, the course configuration check, and the sealed worker's network and process limits."""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from grading import grade, sandbox
from grading.kernel_provisioner import make_kernel_sockets
from support import REPO, run_sandboxed
from support.courses import run_grade, small_course


# --------------------------------------------------------------------------- copying results


def fake_scratch(tmp_path: Path, students: dict[str, int], *, junk: int = 0) -> Path:
    """A scratch course after grading: one notebook (``size`` bytes) and feedback page per student."""
    scratch = tmp_path / "scratch"
    for student, size in students.items():
        graded = scratch / "autograded" / student / "a1"
        graded.mkdir(parents=True)
        (graded / "nb.ipynb").write_bytes(b"x" * size)
        (graded / "data.csv").write_text("student data\n")
        feedback = scratch / "feedback" / student / "a1"
        feedback.mkdir(parents=True)
        (feedback / "nb.html").write_text("<html></html>")
        (feedback / "data.csv").write_text("student data\n")
    if junk:
        flood = scratch / "autograded" / next(iter(students)) / "a1" / "junk"
        flood.mkdir()
        for i in range(junk):
            (flood / str(i)).touch()
    (scratch / "logs").mkdir()
    for student in students:
        (scratch / "logs" / f"{student}.log").write_text(f"log of {student}\n")
    (scratch / "gradebook.db").write_bytes(b"gradebook")
    return scratch


def collect_and_write(scratch: Path, out: Path, students: list[str], max_bytes: int = 10**6) -> dict[str, str]:
    """What the coordinator does with each student's results; returns the students that failed, with why."""
    failed = {}
    for student in students:
        try:
            files = grade.collect_result_files(scratch, "a1", student, ["nb"], max_bytes)
        except grade.UsageError as exc:
            failed[student] = str(exc)
            grade.write_student_files(out, "a1", student, {}, clear=True)
        else:
            grade.write_student_files(out, "a1", student, files)
    return failed


def test_file_flood_in_one_folder_copies_only_notebooks_and_feedback(tmp_path: Path) -> None:
    """20,100 files left by a student's code used to abort the copy of everyone's results."""
    scratch = fake_scratch(tmp_path, {"flood": 100, "bob": 100}, junk=20_100)
    out = tmp_path / "out"
    assert collect_and_write(scratch, out, ["flood", "bob"]) == {}
    for student in ("flood", "bob"):
        assert sorted(p.name for p in (out / "autograded" / student / "a1").iterdir()) == ["nb.ipynb"]
        assert sorted(p.name for p in (out / "feedback" / student / "a1").iterdir()) == ["nb.html"]
        assert (out / "autograded" / student / "a1" / "nb.ipynb").read_bytes() == b"x" * 100


def test_a_student_whose_results_cannot_be_copied_does_not_stop_the_others(tmp_path: Path) -> None:
    scratch = fake_scratch(tmp_path, {"alice": 100, "huge": 5000, "zoe": 100})
    out = tmp_path / "out"
    (out / "autograded" / "huge" / "a1").mkdir(parents=True)
    (out / "autograded" / "huge" / "a1" / "nb.ipynb").write_text("old results")
    failed = collect_and_write(scratch, out, ["alice", "huge", "zoe"], max_bytes=1000)
    assert list(failed) == ["huge"] and "too large" in failed["huge"]
    assert (out / "autograded" / "zoe" / "a1" / "nb.ipynb").stat().st_size == 100
    assert (out / "autograded" / "alice" / "a1" / "nb.ipynb").stat().st_size == 100
    assert not (out / "autograded" / "huge" / "a1" / "nb.ipynb").exists()  # no stale copy of old results
    result = grade.StudentResult("huge", "graded", 1.0, 1.0, 1.0, copy_failed=True,
                                 note=f"results not copied: {failed['huge']}")
    assert "results not copied" in grade.format_table([result])


def test_only_the_notebooks_stay_in_a_graded_folder(tmp_path: Path) -> None:
    """What the student's code left there would be copied into feedback/ by generate_feedback."""
    folder = tmp_path / "autograded" / "alice" / "a1"
    (folder / "junk" / "deeper").mkdir(parents=True)
    for name in ("nb.ipynb", "other.ipynb", "data.csv", "junk/1", "junk/deeper/2", "timestamp.txt",
                 "submission_secret.txt"):
        (folder / name).write_text(name)
    (folder / "link.ipynb").symlink_to(folder / "nb.ipynb")
    grade.prune_autograded(folder, ["nb"])
    # nbgrader's own submission files stay: release_feedback needs them next to the feedback page.
    assert sorted(p.name for p in folder.iterdir()) == ["nb.ipynb", "submission_secret.txt", "timestamp.txt"]


def test_logs_are_cut() -> None:
    text = grade.cut_log(b"y" * 5000, max_bytes=1000)
    assert text.startswith(b"y" * 1000) and b"log cut after 1000 bytes" in text and len(text) < 1100
    assert grade.cut_log(b"short", max_bytes=1000) == b"short"


# --------------------------------------------------------------------------- renamed notebooks


def stage(tmp_path: Path, files: list[str], notebooks: list[str]) -> tuple[Path, list[str]]:
    folder = tmp_path / "alice" / "a1"
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_text(name)
    scratch = tmp_path / "scratch"
    notes: list[str] = []
    sub = grade.Submission("alice", folder)
    return grade.stage_submission(sub, scratch, "a1", notebooks, notes), notes


def test_the_only_notebook_of_a_one_notebook_assignment_is_staged_under_its_name(tmp_path: Path) -> None:
    dest, notes = stage(tmp_path, ["embeddings (1).ipynb", "data.csv"], ["embeddings"])
    assert sorted(p.name for p in dest.iterdir()) == ["data.csv", "embeddings.ipynb"]
    assert (dest / "embeddings.ipynb").read_text() == "embeddings (1).ipynb"
    assert notes == ["graded 'embeddings (1).ipynb' as embeddings.ipynb"]


@pytest.mark.parametrize(("files", "notebooks"), [
    (["embeddings.ipynb", "embeddings (1).ipynb"], ["embeddings"]),  # the expected one is there
    (["copy1.ipynb", "copy2.ipynb"], ["embeddings"]),                # which one? leave it to nbgrader
    (["embeddings (1).ipynb"], ["embeddings", "other"]),             # several notebooks expected
])
def test_other_notebook_names_are_left_alone(tmp_path: Path, files: list[str], notebooks: list[str]) -> None:
    dest, notes = stage(tmp_path, files, notebooks)
    assert sorted(p.name for p in dest.iterdir()) == sorted(files)
    assert notes == []


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


# --------------------------------------------------------------------------- course configuration


def course_with_config(tmp_path: Path, extra: str = "", drop: str | None = None) -> Path:
    course = tmp_path / "course"
    course.mkdir()
    lines = (REPO / "nbgrader_config.py").read_text().splitlines(keepends=True)
    text = "".join(line for line in lines if drop is None or drop not in line) + extra
    (course / "nbgrader_config.py").write_text(text)
    return course


def test_the_course_configuration_loads_with_the_sealed_recheck() -> None:
    preprocessors = grade.check_course_config(REPO)
    assert set(grade.REQUIRED_PREPROCESSORS) <= set(preprocessors)


@pytest.mark.parametrize(("extra", "drop", "message"), [
    ("\nc.Execute.timeout = undefined_name\n", None, "does not load"),
    ("\nc.Autograde.autograde_preprocessors.remove('grading.preprocessors.SealedVerdict')\n", None,
     "lacks grading.preprocessors.SealedVerdict"),
    ("", "grading.preprocessors.TolerantExecute", "lacks grading.preprocessors.TolerantExecute"),
    ("\nc.Autograde.autograde_preprocessors.append('grading.preprocessors.NoSuchThing')\n", None,
     "cannot be imported"),
], ids=["name-error", "no-sealed-verdict", "no-tolerant-execute", "unimportable"])
def test_an_unusable_course_configuration_is_refused(tmp_path: Path, extra: str, drop: str | None,
                                                     message: str) -> None:
    course = course_with_config(tmp_path, extra, drop)
    with pytest.raises(grade.UsageError, match=message):
        grade.check_course_config(course)


def test_batch_limits_come_from_the_course_configuration(tmp_path: Path) -> None:
    course = course_with_config(tmp_path, "\nc.GradeBatch.max_submission_files = 7\nc.GradeBatch.timeout = 12.5\n")
    settings = grade.batch_settings(grade.load_course_config(course).batch)
    assert (settings.max_submission_files, settings.timeout) == (7, 12.5)
    assert settings.limits().max_submission_files == 7
    default = grade.GradeBatch()
    assert settings.max_result_bytes == default.max_result_bytes


@pytest.mark.parametrize(("setting", "want"), [("", 6 * 1024**3), ("2 * 1024**3", 2 * 1024**3), ("None", None)],
                         ids=["default", "two-gib", "unbounded"])
def test_the_summary_says_which_memory_bound_was_in_force(tmp_path: Path, setting: str, want: int | None) -> None:
    """Does the grading output name the memory bound per submission the course configured, and the
    mechanism that enforces it (the watchdog here: the course asks for it)?"""
    from grading.memory_bound import Mechanism

    settings = f"\nc.SubmissionLimits.memory_bytes = {setting}\n" if setting else ""
    course = course_with_config(tmp_path, settings + "\nc.SubmissionLimits.mechanism = 'watchdog'\n")
    config = grade.load_course_config(course)
    assert config.memory_bytes == want, f"expected SubmissionLimits.memory_bytes {want}, got {config.memory_bytes}"
    bound = config.limits().in_force()
    assert bound.mechanism is (Mechanism.NONE if want is None else Mechanism.WATCHDOG), bound
    outcome = grade.BatchOutcome([], tmp_path / "out", memory_bound=bound)
    options = grade.BatchOptions(course=course, assignment="a1", submissions=[])
    line = next((line for line in grade.summary(options, outcome).splitlines() if line.startswith("memory bound:")), None)
    expected = "not bounded" if want is None else f"{want / 1024**3:.2f} GiB, enforced by a watchdog"
    assert line is not None and expected in line, f"expected a 'memory bound:' line with {expected!r}, got {line!r}"


def test_the_course_chooses_the_mechanism_and_a_missing_cgroup_is_refused(tmp_path: Path) -> None:
    """Do SubmissionLimits.pids, .mechanism and .cgroup_parent reach the grader from the course
    configuration, and does a course that demands a cgroup the machine lacks get refused?"""
    from grading.cgroup import CgroupError

    course = course_with_config(tmp_path, "\nc.SubmissionLimits.pids = 77\nc.SubmissionLimits.mechanism = 'cgroup'\n"
                                "c.SubmissionLimits.cgroup_parent = '/no/such/parent'\n")
    limits = grade.load_course_config(course).limits()
    assert (limits.pids, limits.mechanism, limits.cgroup_parent) == (77, "cgroup", "/no/such/parent"), limits
    with pytest.raises(CgroupError, match="no usable cgroup"):
        limits.in_force()


def test_the_warm_and_the_cold_configuration_probe_agree(tmp_path: Path) -> None:
    """Does the probe forked from the warm fork server load the same configuration as a fresh interpreter?"""
    from grading import scratch, warm

    if not warm.available():
        pytest.skip("no fork server on this platform")
    course = course_with_config(tmp_path, "\nc.GradeBatch.timeout = 33.0\nc.SubmissionLimits.memory_bytes = 5\n")
    cold, hot = scratch.load_course_config(course), scratch.load_course_config(course, warm_start=True)
    assert hot == cold, f"cold probe {cold}, warm probe {hot}"
    assert (cold.batch["timeout"], cold.memory_bytes) == (33.0, 5), cold
    (tmp_path / "broken").mkdir()
    broken = course_with_config(tmp_path / "broken", "\nc.Execute.timeout = undefined_name\n")
    with pytest.raises(grade.UsageError, match="does not load"):
        scratch.load_course_config(broken, warm_start=True)


def test_a_configuration_without_autograde_preprocessors_is_refused(tmp_path: Path) -> None:
    (tmp_path / "nbgrader_config.py").write_text("c = get_config()\nc.CourseDirectory.course_id = 'x'\n")
    with pytest.raises(grade.UsageError, match="does not set c.Autograde.autograde_preprocessors"):
        grade.check_course_config(tmp_path)
    with pytest.raises(grade.UsageError, match="no nbgrader_config.py"):
        grade.check_course_config(tmp_path / "nowhere")


def test_grading_stops_with_exit_status_2_on_a_broken_configuration(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    course = course_with_config(tmp_path, "\nthis is not python\n")
    submission = tmp_path / "alice.ipynb"
    nbformat.write(new_notebook(), submission)
    code = grade.main(["--course", str(course), "--assignment", "a1", "--no-sandbox", "--out",
                       str(tmp_path / "out"), str(submission)])
    assert code == 2
    assert "does not load" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- sandbox


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server
    server.close()


CONNECT = """\
import socket, sys
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
except OSError as exc:
    print("refused", exc)
else:
    print("connected")
"""


@pytest.mark.needs_bwrap
def test_sandbox_has_no_network_by_default(tmp_path: Path, listener: socket.socket) -> None:
    """The sealed worker's sandbox (SealedVerdict uses the default) cannot reach the grading machine."""
    result = run_sandboxed(tmp_path, CONNECT.format(port=listener.getsockname()[1]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused"), result.stdout


def ipc_connection_file(tmp_path: Path, **changes: object) -> tuple[Path, sandbox.KernelSockets]:
    """A connection file as the sealed kernel's provisioner writes it (ipc, in a fresh socket directory)."""
    sockets = make_kernel_sockets(tmp_path)
    connection = tmp_path / "kernel.json"
    connection.write_text(json.dumps({"transport": "ipc", "ip": sockets.grader_prefix, "key": "k", **changes}))
    return connection, sockets


@pytest.mark.needs_bwrap
def test_kernel_sandbox_has_no_network(tmp_path: Path) -> None:
    """The kernel's sandbox has a network namespace of its own; of its socket directory only kernel/
    is bound (writable), with the kernel's own connection file naming it (read-only)."""
    connection, sockets = ipc_connection_file(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    command = sandbox.kernel_command(connection, work, [])
    assert "--share-net" not in command and ("--unshare-net" in command or "--unshare-all" in command)
    binds = {(command[i], command[i + 1], command[i + 2]) for i, arg in enumerate(command) if "bind" in arg}
    assert ("--bind", str(sockets.kernel), str(sockets.kernel)) in binds
    ro = str(sockets.connection_file)
    assert ("--ro-bind", ro, ro) in binds and command[command.index("-f") + 1] == ro
    assert not any(str(sockets.grader) in arg or str(connection) == arg for arg in command)
    kernel_info = json.loads(sockets.connection_file.read_text())
    assert kernel_info == {"transport": "ipc", "ip": sockets.kernel_prefix, "key": "k"}
    if os.geteuid() == 0:
        info = sockets.kernel.stat()
        assert info.st_uid >= sandbox.SANDBOX_UID_BASE and info.st_mode & 0o777 == 0o700


@pytest.mark.parametrize("problem", ["tcp", "relative", "not the layout", "shared", "holds files"])
def test_kernel_launcher_refuses_an_unsafe_connection_file(tmp_path: Path, problem: str) -> None:
    """The launcher starts the kernel only over ipc in a private socket directory whose kernel/ holds
    nothing but sockets (a TCP kernel could not be reached; a shared directory such as the course
    root would expose its files to the kernel)."""
    connection, sockets = ipc_connection_file(tmp_path)
    if problem == "tcp":
        connection.write_text(json.dumps({"transport": "tcp", "ip": "127.0.0.1"}))
    elif problem == "relative":
        connection.write_text(json.dumps({"transport": "ipc", "ip": "grader/kernel"}))
    elif problem == "not the layout":
        connection.write_text(json.dumps({"transport": "ipc", "ip": str(sockets.kernel / "kernel")}))
    elif problem == "shared":
        sockets.kernel.chmod(0o755)
    else:
        (sockets.kernel / "notes.txt").write_text("not a socket")
    with pytest.raises(sandbox.KernelLaunchError):
        sandbox.kernel_command(connection, tmp_path, [])


@pytest.mark.needs_bwrap
def test_process_limit_applies_inside_the_sandbox(tmp_path: Path) -> None:
    """RLIMIT_NPROC does not apply to root: a root grader runs the sandbox under another uid."""
    code = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(3)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError:\n"
        "    pass\n"
        "print(os.getuid(), n)\n"
    )
    result = run_sandboxed(tmp_path, code, nproc=40)
    assert result.returncode == 0, result.stderr
    uid, forked = map(int, result.stdout.split())
    assert uid != 0 and forked < 40
    if os.geteuid() == 0:
        assert tmp_path.stat().st_uid == uid  # the work directory was handed over


@pytest.mark.needs_bwrap
def test_grading_package_is_importable_in_the_sandbox(tmp_path: Path) -> None:
    result = run_sandboxed(tmp_path, "import grading.sealed.worker, os; print(sorted(os.listdir('/opt/sandbox-lib')))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['grading']"


@pytest.mark.slow
@pytest.mark.needs_bwrap
def test_sealed_worker_in_the_sandbox_passes_the_reference() -> None:
    from traitlets.config.loader import PyFileConfigLoader

    from fixtures.students import POINTS
    from grading.sealed import run_sealed
    from support.submissions import Submission

    names = list(PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config().SealedVerdict.student_names)
    with tempfile.TemporaryDirectory(prefix="sealed-work-") as work:
        verdicts = run_sealed(Submission("ref").notebook(), student_names=names, workdir=work,
                              worker_prefix=sandbox.sandbox_prefix(work))
    assert len(verdicts) == len(POINTS)
    assert [v.grade_id for v in verdicts.values() if not v.passed] == []


# --------------------------------------------------------------------------- end to end

FLOOD = "import os\nos.makedirs('junk')\nfor i in range(20_100):\n    open(os.path.join('junk', str(i)), 'w').close()\n"


@pytest.mark.slow
@pytest.mark.needs_bwrap
def test_flood_and_renamed_notebook_are_graded_with_the_others(tmp_path: Path) -> None:
    course = small_course(tmp_path / "course")
    release = nbformat.read(course / "release" / "a1" / "nb.ipynb", as_version=4)
    release.cells[1].source = "def add(a, b):\n    return a + b"
    subs = tmp_path / "subs"
    for student, name, extra in (("good", "nb.ipynb", ""), ("renamed", "nb (1).ipynb", ""),
                                 ("flood", "nb.ipynb", FLOOD)):
        nb = nbformat.from_dict(release)
        nb.cells.insert(1, new_code_cell(extra or "pass"))
        (subs / student / "a1").mkdir(parents=True)
        nbformat.write(nb, subs / student / "a1" / name)
    out = tmp_path / "out"
    result = run_grade(course, subs, out, "--feedback")
    assert result.returncode == 0, result.stdout + result.stderr
    for student in ("good", "renamed", "flood"):
        assert re.search(rf"^{student}\s+graded\s", result.stdout, flags=re.M), result.stdout
        assert sorted(p.name for p in (out / "autograded" / student / "a1").iterdir()) == ["nb.ipynb"]
        assert sorted(p.name for p in (out / "feedback" / student / "a1").iterdir()) == ["nb.html"]
    assert "graded 'nb (1).ipynb' as nb.ipynb" in result.stdout
    from nbgrader.api import Gradebook

    with Gradebook(grade.gradebook_url(out / "gradebook.db")) as gb:
        scores = {s: gb.find_submission("a1", s).score for s in ("good", "renamed", "flood")}
    assert scores == {"good": 1.0, "renamed": 1.0, "flood": 1.0}
