"""The hidden-test region: one set of delimiters, nbgrader's own, for stripping, restoring, line
numbers and redaction.

An instructor who sets ``ClearHiddenTests.begin_test_delimeter``/``end_test_delimeter`` in
``nbgrader_config.py`` changes what nbgrader removes from the release and the feedback; the
grader must then strip, restore and redact exactly that region too.
"""

from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_notebook
from traitlets.config import Config

from grading.hidden_region import DEFAULT_REGION, HiddenRegion
from grading.preprocessors import SealedVerdict, StripHiddenTests
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
