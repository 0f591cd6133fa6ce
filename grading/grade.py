"""Grade submissions of one assignment in a sealed scratch copy of the course.

Usage::

    python -m grading.grade --course . --assignment 12_embeddings SUBMISSION... \\
        [--out DIR] [--feedback] [--export grades.csv] [--timeout SECONDS] [--workers N] [--no-sandbox]

A SUBMISSION is a zip file (student id = file name without ``.zip``), a
student directory (``alice/`` holding the notebooks or ``alice/12_embeddings/``),
a directory of student directories (such as the course's ``submitted/``), or a
single ``alice.ipynb`` for a one-notebook assignment.

What happens (the library behind it: ``grading.batch``):

0. The course's ``nbgrader_config.py`` is loaded the way nbgrader loads it;
   grading stops (exit status 2) if it fails to load or if
   ``Autograde.autograde_preprocessors`` lacks ``TolerantExecute`` or
   ``SealedVerdict`` (nbgrader itself would grade with its defaults).
1. The course gradebook (``CourseDirectory.db_url``) must know the assignment;
   if it does not, ``nbgrader generate_assignment --force`` is run first.
2. Once per batch, a scratch-course template is built: the course's
   ``nbgrader_config.py``, a gradebook holding only the assignment's definition
   and the assignment's non-notebook source files.  No solution notebook and
   no other student's records are in it.
3. Each submission is graded in a fresh copy of the template of its own, up to
   ``--workers`` at once: ``nbgrader autograde --student`` with a wall-clock
   bound and the kernel ``python3-sealed`` (ipykernel inside bubblewrap; the
   autograded notebook's directory is the only course path it sees), then
   optionally ``nbgrader generate_feedback --student``.  A grading process that
   dies is retried once.
4. The results come back as data; the coordinator alone writes them: the
   student's autograded notebooks and feedback pages (nothing else a student's
   code left behind, with a size bound), the log, and the grades, merged into
   the gradebook (the course's, after a ``gradebook.db.bak`` copy, or
   ``--out/gradebook.db``).  Optionally ``nbgrader export``; then a score table.

A one-notebook assignment handed in under another name (``embeddings (1).ipynb``,
the only notebook in the folder) is graded under the assignment's notebook name.

Exit status: 0 if every submission was graded (a notebook whose kernel died
counts as graded) and its results copied, 1 if some were not, 2 for usage
errors (including an unusable course configuration).
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from grading import warm

if __name__ == "__main__":
    warm.skip_unused_imports()
    if not any(arg.startswith("--scheduler") for arg in sys.argv):
        warm.start()  # the fork server imports nbgrader while this process does (grading.warm)

from grading import sandbox  # noqa: E402 (after the fork server's start, so both import at once)
from grading.progress import Progress
from grading.batch import BatchOptions, BatchOutcome, GradeBatch, batch_settings, default_workers, run_batch
from grading.results import (collect_result_files, cut_log, format_table, join_notes, merge_record, read_record,
                             read_result, write_student_files)
from grading.run_one import (DEFAULT_TIMEOUT, Job, Status, StudentResult, autograde_args, autograded_ok, grade_one,
                             prune_autograded, run_bounded, run_step)
from grading.scratch import (REQUIRED_PREPROCESSORS, assignment_notebooks, build_template, check_course_config,
                             ensure_gradebook, gradebook_url, load_course_config, nbgrader_command, nbgrader_env,
                             scratch_args, stale_test_cells)
from grading.submissions import (SKIP_NAMES, STUDENT_ID, Limits, Submission, UsageError, adopt_renamed_notebook,
                                 check_student_id, collect_submissions, copy_tree, directory_submissions,
                                 has_notebooks, safe_extract, stage_submission, submission_dir, zip_submission)

__all__ = [  # the library names this module offers
    "BatchOptions", "BatchOutcome", "DEFAULT_TIMEOUT", "GradeBatch", "Job", "Limits", "REQUIRED_PREPROCESSORS",
    "SKIP_NAMES", "STUDENT_ID", "Status", "StudentResult", "Submission", "UsageError", "adopt_renamed_notebook",
    "assignment_notebooks", "autograde_args", "autograded_ok", "batch_settings", "build_template",
    "check_course_config", "check_student_id", "collect_result_files", "collect_submissions", "copy_tree",
    "cut_log", "default_workers", "directory_submissions", "ensure_gradebook", "format_table", "grade_one",
    "gradebook_url", "has_notebooks", "join_notes", "load_course_config", "main", "merge_record",
    "nbgrader_command", "nbgrader_env", "prune_autograded", "read_record", "read_result", "run_batch",
    "run_bounded", "run_step", "safe_extract", "scratch_args", "stage_submission", "stale_test_cells",
    "submission_dir", "write_student_files", "zip_submission",
]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m grading.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("--course", type=Path, default=Path("."), help="course root (default: .)")
    parser.add_argument("--assignment", required=True, help="assignment id, e.g. 12_embeddings")
    parser.add_argument("submissions", nargs="+", type=Path, help="zip files, notebooks or directories")
    parser.add_argument("--out", type=Path, default=None, help="where results go (default: the course)")
    parser.add_argument("--feedback", action="store_true", help="also run nbgrader generate_feedback")
    parser.add_argument("--export", type=Path, default=None, metavar="CSV", help="write grades CSV here")
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds per submission (default: GradeBatch.timeout, {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--regenerate", action="store_true", help="run generate_assignment even if graded before")
    parser.add_argument("--no-sandbox", action="store_true", help="development only: run kernels unsandboxed")
    parser.add_argument("--keep-scratch", action="store_true", help="keep the batch's scratch folder for inspection")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="send the grading jobs to this Dask scheduler (e.g. tcp://10.0.0.5:8786)")
    parser.add_argument("--report", type=Path, default=None, metavar="DIR",
                        help="write a class report here (report.html, PNG plots, per_cell.csv)")
    parser.add_argument("--gradescope", type=Path, default=None, metavar="DIR",
                        help="write a Gradescope results.json per student here (DIR/<student>/results.json)")
    parser.add_argument("--force", action="store_true",
                        help="regrade submissions already graded from the same files (see grading_ledger.sqlite)")
    parser.add_argument("--workers", type=int, default=None,
                        help=f"submissions graded at once (default: the cores here, {default_workers()})")
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> BatchOptions:
    """The parsed command line as batch options."""
    return BatchOptions(course=args.course, assignment=args.assignment, submissions=list(args.submissions),
                        out=args.out, feedback=args.feedback, export=args.export, timeout=args.timeout,
                        regenerate=args.regenerate, sandboxed=not args.no_sandbox, keep_scratch=args.keep_scratch,
                        workers=args.workers, force=args.force, scheduler=args.scheduler, report=args.report,
                        gradescope=args.gradescope)


class _ConsoleFormatter(logging.Formatter):
    """Plain messages; warnings start with ``warning:``."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return f"warning: {message}" if record.levelno >= logging.WARNING else message


