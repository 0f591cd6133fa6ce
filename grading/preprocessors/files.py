"""What the preprocessors do to the files around the notebook being graded."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

def notebook_dir(resources: Mapping[str, Any]) -> Path | None:
    """Directory of the notebook being converted (the kernel's working directory)."""
    path = (resources.get("metadata") or {}).get("path")
    return Path(path).resolve() if path else None


def remove_special_files(directory: Path) -> list[Path]:
    """Delete symlinks, FIFOs, sockets and devices below ``directory``; return them.

    Student code may create them in its working directory; nbgrader later
    copies that directory by following links (into ``feedback/``, for
    example), so a link to a course file would leak it.
    """
    removed: list[Path] = []
    for root, dirs, files in os.walk(directory):
        for name in [*dirs, *files]:
            path = Path(root) / name
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                path.unlink()
                removed.append(path)
        dirs[:] = [d for d in dirs if (Path(root) / d).is_dir() and not (Path(root) / d).is_symlink()]
    return removed


@contextlib.contextmanager
def notebooks_hidden(directory: Path | None) -> Iterator[None]:
    """Move the ``*.ipynb`` files of ``directory`` away while the block runs.

    During autograding the notebook being executed lies in the kernel's
    working directory with the hidden tests restored; student code must not
    be able to read them.
    """
    if directory is None or not directory.is_dir():
        yield
        return
    stash = Path(tempfile.mkdtemp(prefix="nbgrader-hidden-"))
    moved = []
    try:
        for path in directory.glob("*.ipynb"):
            if path.is_file() and not path.is_symlink():
                shutil.move(str(path), stash / path.name)
                moved.append(path)
        yield
    finally:
        for path in moved:
            if path.exists() or path.is_symlink():
                path.unlink()
            shutil.move(str(stash / path.name), path)
        shutil.rmtree(stash, ignore_errors=True)


def copy_data_files(src: Path, dest: Path) -> None:
    """Copy regular files (not notebooks, not links) from ``src`` into ``dest``."""
    for root, dirs, files in os.walk(src):
        root_path = Path(root)
        dirs[:] = [d for d in dirs if not (root_path / d).is_symlink() and d not in {".ipynb_checkpoints"}]
        target = dest / root_path.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            path = root_path / name
            if path.suffix != ".ipynb" and path.is_file() and not path.is_symlink():
                shutil.copy2(path, target / name)
