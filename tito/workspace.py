"""The student's workspace: where working copies live and how a missing one is created."""

from __future__ import annotations

import shutil
from enum import Enum
from pathlib import Path

from tito import exchange as exch
from tito.errors import TitoError
from tito.modules import Course, Module


class Origin(str, Enum):
    """Where the working copy came from in this call."""

    EXISTING = "existing"  # it was there already and was left alone
    FETCHED = "fetched"    # nbgrader fetch_assignment from the exchange
    COPIED = "copied"      # copied from the course's release/


def workspace_dir(raw: str | Path | None) -> Path:
    """The workspace (``--workspace`` or the current directory), which must exist."""
    path = Path(raw or ".").expanduser().resolve()
    if not path.is_dir():
        raise TitoError(f"the workspace {path} is not a directory")
    return path


def working_copy_path(workspace: Path, module: Module) -> Path:
    """Where the module's working copy is (or will be)."""
    return workspace / module.working_copy


def ensure_working_copy(workspace: Path, course: Course, module: Module,
                        exchange: exch.ExchangeConfig | None) -> tuple[Path, Origin]:
    """Create the working copy if it is missing (never overwrite one); return its path and origin."""
    path = working_copy_path(workspace, module)
    if path.exists():
        return path, Origin.EXISTING
    if exchange is not None:
        exch.fetch_assignment(workspace, module, exchange)
        if not path.is_file():
            raise TitoError(f"nbgrader fetched {module.name} but there is no {module.working_copy} in it")
        return path, Origin.FETCHED
    released = course.release_dir / module.name
    if not course.release_notebook(module).is_file():
        raise TitoError(f"{module.name} is not released yet (no {course.release_notebook(module)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    for item in released.iterdir():  # the notebook and its data files; nothing that exists is replaced
        target = path.parent / item.name
        if target.exists() or item.name in {".ipynb_checkpoints", "__pycache__"}:
            continue
        if item.is_dir():
            shutil.copytree(item, target)
        else:
            shutil.copy2(item, target)
    return path, Origin.COPIED
