"""Grade a batch of submissions of one assignment: the library behind ``python -m grading.grade``.

:func:`run_batch` takes a :class:`BatchOptions` (plain values) and returns a :class:`BatchOutcome`;
it logs what it does (logger ``grading``) and prints nothing.  The limits an instructor may change
are traits of :class:`GradeBatch`, set in ``nbgrader_config.py`` (``c.GradeBatch.timeout = 600``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from traitlets import Float, Integer
from traitlets.config import Configurable

from grading import run_one, scratch, warm
from grading.cgroup import CgroupError
from grading.memory_bound import MemoryBound
from grading.ledger import LEDGER_NAME, Ledger
from grading.results import join_notes, merge_record, read_result, write_student_files
from grading.run_one import Job, Status, StudentResult
from grading.submissions import (MAX_SUBMISSION_BYTES, MAX_SUBMISSION_FILES, Limits, Submission, UsageError,
                                 collect_submissions, files_hash, read_files, stage_submission)

if TYPE_CHECKING:
    from nbgrader.api import Gradebook

log = logging.getLogger(__name__)


class GradeBatch(Configurable):
    """Limits of ``python -m grading.grade`` (set them in ``nbgrader_config.py``)."""

    timeout = Float(run_one.DEFAULT_TIMEOUT, help="Wall-clock seconds per submission before nbgrader and "
                    "everything it started are killed (the command's --timeout overrides it).").tag(config=True)
    max_submission_bytes = Integer(MAX_SUBMISSION_BYTES, help="Largest submission (bytes of all its files, "
                                   "or of a zip's content); a larger one is reported, not graded.").tag(config=True)
    max_submission_files = Integer(MAX_SUBMISSION_FILES, help="Most files in one submission.").tag(config=True)
    max_result_bytes = Integer(Limits.max_result_bytes, help="Most bytes of autograded notebooks and feedback "
                               "pages copied out per student.").tag(config=True)
    max_log_bytes = Integer(Limits.max_log_bytes, help="Each grading log copied out is cut after this many "
                            "bytes.").tag(config=True)

    def limits(self) -> Limits:
        """The size limits as a value."""
        return Limits(max_submission_bytes=self.max_submission_bytes, max_submission_files=self.max_submission_files,
                      max_result_bytes=self.max_result_bytes, max_log_bytes=self.max_log_bytes)


def batch_settings(loaded: dict[str, object]) -> GradeBatch:
    """A GradeBatch with the settings loaded from the course configuration (unknown keys ignored)."""
    names = set(GradeBatch.class_trait_names(config=True))
    return GradeBatch(**{k: v for k, v in loaded.items() if k in names})


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class BatchOptions:
    """What to grade and how (the command-line options, as values)."""

    course: Path
    assignment: str
    submissions: Sequence[Path]
    out: Path | None = None  # default: the course itself
    feedback: bool = False
    export: Path | None = None
    timeout: float | None = None  # default: GradeBatch.timeout
    regenerate: bool = False
    sandboxed: bool = True
    keep_scratch: bool = False
    workers: int | None = None  # default: the machine's cores
    force: bool = False  # regrade submissions the ledger says were graded from the same files
    scheduler: str | None = None  # address of a Dask scheduler to send the jobs to
    report: Path | None = None  # class report folder (report.html, PNG plots, per_cell.csv)
    gradescope: Path | None = None  # folder of Gradescope results.json, one per student

    @property
    def warm_start(self) -> bool:
        """nbgrader runs as forks of this process's fork server (:mod:`grading.warm`): on this machine only."""
        return self.scheduler is None and warm.available()


@dataclass
class BatchOutcome:
    """What a batch produced."""

    results: list[StudentResult]
    out: Path
    gradebook: str = ""  # where the grades are: a file path (SQLite) or the database URL
    warnings: list[str] = field(default_factory=list)
    copy_error: str | None = None  # results could not be written out at all
    scratch: Path | None = None  # kept for inspection
    fixed_seconds: float = 0.0  # batch set-up before the first submission could start
    memory_bound: MemoryBound | None = None  # the memory bound per submission in force
    seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def complete(self) -> bool:
        """Every submission graded and its results copied."""
        return self.copy_error is None and all(r.status == Status.GRADED and not r.copy_failed for r in self.results)


