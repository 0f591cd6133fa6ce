"""nbgrader preprocessors used by ``nbgrader autograde`` in this course, one per module.

``SanitizeNbgraderMetadata`` (:mod:`.sanitize`)
    keeps a copy-pasted or foreign nbgrader cell from aborting the grading.
``OverwriteCellsAnywhere`` (:mod:`.overwrite_cells`)
    nbgrader's ``OverwriteCells`` that can put back a deleted test cell even
    when the cell before it is missing too (an empty notebook, say).
``StripHiddenTests`` (:mod:`.hidden_tests`)
    records every test cell's full source and removes its hidden tests, so the
    student's kernel only ever runs (and sees) the visible checks.
``TolerantExecute`` (:mod:`.execute`)
    nbgrader's ``Execute`` that survives a dying or unresponsive kernel (the
    rest of the notebook is marked "not run" instead of the whole submission
    failing) and caps outputs while they stream in.
``SealedVerdict`` (:mod:`.sealed_verdict`)
    re-checks every test cell, hidden tests included, out of process with
    :func:`grading.sealed.run_sealed`, keeps a test cell's points only if it
    passed in the kernel *and* sealed, and puts the full test sources back.
``LimitOutputChars`` (:mod:`.limit_output`)
    caps the characters of every cell's outputs after execution (nbgrader's
    ``LimitOutput`` only counts lines), per cell and for the whole notebook.

``CheckSealedTests`` (:mod:`.check_sealed_tests`) and ``SealedInstantiateTests`` (:mod:`.instantiate_tests`)
    run when the assignment is generated: they refuse test-cell idioms and ``AUTOTEST``
    snippets that the sealed re-check would grade differently from a kernel.

``SafeExecute`` and ``LimitOutputSize`` are the former names of
``TolerantExecute`` and ``LimitOutputChars`` (subclasses, so their old
configuration sections still apply). See ``nbgrader_config.py`` for where the
preprocessors sit in the preprocessor lists.
"""

from grading.hidden_region import FULL_TEST_SOURCES, hidden_line_numbers
from grading.preprocessors.check_sealed_tests import CheckSealedTests, SealedIdiomError
from grading.preprocessors.execute import (
    KERNEL_DIED,
    KERNEL_STOPPED,
    LOST_OUTPUT,
    NOT_RUN,
    NOT_RUN_STOPPED,
    SafeExecute,
    TolerantExecute,
)
from grading.preprocessors.files import copy_data_files, notebook_dir, notebooks_hidden, remove_special_files
from grading.preprocessors.hidden_tests import StripHiddenTests
from grading.preprocessors.instantiate_tests import SealedAutotestError, SealedInstantiateTests
from grading.preprocessors.limit_output import LimitOutputChars, LimitOutputSize
from grading.preprocessors.outputs import cap_outputs, cap_traceback, error_output, output_sizes
from grading.preprocessors.overwrite_cells import OverwriteCellsAnywhere
from grading.preprocessors.sanitize import SanitizeNbgraderMetadata, known_grade_ids
from grading.preprocessors.sealed_verdict import SealedVerdict, kernel_failure, merged_test_outputs

__all__ = [
    "CheckSealedTests",
    "FULL_TEST_SOURCES",
    "KERNEL_DIED",
    "KERNEL_STOPPED",
    "LOST_OUTPUT",
    "NOT_RUN",
    "NOT_RUN_STOPPED",
    "LimitOutputChars",
    "LimitOutputSize",
    "OverwriteCellsAnywhere",
    "SafeExecute",
    "SanitizeNbgraderMetadata",
    "SealedAutotestError",
    "SealedIdiomError",
    "SealedInstantiateTests",
    "SealedVerdict",
    "StripHiddenTests",
    "TolerantExecute",
    "cap_outputs",
    "cap_traceback",
    "copy_data_files",
    "error_output",
    "hidden_line_numbers",
    "kernel_failure",
    "known_grade_ids",
    "merged_test_outputs",
    "notebook_dir",
    "notebooks_hidden",
    "output_sizes",
    "remove_special_files",
]
