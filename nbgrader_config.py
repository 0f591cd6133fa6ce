"""nbgrader configuration of the course (only settings that differ from nbgrader's defaults).

Grade with ``python -m grading.grade`` (sealed scratch course, sandboxed kernel);
see grading/grade.py.
"""

from pathlib import Path

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

# Course identity, used in the gradebook and the exchange.
c.CourseDirectory.course_id = "ml-systems"
# The course root is the directory of this file, wherever nbgrader is started from.
c.CourseDirectory.root = str(Path(__file__).resolve().parent)
# Never copy tool caches into released or graded assignments.
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback",
    ".pytest_cache", ".mypy_cache", ".ruff_cache", ".DS_Store",
]

# Test cells a student deleted are put back and graded (default: left out, score unset).
c.OverwriteCells.add_missing_cells = True

# Seconds per cell before the kernel is interrupted (nbgrader's default is 30).
c.Execute.timeout = 60

# Outputs kept: per cell (100,000 characters of text, 5,000,000 of images) and for the whole notebook.
c.LimitOutputChars.max_total_chars = 1_000_000
c.LimitOutputChars.max_total_image_chars = 5_000_000

# Autograde, sanitizing: copy-pasted or foreign nbgrader cells become plain cells instead of
# aborting the grading (nbgrader 0.9.6 fails on both), and deleted test cells are put back even
# when the cell before them is gone too (OverwriteCells raises KeyError then, e.g. on an empty
# notebook). OverwriteCellsAnywhere reads the c.OverwriteCells settings above.
c.Autograde.sanitize_preprocessors = [
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.DeduplicateIds",
    "grading.preprocessors.SanitizeNbgraderMetadata",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "grading.preprocessors.OverwriteCellsAnywhere",
    "nbgrader.preprocessors.CheckCellMetadata",
]

# Autograde, grading: the hidden tests are taken out of the test cells (the student's kernel never
# runs or sees them), dead-kernel tolerant execution with streaming output caps, the sealed
# re-check of every full test cell (which puts the hidden tests back), then a size cap on the
# outputs of every cell and of the whole notebook, before grades are saved.
c.Autograde.autograde_preprocessors = [
    "grading.preprocessors.StripHiddenTests",
    "grading.preprocessors.TolerantExecute",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "grading.preprocessors.SealedVerdict",
    "grading.preprocessors.LimitOutputChars",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]

# Read-only cells not run while grading: the speed self-checks, the profiling and plots of Parts 7
# and 8 and Part 9's corpus and training demonstration earn no points and take seconds of every
# submission's kernel time (every test cell builds what it needs itself).
c.TolerantExecute.skip_cells = [
    "speed_check_embedding", "speed_check_sinusoid", "profile_bandwidth", "profile_patterns",
    "profile_backward", "profile_sparse_grad", "profile_allreduce", "train_corpus", "train_tied",
]

# Limits of the sealed worker that re-checks every test cell (defaults shown; raise them for a
# notebook whose correct answers need more): address space of each of its processes in bytes, the
# processes its sandbox may hold at once, and the bytes one student result may take to cross back.
# c.SealedVerdict.memory_bytes = 4 * 1024**3
# c.SealedVerdict.nproc = 512
# c.SealedVerdict.max_result_bytes = 256 * 1024**2
# The same limits of the sandboxed kernel that runs the notebook (python3-sealed), per process:
# c.TolerantExecute.memory_bytes = 4 * 1024**3
# c.TolerantExecute.nproc = 512
# Seconds a cell that has ended may take to deliver the rest of its output (megabytes of prints on a
# busy machine) before its kernel is shut down; nbclient's iopub_timeout (4 s) stays the wait after
# the interrupt at a cell's time limit:
# c.TolerantExecute.output_timeout = 60
# A submission's processes together (kernel or sealed worker, children included): memory in bytes and
# processes plus threads (the kernel runs about ten threads, NumPy's BLAS one per core). 'auto' gives
# each process tree a cgroup with these limits where the machine lets the grader make one (cgroup v2
# delegated to the grader's own cgroup or to cgroup_parent, or writable v1 memory and pids
# hierarchies), else a watchdog sums the tree's resident memory ('watchdog' forces it, 'cgroup'
# refuses to grade without one; the process limit needs the cgroup). Past a bound the whole tree is
# ended; the grading output and batch.json name the mechanism in force. poll_seconds: how often the
# watchdog sums (or the cgroup's out-of-memory count is read).
# c.SubmissionLimits.memory_bytes = 6 * 1024**3
# c.SubmissionLimits.pids = 1024
# c.SubmissionLimits.mechanism = "auto"
# c.SubmissionLimits.cgroup_parent = ""   # empty: v2 the grader's own cgroup, v1 the hierarchy roots
# c.SubmissionLimits.poll_seconds = 0.05