@dataclass(frozen=True)
class Target:
    """Where the batch's grades go: the gradebook only the coordinator writes."""

    url: str
    course_id: str
    display: str  # file path or URL, for the summary


@dataclass(frozen=True)
class Prepared:
    """A checked course, its submissions and the per-batch template."""

    notebooks: list[str]
    submissions: list[Submission]
    settings: GradeBatch
    course_id: str
    target: Target
    template: bytes
    released: dict[str, dict[str, str]] = field(default_factory=dict)  # notebook -> locked cell checksums
    memory_bound: MemoryBound | None = None  # what the course's SubmissionLimits give on this machine


def target_gradebook(course_url: str, course_id: str, out: Path, to_course: bool) -> Target:
    """The gradebook the batch writes: the course's own (SQLite: a ``.bak`` copy is made first), or,
    with ``--out`` and an SQLite course gradebook, ``out/gradebook.db`` (started as a copy of the
    course gradebook, kept as it is when it exists, so an interrupted batch resumes into it)."""
    path = scratch.sqlite_path(course_url)
    if path is None:
        return Target(course_url, course_id, course_url)
    if to_course:
        shutil.copy2(path, path.with_name(path.name + ".bak"))
        target = path
    else:
        target = out / "gradebook.db"
        if not target.is_file():
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return Target(scratch.gradebook_url(target), course_id, str(target))


def read_definition(options: BatchOptions, course: Path, url: str, course_id: str,
                    template: Path) -> scratch.CourseDefinition | None:
    """:func:`grading.scratch.read_definition`, in a fork of the fork server when grading warm (it has
    nbgrader imported; this process need not import it before the first submission starts)."""
    args = (course, url, course_id, options.assignment, template)
    if options.warm_start:
        try:
            return warm.call(scratch.read_definition, *args, timeout=scratch.PROBE_TIMEOUT)
        except TimeoutError as exc:
            raise UsageError(f"reading the course gradebook took more than {scratch.PROBE_TIMEOUT:g} s") from exc
        except (ChildProcessError, EOFError, ConnectionError) as exc:
            log.warning("the fork server could not read the course gradebook (%r); reading it here", exc)
            shutil.rmtree(template, ignore_errors=True)
    return scratch.read_definition(*args)


def prepare(options: BatchOptions, course: Path, scratch_dir: Path, out: Path) -> Prepared:
    """Check the config and gradebook, build the template, collect submissions (raises UsageError)."""
    config = scratch.load_course_config(course, warm_start=options.warm_start)
    settings = batch_settings(config.batch)
    try:
        bound = config.limits().in_force()
    except CgroupError as exc:
        raise UsageError(str(exc)) from None
    url, course_id = config.db_url or scratch.gradebook_url(course / "gradebook.db"), config.course_id
    template = scratch_dir / "template"
    definition = None if options.regenerate else read_definition(options, course, url, course_id, template)
    if definition is None:
        scratch.generate_assignment(course, url, options.assignment)
        definition = read_definition(options, course, url, course_id, template)
        if definition is None:
            raise UsageError(f"the gradebook of {course} has no notebooks for {options.assignment}")
    if definition.stale:
        log.warning("tests changed since generate_assignment (grading uses the old version): %s; "
                    "pass --regenerate to use the current source", ", ".join(definition.stale))
    for path in definition.unreleased:
        log.warning("no release of %s to check submissions against (%s)", Path(path).stem, path)
    submissions = collect_submissions(options.submissions, options.assignment, scratch_dir / "unpacked",
                                      settings.limits())
    target = target_gradebook(url, course_id, out, to_course=options.out is None)
    return Prepared(definition.notebooks, submissions, settings, course_id, target, run_one.pack_tree(template),
                    definition.released, memory_bound=bound)


