"""Grade a batch of submissions of one assignment: the library behind ``python -m grading.grade``.

:func:`run_batch` takes a :class:`BatchOptions` (plain values) and returns a :class:`BatchOutcome`;
it logs what it does (logger ``grading``) and prints nothing.  The limits an instructor may change
are traits of :class:`GradeBatch`, set in ``nbgrader_config.py`` (``c.GradeBatch.timeout = 600``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from traitlets import Float, Integer
from traitlets.config import Configurable

from grading import run_one, scratch
from grading.results import copy_results
from grading.submissions import (MAX_SUBMISSION_BYTES, MAX_SUBMISSION_FILES, Limits, Submission, UsageError,
                                 collect_submissions)

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


@dataclass
class BatchOutcome:
    """What a batch produced."""

    results: list[run_one.StudentResult]
    out: Path
    gradebook: Path | None = None
    warnings: list[str] = field(default_factory=list)
    copy_error: str | None = None  # results could not be copied out at all (they stay in scratch)
    scratch: Path | None = None  # kept for inspection (or because the results are only there)

    @property
    def complete(self) -> bool:
        """Every submission graded and its results copied."""
        return self.copy_error is None and all(r.status == "graded" and not r.copy_failed for r in self.results)


@dataclass(frozen=True)
class Prepared:
    """A checked course and its submissions."""

    notebooks: list[str]
    submissions: list[Submission]
    gradebook_mtime: float
    settings: GradeBatch


def prepare(options: BatchOptions, course: Path, scratch_dir: Path) -> Prepared:
    """Check the config and gradebook, build the scratch course, collect submissions (raises UsageError)."""
    config = scratch.load_course_config(course)
    settings = batch_settings(config.batch)
    notebooks = scratch.ensure_gradebook(course, options.assignment, options.regenerate)
    stale = scratch.stale_test_cells(course, options.assignment, notebooks)
    if stale:
        log.warning("tests changed since generate_assignment (grading uses the old version): %s; "
                    "pass --regenerate to use the current source", ", ".join(stale))
    gradebook_mtime = (course / "gradebook.db").stat().st_mtime
    scratch.build_scratch(course, options.assignment, scratch_dir, sandboxed=options.sandboxed)
    submissions = collect_submissions(options.submissions, options.assignment, scratch_dir / "unpacked",
                                      settings.limits())
    return Prepared(notebooks, submissions, gradebook_mtime, settings)


def post_steps(options: BatchOptions, scratch_dir: Path, any_graded: bool) -> list[str]:
    """Run generate_feedback and export as asked; return warnings."""
    warnings = []
    step_log = scratch_dir / "logs" / "_steps.log"
    scratch_args = scratch.scratch_args(scratch_dir)
    if options.feedback and any_graded:
        if not run_one.run_step(["generate_feedback", options.assignment, "--force", *scratch_args],
                                scratch_dir, step_log):
            warnings.append("generate_feedback failed, see _steps.log in the logs")
    if options.export:
        csv = scratch_dir / "grades.csv"
        export_args = ["export", f"--to={csv}", f"--assignment={options.assignment}", *scratch_args]
        if run_one.run_step(export_args, scratch_dir, step_log) and csv.exists():
            options.export.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(csv, options.export)
        else:
            warnings.append("export failed, see _steps.log in the logs")
    return warnings


def run_batch(options: BatchOptions) -> BatchOutcome:
    """Grade the submissions (raises UsageError for an unusable course or arguments)."""
    course = options.course.resolve()
    scratch_dir = Path(tempfile.mkdtemp(prefix="nbgrader-sealed-"))
    keep = options.keep_scratch
    out = (options.out or course).resolve()
    try:
        prepared = prepare(options, course, scratch_dir)
        limits = prepared.settings.limits()
        timeout = options.timeout if options.timeout is not None else prepared.settings.timeout
        results = []
        for sub in prepared.submissions:
            log.info("grading %s ...", sub.student)
            results.append(run_one.grade_one(sub, scratch_dir, options.assignment, prepared.notebooks,
                                             sandboxed=options.sandboxed, timeout=timeout, limits=limits))
        graded = [r for r in results if r.status == "graded"]
        outcome = BatchOutcome(results, out)
        for warning in post_steps(options, scratch_dir, bool(graded)):
            log.warning("%s", warning)
            outcome.warnings.append(warning)
        try:
            outcome.gradebook = copy_results(
                scratch_dir, out, options.assignment, results, course_gradebook=course / "gradebook.db",
                gradebook_mtime=prepared.gradebook_mtime, to_course=options.out is None,
                notebooks=prepared.notebooks, limits=limits,
            )
        except (OSError, shutil.Error, UsageError) as exc:
            keep = True  # the grades exist only there now
            outcome.copy_error = f"results could not be copied to {out}: {exc}"
        if keep:
            outcome.scratch = scratch_dir
        return outcome
    finally:
        if not keep:
            shutil.rmtree(scratch_dir, ignore_errors=True)
        else:
            log.info("scratch course kept at %s", scratch_dir)
