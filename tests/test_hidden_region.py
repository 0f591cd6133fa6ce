"""The hidden-test region: one set of delimiters, nbgrader's own, for stripping, restoring, line
numbers and redaction.

An instructor who sets ``ClearHiddenTests.begin_test_delimeter``/``end_test_delimeter`` in
``nbgrader_config.py`` changes what nbgrader removes from the release and the feedback; the
grader must then strip, restore and redact exactly that region too.
"""

from __future__ import annotations

import copy

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output
from traitlets.config import Config

from grading.hidden_region import DEFAULT_REGION, HiddenRegion, restore_test_cells
from grading.preprocessors import FULL_TEST_SOURCES, SealedVerdict, StripHiddenTests
from support.courses import nbgrader_meta

BEGIN, END = "BEGIN SECRET CHECKS", "END SECRET CHECKS"
SECRET_SOURCE = (
    "assert add(1, 2) == 3\n"
    f"# {BEGIN}\n"
    "assert add(20, 22) == 41  # SECRET-ANSWER-MARKER\n"
    f"# {END}\n"
)


def own_delimiters() -> Config:
    config = Config()
    config.ClearHiddenTests.begin_test_delimeter = BEGIN
    config.ClearHiddenTests.end_test_delimeter = END
    return config


def secret_notebook() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_code_cell("def add(a, b):\n    return a + b", metadata=nbgrader_meta("answer", solution=True)),
        new_code_cell(SECRET_SOURCE, metadata=nbgrader_meta("test_add", grade=True)),
    ])


def test_stripping_follows_nbgraders_delimiter_settings():
    """With the instructor's own delimiters in ClearHiddenTests, does the kernel get the visible
    line only, and is the whole cell back for the sealed re-check?"""
    nb, resources = StripHiddenTests(config=own_delimiters()).preprocess(secret_notebook(), {})
    assert nb.cells[1].source == "assert add(1, 2) == 3\n", nb.cells[1].source


def test_redaction_follows_nbgraders_delimiter_settings():
    """Does a failing hidden check under the instructor's own delimiters get redacted in the
    graded output (its line is never quoted), while the cell still fails?"""
    config = own_delimiters()
    nb, resources = StripHiddenTests(config=config).preprocess(secret_notebook(), {})
    nb, resources = SealedVerdict(config=config, sandbox=False, student_names=["add"]).preprocess(nb, resources)
    cell = nb.cells[1]
    assert cell.source == SECRET_SOURCE
    assert [o.output_type for o in cell.outputs] == ["error"], cell.outputs
    text = repr(cell.outputs)
    assert "SECRET-ANSWER-MARKER" not in text and "41" not in text, text
    assert "hidden test failed" in text, text


def test_default_region_is_nbgraders_default():
    """Are the grader's default delimiters exactly nbgrader's ClearHiddenTests defaults?"""
    assert HiddenRegion.from_config(Config()) == DEFAULT_REGION


def test_one_region_gives_strip_line_numbers_and_quotes():
    """Do stripping, line numbers and quoting agree on the configured region (delimiter lines
    included, unterminated regions running to the end)?"""
    region = HiddenRegion.from_config(own_delimiters())
    assert region == HiddenRegion(BEGIN, END)
    assert region.line_numbers(SECRET_SOURCE) == {2, 3, 4}
    assert region.strip(SECRET_SOURCE) == "assert add(1, 2) == 3\n"
    assert region.quote_line(SECRET_SOURCE, 1) == "line 1: assert add(1, 2) == 3"
    assert region.quote_line(SECRET_SOURCE, 3) == "a hidden test failed"
    assert region.line_numbers(f"a\n# {BEGIN}\nb\nc") == {2, 3, 4}
    assert DEFAULT_REGION.line_numbers(SECRET_SOURCE) == frozenset()  # other delimiters: nothing hidden


# --------------------------------------------------------------------------- hidden tests stay out of the kernel

HIDDEN_TEST = (
    "import numpy as np\nassert add(1, 2) == 3\nprint('visible test passed')\n"
    "### BEGIN HIDDEN TESTS\nassert add(20, 22) == 42, 'HIDDEN-CHECK-MARKER'\n### END HIDDEN TESTS"
)
HIDDEN_ONLY_TEST = "### BEGIN HIDDEN TESTS\nassert add(2, 2) == 4  # HIDDEN-ONLY-MARKER\n### END HIDDEN TESTS\n"


def hidden_tests_notebook() -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_code_cell("def add(a, b):\n    return a + b", metadata=nbgrader_meta("answer", solution=True)),
        new_code_cell(HIDDEN_TEST, metadata=nbgrader_meta("test_add", grade=True, locked=True, points=1)),
        new_code_cell(HIDDEN_ONLY_TEST, metadata=nbgrader_meta("test_hidden", grade=True, locked=True, points=1)),
        new_code_cell("print('### BEGIN HIDDEN TESTS')"),  # student code is never edited
    ])


def test_strip_hidden_tests_keeps_the_visible_lines() -> None:
    assert DEFAULT_REGION.strip(HIDDEN_TEST) == (
        "import numpy as np\nassert add(1, 2) == 3\nprint('visible test passed')")
    assert DEFAULT_REGION.strip(HIDDEN_ONLY_TEST).strip() == ""
    assert DEFAULT_REGION.strip("a = 1\n### BEGIN HIDDEN TESTS\nsecret()") == "a = 1"  # unterminated


def test_hidden_tests_are_recorded_stripped_and_put_back() -> None:
    nb = hidden_tests_notebook()
    original = copy.deepcopy(nb)
    nb, resources = StripHiddenTests().preprocess(nb, {})
    assert "HIDDEN" not in nb.cells[1].source and "visible test passed" in nb.cells[1].source
    assert nb.cells[2].source.strip() == ""
    assert nb.cells[3].source == original.cells[3].source
    assert resources[FULL_TEST_SOURCES]["test_add"]["full"] == HIDDEN_TEST
    assert restore_test_cells(nb, resources[FULL_TEST_SOURCES]) == 2
    assert [c.source for c in nb.cells] == [c.source for c in original.cells]
    assert restore_test_cells(nb, resources[FULL_TEST_SOURCES]) == 0  # already whole
    nb.cells[1].source = "pass"
    with pytest.raises(RuntimeError, match="test_add"):
        restore_test_cells(nb, resources[FULL_TEST_SOURCES])


def test_sealed_verdict_checks_and_saves_the_full_test_cells() -> None:
    """The kernel got the visible part only; the real sealed run gets the full cells (a wrong
    answer that only the hidden check catches fails), and the cells end up whole again."""
    nb = hidden_tests_notebook()
    nb.cells[0].source = "def add(a, b):\n    return 0 if (a, b) == (20, 22) else a + b"
    nb, resources = StripHiddenTests().preprocess(nb, {})
    nb.cells[1].outputs = [new_output("stream", name="stdout", text="visible test passed\n")]  # what the kernel printed
    nb, resources = SealedVerdict(sandbox=False, student_names=["add"]).preprocess(nb, resources)
    assert nb.cells[1].source == HIDDEN_TEST and nb.cells[2].source == HIDDEN_ONLY_TEST
    assert nb.cells[1].outputs[0].traceback == ["AssertionError: HIDDEN-CHECK-MARKER"], nb.cells[1].outputs
    assert [o.output_type for o in nb.cells[1].outputs] == ["error", "stream"]
    assert nb.cells[2].outputs == []  # the hidden-only cell passed (2 + 2 is right)
