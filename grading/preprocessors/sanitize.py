"""``SanitizeNbgraderMetadata``: unusable nbgrader metadata makes a plain cell, not an aborted grading."""

from __future__ import annotations

from typing import Any, Mapping

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor


class SanitizeNbgraderMetadata(NbGraderPreprocessor):
    """Turn cells with unusable nbgrader metadata into plain student cells.

    Two cases abort the grading of a whole submission (or, for the first,
    the whole ``nbgrader autograde`` run) in nbgrader 0.9.6:

    * ``DeduplicateIds`` empties the metadata of every extra copy of a cell
      whose ``grade_id`` repeats (a student copy-pasted a test cell) and the
      validator then rejects the empty dict as an old schema version;
    * ``OverwriteCells`` deletes a ``grade_id`` the gradebook does not know
      (a cell pasted from another notebook, a renamed id) and the validator
      then rejects the cell.

    Removing ``metadata.nbgrader`` from such cells keeps their code as
    ordinary student code.  Runs between ``DeduplicateIds`` and
    ``OverwriteCells`` in ``Autograde.sanitize_preprocessors``.
    """

    def preprocess(self, nb: NotebookNode, resources: Any) -> tuple[NotebookNode, Any]:
        self._known = known_grade_ids(resources)
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell: NotebookNode, resources: Any, index: int) -> tuple[NotebookNode, Any]:
        if "nbgrader" not in cell.metadata:
            return cell, resources
        meta = cell.metadata["nbgrader"]
        gid = meta.get("grade_id") if isinstance(meta, Mapping) else None
        if not meta or (gid is not None and self._known is not None and gid not in self._known):
            self.log.warning("Cell %d: nbgrader metadata %r removed (empty or unknown grade_id)", index, gid)
            del cell.metadata["nbgrader"]
        return cell, resources


def known_grade_ids(resources: Mapping[str, Any]) -> set[str] | None:
    """grade_ids of the notebook's source cells in the gradebook (``None`` if unavailable)."""
    from nbgrader.api import Gradebook, MissingEntry

    info = resources.get("nbgrader") or {}
    if not all(key in info for key in ("db_url", "notebook", "assignment")):
        return None
    with Gradebook(info["db_url"]) as gb:
        try:
            notebook = gb.find_notebook(info["notebook"], info["assignment"])
        except MissingEntry:
            return None
        return {cell.name for cell in notebook.source_cells}
