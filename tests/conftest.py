"""Shared pytest setup: the ``needs_bwrap`` marker and session fixtures (helpers live in ``support``)."""

from pathlib import Path

import pytest

from support import bwrap_usable
from support.courses import make_dummy_course
from support.submissions import reference_answers as _reference_answers


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test marked ``needs_bwrap`` where bubblewrap cannot create the sandbox (before its
    fixtures are set up); ``test_the_sandbox_is_usable_here`` fails there, so nothing hides."""
    if item.get_closest_marker("needs_bwrap") and not bwrap_usable():
        pytest.skip("bubblewrap is not usable here")


@pytest.fixture(scope="session")
def reference_answers() -> dict[str, str]:
    """grade_id -> the reference solution of every code answer cell of the source notebook."""
    return _reference_answers()


@pytest.fixture(scope="session")
def dummy_course(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dummy course ``a1`` (``support.courses``), generated once for every module that grades it."""
    return make_dummy_course(tmp_path_factory.mktemp("dummy") / "course")
