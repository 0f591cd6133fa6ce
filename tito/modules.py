"""The course and its modules: where the course is, which modules it has, and name resolution.

A module is a directory ``NN_name`` of the course's ``release/`` (what students receive) or
``source/`` (not yet released) holding one notebook.  ``12``, ``12_embeddings`` and ``embeddings``
all name module ``12_embeddings``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from tito.errors import TitoError

MODULE_DIR = re.compile(r"^(?P<number>\d+)_(?P<short>[A-Za-z][A-Za-z0-9_]*)$")
COURSE_ENV = "TITO_COURSE"


@dataclass(frozen=True)
class Module:
    """One module of the course."""

    number: int
    name: str      # the assignment id, e.g. "12_embeddings"
    short: str     # e.g. "embeddings"
    notebook: str  # the notebook's file name without ".ipynb", e.g. "embeddings"

    @property
    def working_copy(self) -> Path:
        """Where the working copy sits, relative to the workspace (where nbgrader fetches it)."""
        return Path(self.name) / f"{self.notebook}.ipynb"


@dataclass(frozen=True)
class Course:
    """A course checkout: ``source/``, ``release/`` and ``nbgrader_config.py``."""

    root: Path

    @property
    def release_dir(self) -> Path:
        return self.root / "release"

    @property
    def source_dir(self) -> Path:
        return self.root / "source"

    def release_notebook(self, module: Module) -> Path:
        """The released (student) notebook of ``module``."""
        return self.release_dir / module.name / f"{module.notebook}.ipynb"

    def source_notebook(self, module: Module) -> Path:
        """The instructor's notebook of ``module``."""
        return self.source_dir / module.name / f"{module.notebook}.ipynb"


def is_course(path: Path) -> bool:
    """Does ``path`` look like a course root (a ``release/`` or ``source/`` with modules in it)?"""
    return any(_module_dirs(path / sub) for sub in ("release", "source"))


def find_course(explicit: os.PathLike[str] | str | None = None) -> Course:
    """The course: ``explicit`` (``--course``), else ``$TITO_COURSE``, else the checkout tito is installed from."""
    for raw, origin in ((explicit, "--course"), (os.environ.get(COURSE_ENV), f"${COURSE_ENV}")):
        if raw:
            path = Path(raw).expanduser().resolve()
            if not is_course(path):
                raise TitoError(f"{origin} {path} is not a course (no modules in its release/ or source/)")
            return Course(path)
    installed = Path(__file__).resolve().parent.parent
    if is_course(installed):
        return Course(installed)
    raise TitoError(f"cannot find the course: pass --course DIR or set {COURSE_ENV} "
                    f"(tito is installed at {installed}, which is not a course checkout)")


def _module_dirs(folder: Path) -> list[Path]:
    """Module directories (``NN_name`` holding a notebook) directly inside ``folder``."""
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir()
            if p.is_dir() and MODULE_DIR.match(p.name) and any(p.glob("*.ipynb"))]


def _notebook_name(folder: Path, short: str) -> str:
    """The module's notebook: the only one in its folder, else the one named after the module."""
    notebooks = sorted(p.stem for p in folder.glob("*.ipynb"))
    if len(notebooks) == 1:
        return notebooks[0]
    if short in notebooks:
        return short
    raise TitoError(f"{folder} holds several notebooks ({', '.join(notebooks)}); tito expects one per module")


def discover_modules(course: Course) -> list[Module]:
    """Every module of the course (released or only in ``source/``), by number."""
    found: dict[str, Module] = {}
    for folder in (course.release_dir, course.source_dir):
        for path in _module_dirs(folder):
            if path.name in found:
                continue
            match = MODULE_DIR.match(path.name)
            assert match is not None
            short = match["short"]
            found[path.name] = Module(int(match["number"]), path.name, short, _notebook_name(path, short))
    return sorted(found.values(), key=lambda m: (m.number, m.name))


def resolve_module(name: str, modules: list[Module]) -> Module:
    """The module called ``name`` (``12``, ``12_embeddings`` or ``embeddings``); TitoError otherwise."""
    wanted = name.strip()
    matches = [m for m in modules if wanted == m.name or wanted == m.short
               or (wanted.isdigit() and int(wanted) == m.number)]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(m.name for m in modules) or "none"
    if not matches:
        raise TitoError(f"unknown module {name!r}; the course's modules are: {listing}")
    raise TitoError(f"{name!r} names several modules ({', '.join(m.name for m in matches)}); "
                    f"use the full name")
