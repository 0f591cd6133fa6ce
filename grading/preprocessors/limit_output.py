"""``LimitOutputChars``: output characters kept per cell and per notebook (nbgrader's ``LimitOutput`` counts lines)."""

from __future__ import annotations

from typing import Any

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

from grading.notebook import cell_role
from grading.preprocessors.outputs import (
    DEFAULT_MAX_IMAGE_CHARS,
    DEFAULT_MAX_OUTPUT_CHARS,
    DEFAULT_MAX_TOTAL_CHARS,
    DEFAULT_MAX_TOTAL_IMAGE_CHARS,
    MIN_ERROR_CHARS,
    TOTAL_TRUNCATED_NOTE,
    cap_outputs,
    char_limit,
    output_sizes,
)


class LimitOutputChars(NbGraderPreprocessor):
    """Cap the characters of the outputs (text and images), per cell and for the whole notebook.

    Every code cell keeps at most ``max_chars`` characters of text and
    ``max_image_chars`` of images (see :func:`cap_outputs`), and all cells
    together at most ``max_total_chars`` and ``max_total_image_chars``: many
    cells that each stay under the per-cell cap cannot add up to a huge
    graded notebook and feedback page.  The notebook budget is spent on test
    cells first (their outputs are the feedback that matters), then on the
    other cells in notebook order; a cell cut because the budget ran out gets
    a note saying so.  Error outputs are always kept (their message and
    traceback shortened to ``max_chars`` each, or to 2,000 characters once the
    budget is spent) and count against the budget.  Sits after
    ``SealedVerdict``, so it measures the outputs that are saved.
    """

    max_chars = char_limit(DEFAULT_MAX_OUTPUT_CHARS, "Text characters of output kept per cell.")
    max_image_chars = char_limit(DEFAULT_MAX_IMAGE_CHARS, "Characters of image data kept per cell.")
    max_total_chars = char_limit(DEFAULT_MAX_TOTAL_CHARS, "Text characters of output kept in the whole notebook.")
    max_total_image_chars = char_limit(
        DEFAULT_MAX_TOTAL_IMAGE_CHARS, "Characters of image data kept in the whole notebook."
    )

    def preprocess(self, nb: NotebookNode, resources: Any) -> tuple[NotebookNode, Any]:
        text_left, image_left = self.max_total_chars, self.max_total_image_chars
        code = [(index, cell) for index, cell in enumerate(nb.cells) if cell.cell_type == "code"]
        code.sort(key=lambda item: (cell_role(item[1]) != "test", item[0]))
        budget_note = TOTAL_TRUNCATED_NOTE.format(chars=self.max_total_chars, images=self.max_total_image_chars)
        for _, cell in code:
            text_limit = min(self.max_chars, text_left)
            image_limit = min(self.max_image_chars, image_left)
            by_budget = text_limit < self.max_chars or image_limit < self.max_image_chars
            cell.outputs = cap_outputs(
                cell.outputs,
                text_limit,
                image_limit,
                note_text=budget_note if by_budget else None,
                error_chars=max(text_limit, min(self.max_chars, MIN_ERROR_CHARS)),
            )
            for output in cell.outputs:
                text, image = output_sizes(output)
                text_left = max(text_left - text - len(str(output.get("evalue", ""))), 0)
                image_left = max(image_left - image, 0)
        return nb, resources


class LimitOutputSize(LimitOutputChars):
    """Former name of :class:`LimitOutputChars`, kept for configurations that still use it."""