def console_logging() -> logging.Handler:
    """Send the ``grading`` loggers' INFO and above to stdout; return the handler (to remove it later)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_ConsoleFormatter())
    logger = logging.getLogger("grading")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def summary(options: BatchOptions, outcome: BatchOutcome) -> str:
    """The score table and where the results are."""
    out = outcome.out
    lines = ["", format_table(outcome.results), "", f"autograded notebooks: {out / 'autograded'}"]
    if options.feedback:
        lines.append(f"feedback:             {out / 'feedback'}")
    if options.export:
        lines.append(f"grades CSV:           {options.export.resolve()}")
    lines.append(f"gradebook:            {outcome.gradebook}")
    if outcome.memory_bound:
        lines.append(f"memory bound:         {outcome.memory_bound.describe()}")
    lines.append(f"logs:                 {out / 'grading_logs' / options.assignment}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Grade the submissions; see the module docstring."""
    args = parse_args(argv)
    if args.workers is not None and args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    options = options_from(args)
    if options.sandboxed and not sandbox.bwrap_available():
        print("bubblewrap (bwrap) is not usable here; install it or pass --no-sandbox (development only)",
              file=sys.stderr)
        return 2
    handler = console_logging()
    progress = Progress(sys.stdout)
    try:
        try:
            outcome = run_batch(options, on_result=progress.update, on_start=progress.begin)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            progress.close()
        sys.stdout.flush()
        if outcome.copy_error is not None:
            print(f"error: {outcome.copy_error}", file=sys.stderr)
            print()
            print(format_table(outcome.results))
            return 1
        print(summary(options, outcome))
        return 0 if outcome.complete else 1
    finally:
        logging.getLogger("grading").removeHandler(handler)


def exit_now(code: int) -> None:
    """End the command with ``code`` once its output is flushed and its exit handlers have run,
    without the interpreter's teardown of every module nbgrader imported (0.3 s to 0.8 s measured at
    load average 7 on 2 cores, freeing memory the operating system takes back anyway)."""
    logging.shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
