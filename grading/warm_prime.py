"""Imported last by the fork server (:data:`grading.warm.PRELOAD`): first-use work done once.

Every command forked from the fork server would otherwise pay, on its first gradebook query and
its first notebook read, for SQLAlchemy's configuration of nbgrader's mappers and for nbformat's
compilation of the notebook schema into a validator (together about 0.4 s on a quiet machine).
Both are deterministic, hold no data of any course or student, and are what the first use would
compute in the fork anyway; doing them here leaves every fork the finished result.

The fork server imports with the garbage collector off (:mod:`grading.warm`); this module turns it
back on after moving everything imported to the permanent generation (``gc.freeze``, the pattern
Python documents for pre-fork servers), so forks neither scan nor copy those objects.
"""

from __future__ import annotations

import contextlib
import gc


def prime() -> None:
    """Configure nbgrader's ORM mappers and compile nbformat's current validators (strict and relaxed)."""
    import nbformat
    import nbgrader.api  # noqa: F401 (its mappers are the ones configured)
    from nbformat.validator import get_validator
    from sqlalchemy.orm import configure_mappers

    configure_mappers()
    with contextlib.suppress(Exception):  # an unusable validator is the fork's problem, as without this
        for relax in (False, True):
            get_validator(nbformat.current_nbformat, nbformat.current_nbformat_minor, relax_add_props=relax)


try:
    prime()
finally:
    gc.freeze()
    gc.enable()
