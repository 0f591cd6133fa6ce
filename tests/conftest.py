"""Shared pytest setup: make the helpers in tests/ importable as plain modules."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from submissions import reference_answers as _reference_answers  # noqa: E402


@pytest.fixture(scope="session")
def reference_answers() -> dict[str, str]:
    """grade_id -> the reference solution of every code answer cell of the source notebook."""
    return _reference_answers()