def make_job(sub: Submission, prepared: Prepared, options: BatchOptions, staging: Path,
             timeout: float) -> Job | StudentResult:
    """Stage one submission into a job, or the error result of a submission that cannot be staged."""
    limits = prepared.settings.limits()
    notes: list[str] = []
    folder = staging / sub.student
    try:
        if sub.problem is not None:
            raise UsageError(sub.problem)
        staged = stage_submission(sub, folder, options.assignment, prepared.notebooks, notes, limits)
        files = read_files(staged)
    except (UsageError, OSError) as exc:
        return StudentResult(sub.student, Status.ERROR, 0.0, note=str(exc),
                             log_text=f"could not stage submission: {exc}\n".encode())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return Job(student=sub.student, assignment=options.assignment, notebooks=tuple(prepared.notebooks),
               files=files, template=prepared.template, course_id=prepared.course_id, sandboxed=options.sandboxed,
               timeout=timeout, feedback=options.feedback, limits=limits, content_hash=files_hash(files),
               note="; ".join(notes), released=prepared.released, warm=options.warm_start)


Submit = Callable[[Job], Future]


def grade_all(jobs: Iterator[Job | StudentResult], submit: Submit, workers: int,
              accept: Callable[[StudentResult], None], started: Callable[[], None] | None = None) -> None:
    """Run jobs, at most ``workers`` at once (plus one staged ahead), and hand each result to ``accept``.

    A job whose grading process died (status ``crashed``, or an exception from the pool) is run
    once more; the second outcome is the one reported.  ``started`` is called once, when the first
    jobs have been submitted (work that can wait for them).
    """
    running: dict[Future, tuple[Job, int, str]] = {}
    queue: deque[Job | StudentResult] = deque()
    exhausted = False

    def refill() -> None:
        nonlocal exhausted
        while not exhausted and len(running) < workers:
            try:
                item = next(jobs)
            except StopIteration:
                exhausted = True
                return
            if isinstance(item, StudentResult):
                queue.append(item)
            else:
                running[submit(item)] = (item, 1, "")

    refill()
    if started is not None:
        started()
    while queue or running:
        while queue:
            accept(queue.popleft())
        if not running:
            refill()
            continue
        done, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for future in done:
            job, attempt, earlier = running.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # the worker process died or could not run the job
                result = StudentResult(job.student, Status.CRASHED, 0.0, note=f"worker failed: {exc!r}",
                                       content_hash=job.content_hash)
            if result.status == Status.CRASHED and attempt == 1:
                log.warning("grading %s crashed (%s); trying once more", job.student, result.note)
                running[submit(job)] = (job, 2, result.note or "the grading process died")
                continue
            result.attempts = attempt
            if earlier:
                result.note = join_notes(result.note, f"first attempt crashed: {earlier}")
            accept(result)
        refill()


