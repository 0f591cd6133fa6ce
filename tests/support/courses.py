"""Small nbgrader courses for the grading tests, built in ``tmp_path`` with the real nbgrader.

Cell factories in the manner of nbgrader's own ``nbgrader/tests/__init__.py``; the dummy course
``a1`` (notebook ``dummy``: three 1-point tests, the first with hidden tests) and the class of
submissions graded by ``test_grading_infra`` and ``test_batch``; the one-test course of
``test_grade_cli`` and ``test_memory_bound``; and the grading command run on them.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterable
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from grading.grade import nbgrader_env
from support import PYTHON, REPO

# ----------------------------------------------------------------------------- cell factories


def nbgrader_meta(grade_id: str, *, grade: bool = False, solution: bool = False, locked: bool | None = None,
                  points: float = 1) -> dict:
    """The ``metadata`` of an nbgrader cell (schema 3); test cells (``grade``) are locked and get
    ``points`` unless told otherwise."""
    meta = {"grade": grade, "grade_id": grade_id, "locked": grade if locked is None else locked,
            "schema_version": 3, "solution": solution}
    if grade:
        meta["points"] = points
    return {"nbgrader": meta}


KIND_FLAGS = {  # cell kind -> nbgrader flags ("student": a cell the student added, no metadata)
    "test": {"grade": True},
    "answer": {"solution": True},
    "imports": {"locked": True},
    "readonly": {"locked": True},
}


def cell_meta(kind: str, grade_id: str) -> dict:
    """nbgrader metadata for a cell of the given kind (test, answer, imports, readonly, student)."""
    return {} if kind == "student" else nbgrader_meta(grade_id, **KIND_FLAGS[kind])


def notebook_of(*cells: tuple[str, str]) -> nbformat.NotebookNode:
    """Notebook from (kind, source) pairs; test cells get grade ids t1, t2, ..., answer cells a1,
    a2, ..., in order."""
    out, tests, answers = [], 0, 0
    for kind, source in cells:
        if kind == "test":
            tests += 1
            grade_id = f"t{tests}"
        elif kind == "answer":
            answers += 1
            grade_id = f"a{answers}"
        else:
            grade_id = "imports" if kind == "imports" else f"{kind}-{len(out)}"
        out.append(new_code_cell(source, metadata=cell_meta(kind, grade_id)))
    return new_notebook(cells=out)


#: The setup cell most small notebooks start with, as a (kind, source) pair for :func:`notebook_of`.
IMPORTS = ("imports", "import numpy as np")


def grade_id_of(cell: nbformat.NotebookNode) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


# ----------------------------------------------------------------------------- courses


def generate_assignment(root: Path, assignment: str = "a1") -> None:
    """``nbgrader generate_assignment`` of ``root``'s course, as an instructor runs it."""
    result = subprocess.run([PYTHON, "-m", "nbgrader", "generate_assignment", assignment, "--force"], cwd=root,
                            env=nbgrader_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def write_course(root: Path, nb: nbformat.NotebookNode, notebook: str, config: str,
                 data: dict[str, str] | None = None) -> Path:
    """Course ``root`` with the repository's configuration plus ``config`` and assignment ``a1``
    holding ``nb`` as ``notebook``.ipynb (and ``data`` files), released with the real nbgrader."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "nbgrader_config.py").write_text((REPO / "nbgrader_config.py").read_text() + config)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = root / "source" / "a1"
    source.mkdir(parents=True)
    nbformat.write(nb, source / f"{notebook}.ipynb")
    for name, text in (data or {}).items():
        (source / name).write_text(text)
    generate_assignment(root)
    return root


def small_course(root: Path) -> Path:
    """Assignment ``a1`` with notebook ``nb``: a setup cell, an answer cell and one 1-point test."""
    nb = new_notebook(cells=[
        new_code_cell("import numpy as np", metadata=nbgrader_meta("imports", locked=True)),
        new_code_cell("def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION",
                      metadata=nbgrader_meta("answer", solution=True)),
        new_code_cell("assert add(1, 2) == 3", metadata=nbgrader_meta("test_add", grade=True)),
    ])
    return write_course(root, nb, "nb", "\nc.SealedVerdict.student_names = ['add']\n")


DUMMY_NAMES = ["add", "crash", "shout"]


def dummy_source_notebook() -> nbformat.NotebookNode:
    """Setup cell, one answer cell and three 1-point test cells (the first with hidden tests)."""
    cells = [
        new_markdown_cell("# Dummy assignment"),
        new_code_cell("import numpy as np", metadata=nbgrader_meta("imports", locked=True)),
        new_code_cell(
            "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION\n\n"
            "def crash():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n\n"
            "def shout(s):\n    ### BEGIN SOLUTION\n    return s.upper()\n    ### END SOLUTION",
            metadata=nbgrader_meta("answer", solution=True),
        ),
        new_code_cell(
            "import numpy as np\nassert np.allclose(add(1, 2), 3)\nprint('visible test passed')\n"
            "### BEGIN HIDDEN TESTS\nassert add(20, 22) == 42, 'HIDDEN-CHECK-MARKER'\n### END HIDDEN TESTS",
            metadata=nbgrader_meta("test_add", grade=True),
        ),
        new_code_cell("assert crash() == 1", metadata=nbgrader_meta("test_crash", grade=True)),
        new_code_cell("assert shout('a') == 'A'", metadata=nbgrader_meta("test_shout", grade=True)),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def make_dummy_course(root: Path) -> Path:
    """A course with assignment ``a1`` (notebook ``dummy``), generated with the real nbgrader."""
    config = f"\nc.SealedVerdict.student_names = {DUMMY_NAMES!r}\nc.Execute.timeout = 20\n"
    return write_course(root, dummy_source_notebook(), "dummy", config, {"data.txt": "data\n"})


GOOD = "def add(a, b):\n    return a + b\n\ndef crash():\n    return 1\n\ndef shout(s):\n    return s.upper()"

DUMMY_ANSWERS = {  # student -> their answer cell
    "good": GOOD,
    # test 2 kills the kernel: test 1 keeps its point, tests 2 and 3 get 0
    "dies": GOOD.replace("def crash():\n    return 1", "def crash():\n    import os\n    os._exit(1)"),
    # prints 20 MB on one line, then answers correctly
    "chatty": GOOD + "\nprint('x' * 20_000_000)\nimport sys\nprint('a warning', file=sys.stderr)",
    # passes test_add in the kernel by patching numpy; the sealed re-check catches it
    "cheater": GOOD.replace("return a + b", "return 42 if (a, b) == (20, 22) else 0")
    + "\nimport numpy as np\nnp.allclose = lambda *a, **k: True",
    # looks around the file system from inside the kernel
    "snoop": GOOD + "\nimport os\nprint('LISTING', sorted(os.listdir('.')))\n"
    "for p in ['../../..', '../../../gradebook.db', '../../../source']:\n"
    "    try:\n        os.listdir(p) if os.path.isdir(p) else open(p).read()\n        print('VISIBLE', p)\n"
    "    except OSError:\n        print('HIDDEN', p)\n",
    # called in the last test cell: prints what the kernel's input history holds of the hidden test
    "peek": GOOD.replace("def shout(s):\n", "def shout(s):\n"
                         "    try:\n        history = get_ipython().user_ns.get('_ih', [])\n"
                         "    except NameError:  # the sealed worker has no IPython\n        history = []\n"
                         "    print('PEEKED', len(history), [line for cell in history for line in cell.splitlines()\n"
                         "                                   if 'add(20, ' + '22)' in line or 'HID' + 'DEN' in line])\n"),
}
# Students whose notebook is built from the good one by tampering with its cells (see write_dummy_class).
TAMPERED = ("pasted", "gutted")


def student_notebook(release: Path, answer: str) -> nbformat.NotebookNode:
    """The released notebook at ``release`` with its answer cell replaced by ``answer``."""
    nb = nbformat.read(release, as_version=4)
    for cell in nb.cells:
        if grade_id_of(cell) == "answer":
            cell.source = answer
    return nb


def tampered_notebook(release: Path, how: str) -> nbformat.NotebookNode:
    """The good answer, then ``pasted``: a copy-pasted test cell (it used to abort nbgrader's whole
    run), or ``gutted``: the answer cell and the test after it deleted (nbgrader's OverwriteCells
    raised KeyError)."""
    nb = student_notebook(release, GOOD)
    if how == "pasted":
        index = next(i for i, c in enumerate(nb.cells) if grade_id_of(c) == "test_add")
        pasted = copy.deepcopy(nb.cells[index])
        pasted.id = "pasted-copy"
        nb.cells.insert(index, pasted)
    elif how == "gutted":
        nb.cells = [c for c in nb.cells if grade_id_of(c) not in ("answer", "test_add")]
    else:
        raise ValueError(f"no tampering called {how!r}")
    return nb


def write_dummy_class(course: Path, dest: Path, students: Iterable[str]) -> Path:
    """Submissions of the dummy course under ``dest/<student>/a1/dummy.ipynb``: students named in
    :data:`DUMMY_ANSWERS` or :data:`TAMPERED`."""
    release = course / "release" / "a1" / "dummy.ipynb"
    for student in students:
        nb = tampered_notebook(release, student) if student in TAMPERED else \
            student_notebook(release, DUMMY_ANSWERS[student])
        folder = dest / student / "a1"
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / "dummy.ipynb")
    return dest


def run_grade(course: Path, subs: Path, out: Path, *extra: str, assignment: str = "a1",
              timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``python -m grading.grade`` of ``subs`` into ``out``, as the grader runs it (``extra``: more options)."""
    return subprocess.run([PYTHON, "-m", "grading.grade", "--course", str(course), "--assignment", assignment,
                           str(subs), "--out", str(out), *extra],
                          cwd=REPO, env=nbgrader_env(), capture_output=True, text=True, timeout=timeout)