# The hidden-test delimiters are nbgrader's own and used everywhere (release, feedback, the kernel's
# stripped test cells, the sealed re-check's redaction); to change them set only these:
# c.ClearHiddenTests.begin_test_delimeter = "BEGIN HIDDEN TESTS"
# c.ClearHiddenTests.end_test_delimeter = "END HIDDEN TESTS"

# Generating the assignment (nbgrader's list, with two additions): AUTOTEST snippets whose value is a
# student object, and test-cell idioms that the sealed re-check would grade differently from a
# kernel (item writes into student data, mocks of student functions), are refused with a message
# naming the cell (grading/CONTRACT.md). They read the full test cells and the reference solution,
# so they come before ClearSolutions and ClearHiddenTests.
c.GenerateAssignment.preprocessors = [
    "nbgrader.preprocessors.IncludeHeaderFooter",
    "grading.preprocessors.SealedInstantiateTests",
    "grading.preprocessors.CheckSealedTests",
    "nbgrader.preprocessors.LockCells",
    "nbgrader.preprocessors.ClearSolutions",
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.CheckCellMetadata",
    "nbgrader.preprocessors.ComputeChecksums",
    "nbgrader.preprocessors.SaveCells",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbgrader.preprocessors.ClearMarkScheme",
    "nbgrader.preprocessors.ComputeChecksums",
    "nbgrader.preprocessors.CheckCellMetadata",
]

# Test cells read any top-level name of the student's namespace, except builtins and the names the
# setup cells import (those are always the checker's own). Names listed here are read from the
# student's side even where they shadow a builtin (none of this course's do); grading/CONTRACT.md.
c.SealedVerdict.student_names = [
    "Embedding", "create_sinusoidal_embeddings", "PositionalEncoding", "EmbeddingLayer",
    "embedding_memory_bytes", "training_memory_bytes", "transformer_param_counts",
    "tied_output_logits", "factorized_embedding_params", "quantize_int8", "dequantize_int8",
    "lookup_bytes_moved", "make_access_pattern", "benchmark_lookup", "decode_step_costs",
    "sparse_embedding_grad", "shard_table", "sharded_lookup", "allreduce_bytes_per_device",
    "nearest_neighbors",
]

# Feedback never shows the code between BEGIN/END HIDDEN TESTS.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    "nbgrader.preprocessors.ClearHiddenTests",
]

# python -m grading.grade passes these itself; set them here only on a grading server
# where `nbgrader autograde` is run directly and the kernelspec is installed:
# c.Execute.kernel_name = "python3-sealed"

# JupyterHub deployment (shared exchange and a server database instead of the SQLite default):
# c.Exchange.root = "/srv/nbgrader/exchange"
# c.CourseDirectory.db_url = "postgresql://nbgrader@dbhost/ml_systems"

# Limits of `python -m grading.grade` (grading/batch.py, GradeBatch); the defaults are shown:
# c.GradeBatch.timeout = 1800.0                    # wall-clock seconds per submission (--timeout overrides)
# c.GradeBatch.max_submission_bytes = 200 * 1024**2  # a larger submission (or zip content) is not graded
# c.GradeBatch.max_submission_files = 2000
# c.GradeBatch.max_result_bytes = 200 * 1024**2    # autograded notebooks + feedback copied out per student
# c.GradeBatch.max_log_bytes = 20 * 1024**2        # each grading log copied out is cut after this