class Coordinator:
    """Writes what workers return: result files, logs and the gradebook (the only writer)."""

    def __init__(self, options: BatchOptions, prepared: Prepared, out: Path, ledger: Ledger,
                 on_result: Callable[[StudentResult], None] | None = None) -> None:
        self.options, self.prepared, self.out, self.ledger = options, prepared, out, ledger
        self._gradebook: Gradebook | None = None
        self.results: list[StudentResult] = []
        self.on_result = on_result
        self.logs = out / "grading_logs" / options.assignment

    @property
    def gradebook(self) -> Gradebook:
        """The target gradebook, one connection per batch, opened on first use (:meth:`open`)."""
        if self._gradebook is None:
            from nbgrader.api import Gradebook

            self._gradebook = Gradebook(self.prepared.target.url, self.prepared.target.course_id)
        return self._gradebook

    def open(self) -> None:
        """Open the gradebook (importing nbgrader here): called once the first submissions are running."""
        self.gradebook  # noqa: B018 (the property opens it)

    def merge(self, result: StudentResult) -> None:
        """Merge a graded result into the gradebook, read its score back, mark it merged in the ledger."""
        assignment, target = self.options.assignment, self.prepared.target
        if result.status == Status.GRADED and result.record is not None:
            merge_record(self.gradebook, target.course_id, assignment, result.record)
            read = read_result(self.gradebook, target.course_id, assignment, result.student)
            self.gradebook.db.commit()  # end the read transaction: other gradebook users may write
            if read is not None:
                result.score, result.max_score, result.failed_tests = read[0], read[1], read[2]
        self.ledger.mark_merged(assignment, result.student)

    def close(self) -> None:
        """Close the gradebook connection."""
        if self._gradebook is not None:
            self._gradebook.close()
            self._gradebook = None

    def finish_interrupted(self) -> int:
        """Merge what a killed batch recorded but did not merge; return how many."""
        pending = self.ledger.unmerged(self.options.assignment)
        for result in pending:
            self.merge(result)
        return len(pending)

    def resumed(self, job: Job) -> StudentResult | None:
        """The ledger's result for a job graded before from the same files (unless ``--force``)."""
        if self.options.force:
            return None
        entry = self.ledger.get(self.options.assignment, job.student)
        if entry is None or not entry.merged or entry.content_hash != job.content_hash \
                or entry.result.status != Status.GRADED:
            return None
        target = self.prepared.target
        found = read_result(self.gradebook, target.course_id, self.options.assignment, job.student)
        self.gradebook.db.commit()
        if found is None:
            return None  # not in this gradebook (a new --out, a restored gradebook): grade again
        result = entry.result
        result.resumed = True
        result.note = join_notes(result.note, "graded before from the same files (--force regrades)")
        return result

    def accept(self, result: StudentResult) -> None:
        """Record one result: files, then the ledger, then the gradebook, then the score read back from it."""
        if result.resumed:
            self.results.append(result)
            if self.on_result is not None:
                self.on_result(result)
            return
        assignment = self.options.assignment
        if result.status == Status.GRADED and (result.files or result.copy_failed):
            try:
                write_student_files(self.out, assignment, result.student, result.files, clear=result.copy_failed)
            except OSError as exc:
                result.copy_failed = True
                result.note = join_notes(result.note, f"results not copied: {exc}")
                log.warning("results of %s not copied to %s: %s", result.student, self.out, exc)
        try:
            self.logs.mkdir(parents=True, exist_ok=True)
            (self.logs / f"{result.student}.log").write_bytes(result.log_text)
        except OSError as exc:
            log.warning("log of %s not written: %s", result.student, exc)
        self.ledger.record(assignment, result)
        self.merge(result)
        result.files = {}  # written; do not keep every notebook of the class in memory
        self.results.append(result)
        if self.on_result is not None:
            self.on_result(result)


def write_batch_record(path: Path, outcome: BatchOutcome, workers: int) -> None:
    """A JSON record of the batch: per submission status, score, timings, attempts and worker."""
    rows = [{"student": r.student, "status": str(r.status), "score": r.score, "max_score": r.max_score,
             "seconds": round(r.seconds, 3), "started": r.started, "phases": r.phases, "attempts": r.attempts,
             "worker": r.worker, "content_hash": r.content_hash, "note": r.note, "tampered": r.tampered,
             "kernel_test_cell_seconds": round(sum(c.seconds or 0.0 for c in r.cell_runs.values()), 3)}
            for r in sorted(outcome.results, key=lambda r: r.student)]
    record = {"workers": workers, "fixed_seconds": round(outcome.fixed_seconds, 3),
              "memory_bound": None if outcome.memory_bound is None else outcome.memory_bound.record(),
              "seconds": round(time.monotonic() - outcome.started, 3), "submissions": rows}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1) + "\n")
    except OSError as exc:
        log.warning("batch record not written: %s", exc)


def grade_cell_points(url: str, course_id: str, assignment: str) -> dict[tuple[str, str], float]:
    """(notebook, grade_id) -> points of every graded cell of the assignment."""
    from nbgrader.api import Gradebook

    with Gradebook(url, course_id) as gb:
        return {(nb.name, cell.name): float(cell.max_score)
                for nb in gb.find_assignment(assignment).notebooks for cell in nb.grade_cells}


def write_class_outputs(options: BatchOptions, course: Path, prepared: Prepared, outcome: BatchOutcome) -> None:
    """The class report and the Gradescope results, as asked."""
    from grading import report

    points = grade_cell_points(prepared.target.url, prepared.target.course_id, options.assignment)
    sources = {nb: course / "source" / options.assignment / f"{nb}.ipynb" for nb in prepared.notebooks}
    cells = report.assignment_cells(sources, points)
    if options.report:
        page = report.write_report(options.report.resolve(), options.assignment, outcome.results, cells)
        log.info("class report: %s", page)
    if options.gradescope:
        written = report.write_gradescope(options.gradescope.resolve(), outcome.results, cells)
        log.info("Gradescope results: %d results.json in %s", len(written), options.gradescope.resolve())


def export_grades(options: BatchOptions, scratch_dir: Path, target: Target) -> bool:
    """``nbgrader export`` of the target gradebook to ``options.export``."""
    assert options.export is not None
    csv = scratch_dir / "grades.csv"
    root = scratch_dir / "template"
    args = ["export", f"--to={csv}", f"--assignment={options.assignment}", f"--CourseDirectory.root={root}",
            f"--CourseDirectory.db_url={target.url}"]
    (scratch_dir / "logs").mkdir(exist_ok=True)
    if run_one.run_step(args, root, scratch_dir / "logs" / "_steps.log", warm_start=options.warm_start) \
            and csv.exists():
        options.export.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(csv, options.export)
        return True
    return False


def run_batch(options: BatchOptions, on_result: Callable[[StudentResult], None] | None = None,
              submit: Submit | None = None, on_start: Callable[[int], None] | None = None) -> BatchOutcome:
    """Grade the submissions (raises UsageError for an unusable course or arguments).

    ``submit`` runs a job somewhere and returns a future of its result (default: the Dask cluster
    at ``options.scheduler``, else a pool of ``options.workers`` threads, each driving its own
    nbgrader process).  ``on_start`` is called
    with the number of submissions once they are known, ``on_result`` with each result.
    """
    start = time.monotonic()
    course = options.course.resolve()
    out = (options.out or course).resolve()
    scratch_dir = Path(tempfile.mkdtemp(prefix="nbgrader-batch-"))
    workers = options.workers or default_workers()
    pool = None
    ledger = None
    coordinator = None
    close_cluster: Callable[[], None] | None = None
    if options.warm_start:
        warm.start()  # at once if the grading command started it already
    try:
        prepared = prepare(options, course, scratch_dir, out)
        timeout = options.timeout if options.timeout is not None else prepared.settings.timeout
        ledger = Ledger(out / LEDGER_NAME)
        coordinator = Coordinator(options, prepared, out, ledger, on_result)
        finished = coordinator.finish_interrupted()
        if finished:
            log.info("merged %d result(s) an interrupted batch had recorded", finished)
        outcome = BatchOutcome(coordinator.results, out, gradebook=prepared.target.display, started=start,
                               memory_bound=prepared.memory_bound)
        outcome.fixed_seconds = time.monotonic() - start
        if submit is None and options.scheduler:
            from grading.dask_pool import dask_submitter

            submit, close_cluster, workers = dask_submitter(options.scheduler, options.workers)
        if submit is None:
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grade")
            work_root = str(scratch_dir)
            submit = lambda job: pool.submit(run_one.grade_one, job, work_root)  # noqa: E731
        staging = scratch_dir / "staging"
        def jobs() -> Iterator[Job | StudentResult]:
            for sub in prepared.submissions:
                item = make_job(sub, prepared, options, staging, timeout)
                yield (coordinator.resumed(item) or item) if isinstance(item, Job) else item

        try:
            if on_start is not None:
                on_start(len(prepared.submissions))
            grade_all(jobs(), submit, workers, coordinator.accept, started=coordinator.open)
        except OSError as exc:
            outcome.copy_error = f"results could not be written to {out}: {exc}"
        write_batch_record(out / "grading_logs" / options.assignment / "batch.json", outcome, workers)
        if options.report or options.gradescope:
            write_class_outputs(options, course, prepared, outcome)
        if options.export and not export_grades(options, scratch_dir, prepared.target):
            outcome.warnings.append("export failed, see _steps.log in the logs")
            log.warning("export failed, see _steps.log in the logs")
        if options.keep_scratch:
            outcome.scratch = scratch_dir
        outcome.seconds = time.monotonic() - start
        return outcome
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
        if close_cluster is not None:
            close_cluster()
        if coordinator is not None:
            coordinator.close()
        if ledger is not None:
            ledger.close()
        steps_log = scratch_dir / "logs" / "_steps.log"
        if steps_log.is_file():
            logs = out / "grading_logs" / options.assignment
            logs.mkdir(parents=True, exist_ok=True)
            shutil.copy2(steps_log, logs / steps_log.name)
        if options.keep_scratch:
            log.info("scratch course kept at %s", scratch_dir)
        else:
            shutil.rmtree(scratch_dir, ignore_errors=True)
