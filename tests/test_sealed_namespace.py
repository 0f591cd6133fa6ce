"""Test cells mean in the sealed checker what they mean in a kernel (grading.sealed.namespace), the
checker's own names stay its own, and the idioms it cannot support are refused when the assignment
is generated (grading.sealed.idioms, CheckSealedTests, SealedInstantiateTests)."""

from __future__ import annotations

import pytest

from grading.preprocessors import CheckSealedTests, SealedIdiomError
from grading.preprocessors.instantiate_tests import BY_VALUE_TYPES, _TYPES_PROBE
from grading.sealed import run_sealed
from grading.sealed.idioms import refusals

from support.courses import IMPORTS, notebook_of

SQUARES = (
    "def squares(n):\n    return [i * i for i in range(1, n + 1)]\n"
    "def sum_of_squares(n):\n    return sum(squares(n))\n"
)
# nbgrader's documentation course: does sum_of_squares call squares? (delete it, expect NameError)
CALLS_SQUARES = (
    "orig_squares = squares\n"
    "del squares\n"
    "try:\n    sum_of_squares(1)\n"
    "except NameError:\n    pass\n"
    "else:\n    raise AssertionError('sum_of_squares does not use squares')\n"
    "finally:\n    squares = orig_squares\n"
)


def sealed(*cells: tuple[str, str], names: tuple[str, ...] = ()) -> dict[str, tuple[bool, str]]:
    verdicts = run_sealed(notebook_of(*cells), student_names=list(names), cell_timeout=10.0, startup_timeout=20.0)
    return {gid: (v.passed, v.message) for gid, v in verdicts.items()}


def test_a_test_cell_deletes_and_restores_a_student_function():
    """nbgrader's docs idiom: a student whose sum_of_squares calls squares passes, one who copied
    the loop fails, and squares is back (for the student's code too) in the next test cell."""
    inlined = SQUARES.replace("return sum(squares(n))", "return sum(i * i for i in range(1, n + 1))")
    after = "assert sum_of_squares(3) == 14 and squares(2) == [1, 4]"
    good = sealed(("answer", SQUARES), ("test", CALLS_SQUARES), ("test", after))
    bad = sealed(("answer", inlined), ("test", CALLS_SQUARES), ("test", after))
    assert good == {"t1": (True, ""), "t2": (True, "")}
    assert bad["t1"] == (False, "AssertionError: sum_of_squares does not use squares")
    assert bad["t2"] == (True, "")


def test_a_deleted_name_stays_deleted_on_the_student_side_within_the_cell():
    """After ``del squares`` the student's own code no longer finds it, and reading it in the test
    raises NameError (a student who rebinds it inside sum_of_squares cannot dodge the deletion)."""
    sneaky = SQUARES.replace("return sum(squares(n))",
                             "global squares\n    squares = globals().get('squares') or (lambda n: [1])\n"
                             "    return sum(squares(n))")
    test = ("del squares\ntry:\n    squares\nexcept NameError:\n    pass\nelse:\n"
            "    raise AssertionError('still bound')\n")
    assert sealed(("answer", SQUARES), ("test", test)) == {"t1": (True, "")}
    # the student's function re-creates the name on its side: the test sees that, as a kernel would
    verdict = sealed(("answer", sneaky), ("test", "del squares\nsum_of_squares(2)\nassert squares(5) == [1]"))
    assert verdict == {"t1": (True, "")}


def test_names_outside_student_names_are_read_and_plain_values_keep_their_types():
    """Any top-level student name resolves (no allow-list needed); plain data arrives as itself,
    so ``a == 1`` and ``type(b) is str`` hold as in a kernel, and a missing name is a NameError."""
    student = "a = 1\nb = 'hi'\nc = [1, 2, 'x']\nd = {'k': (1.5, None)}\n"
    test = ("assert a == 1 and type(a) is int\nassert type(b) is str and b.upper() == 'HI'\n"
            "assert c == [1, 2, 'x'] and d == {'k': (1.5, None)}\n"
            "assert str(type(c)) == \"<class 'list'>\"\n")
    missing = "try:\n    not_defined_anywhere\nexcept NameError:\n    pass\nelse:\n    raise AssertionError"
    assert sealed(("answer", student), ("test", test), ("test", missing)) == {"t1": (True, ""), "t2": (True, "")}


def test_a_student_cannot_shadow_builtins_assertions_or_setup_imports():
    """A student who rebinds AssertionError, len, isinstance or np (the setup cell's import) does
    not change what the test cell's assertions mean: the wrong answer still fails."""
    student = (
        "class AssertionError(Exception):\n    pass\n"
        "len = lambda x: 3\nisinstance = lambda *a: True\nabs = lambda x: 0\n"
        "class _FakeNp:\n    def allclose(self, *a, **k):\n        return True\n"
        "np = _FakeNp()\n"
        "def f(x):\n    return [0]\n"
    )
    tests = [
        "assert len(f(1)) == 3",
        "assert isinstance(f(1), dict)",
        "assert np.allclose(f(1), [5.0])",
        "try:\n    assert f(1) == [5]\nexcept AssertionError:\n    raise\n",
        "assert abs(-2) == 0",
    ]
    verdicts = sealed(IMPORTS, ("answer", student), *(("test", t) for t in tests))
    assert [passed for passed, _ in verdicts.values()] == [False] * len(tests), verdicts
    assert verdicts["t4"][1].startswith("AssertionError")


def test_student_names_may_shadow_a_builtin_when_the_instructor_lists_them():
    """A name in SealedVerdict.student_names is read from the student's side even if a builtin has
    that name (an exercise asking for ``max``); unlisted, the builtin wins."""
    student = "def max(xs):\n    return 42\n"
    test = "assert max([1, 2]) == 42"
    assert sealed(("answer", student), ("test", test), names=("max",)) == {"t1": (True, "")}
    assert sealed(("answer", student), ("test", test))["t1"][0] is False


def test_visible_rebinding_reaches_the_student_and_hidden_data_never_does():
    """A visible line that rebinds a student name changes it for student code (as in a kernel);
    a hidden-test line's data stays in the checker, so a student function reading the name of the
    test's expected value cannot return it."""
    student = "scale = 1\nexpected = None\ndef f(x):\n    return x * scale\ndef cheat(x):\n    return expected\n"
    visible = "scale = 3\nassert f(2) == 6\n"
    hidden = ("### BEGIN HIDDEN TESTS\nexpected = 123456\nassert cheat(1) == expected, 'leaked'\n"
              "### END HIDDEN TESTS\n")
    verdicts = sealed(("answer", student), ("test", visible), ("test", hidden))
    assert verdicts["t1"] == (True, "")
    assert verdicts["t2"] == (False, "AssertionError: leaked")


def test_a_cell_reads_back_its_own_objects_under_a_students_name():
    """A test cell binding a name the student also uses (``shards``) gets its own, writable object
    back (as in a kernel), while the student's side sees the new value too."""
    student = ("import numpy as np\nshards = None\n"
               "def split(t):\n    return [t[:2].copy(), t[2:].copy()]\ndef seen():\n    return shards\n")
    test = ("import numpy as np\nshards = split(np.arange(4.0))\nfor s in shards:\n    s[...] = -1.0\n"
            "assert all((s == -1).all() for s in shards)\nassert [len(s) for s in seen()] == [2, 2]\n")
    assert sealed(("answer", student), ("test", test)) == {"t1": (True, "")}


def test_functions_of_a_test_cell_see_student_names_and_cell_names():
    """A helper defined in the test cell reads student names (global look-ups) and the cell's own."""
    test = ("K = 2\ndef check(n):\n    return sum_of_squares(n) * K\n"
            "assert check(2) == 10\nassert [squares(i)[-1] for i in range(1, 4)] == [1, 4, 9]\n")
    assert sealed(("answer", SQUARES), ("test", test)) == {"t1": (True, "")}


def test_in_place_writes_on_student_arrays_fail_loudly():
    """An array read from a student object is a read-only copy: an in-place write raises instead of
    leaving the student's array silently unchanged; a whole-attribute write goes through."""
    student = "import numpy as np\nclass E:\n    def __init__(self):\n        self.weight = np.zeros(3)\ne = E()\n"
    writes = ["e.weight[0] = 1", "w = e.weight\nw += 1", "import numpy as np\nnp.add(e.weight, 1, out=e.weight)"]
    whole = "import numpy as np\ne.weight = np.ones(3)\nassert e.weight.tolist() == [1.0, 1.0, 1.0]"
    verdicts = sealed(("answer", student), *(("test", w) for w in writes), ("test", whole))
    assert all(not verdicts[f"t{i + 1}"][0] and "read-only" in verdicts[f"t{i + 1}"][1]
               for i in range(len(writes))), verdicts
    assert verdicts[f"t{len(writes) + 1}"] == (True, "")


def test_a_student_module_is_the_checkers_own():
    """A student name bound to a module (``import numpy as np`` in an answer cell, then patched)
    resolves to the checker's own module, and a module the checker never imported is a NameError."""
    student = "import numpy as np\nnp.allclose = lambda *a, **k: True\nimport tabnanny as tn\n"
    verdicts = sealed(("answer", student), ("test", "assert not np.allclose([1.0], [2.0])"),
                      ("test", "import sys\nassert 'tabnanny' not in sys.modules\ntn.check"))
    assert verdicts["t1"] == (True, "")
    assert verdicts["t2"][0] is False and "has not imported" in verdicts["t2"][1], verdicts


# ------------------------------------------------------------------------- generate-time refusal
@pytest.mark.parametrize("source, idiom", [
    ("emb.weight[0] = 1", "an item write into a value read from the student's side"),
    ("w = emb.weight\nw[0] += 1", "an item write into a value read from the student's side"),
    ("emb.weight -= 1", "an augmented assignment of a student object's attribute"),
    ("emb.weight.fill(0)", "an in-place `.fill()`"),
    ("history.append(3)", "an in-place `.append()`"),
    ("del results[0]", "deleting an item of a value read from the student's side"),
    ("squares = lambda n: []", "binding the student's name 'squares' to code of the test cell"),
    ("def squares(n):\n    return []", "a test-cell definition of the student's name 'squares'"),
])
def test_unsupported_idioms_are_named(source, idiom):
    """Each idiom the sealed checker cannot give a kernel's meaning is found, with cell and line."""
    found = refusals("test_x", source, {"squares", "history", "results", "emb"})
    assert len(found) == 1 and idiom in found[0].message(), [r.message() for r in found]
    assert found[0].message().startswith("test cell 'test_x', line ")


def test_supported_idioms_are_not_refused():
    """The test's own data, call results, whole-attribute writes and the delete/restore idiom pass."""
    source = ("import numpy as np\nx = np.zeros(3)\nx[0] = 1\nout = emb.forward([0])\nout[0] = 1\n"
              "emb.weight = np.ones((2, 2))\nr = []\nr.append(1)\nd = {}\nd['k'] = 1\n" + CALLS_SQUARES)
    assert refusals("t", source, {"squares", "sum_of_squares", "emb"}) == []


def test_generate_time_check_names_the_cell_and_passes_the_course():
    """CheckSealedTests raises for a notebook with an item write into student data (naming the
    cell) and accepts the course's own source notebook."""
    import nbformat

    from support.submissions import SOURCE_NB

    bad = notebook_of(("answer", "class E:\n    pass\nemb = E()\n"), ("test", "x = 1\nemb.weight[0] = 1"))
    with pytest.raises(SealedIdiomError, match=r"test cell 't1', line 2: an item write"):
        CheckSealedTests().preprocess(bad, {})
    CheckSealedTests().preprocess(nbformat.read(SOURCE_NB, as_version=4), {})
    allowed = CheckSealedTests(allow_cells=["t1"])
    allowed.preprocess(bad, {})


def test_autotest_probe_tells_plain_values_from_student_objects():
    """The probe SealedInstantiateTests runs in the kernel lists the types of a value and of its
    items; plain data and plain types (``type(a)``) are by value, a function, an object inside a
    list or a student class are not."""
    class Student:
        pass

    ns: dict = {"a": 5, "c": [1, "x", {"k": (1.5, None)}], "t": int, "fun": lambda x: x,
                "objs": [object()], "cls": Student}
    kinds = {name: set(eval(_TYPES_PROBE.format(snippet=name), dict(ns)).split()) for name in list(ns)}  # noqa: S307
    assert kinds["a"] <= BY_VALUE_TYPES and kinds["c"] <= BY_VALUE_TYPES and kinds["t"] <= BY_VALUE_TYPES
    assert not any(kinds[name] <= BY_VALUE_TYPES for name in ("fun", "objs", "cls")), kinds



@pytest.mark.slow
def test_generate_assignment_refuses_with_the_course_configuration(tmp_path):
    """``nbgrader generate_assignment`` with the course's configuration refuses an AUTOTEST of a
    student function and an item write into student data, naming the cell, and generates the same
    notebook's plain autotests."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import nbformat
    import nbgrader

    from support import REPO

    (tmp_path / "nbgrader_config.py").write_text(
        "from traitlets.config.loader import PyFileConfigLoader\nc = get_config()\n"
        f"course = PyFileConfigLoader('nbgrader_config.py', path={str(REPO)!r}).load_config()\n"
        "course.pop('CourseDirectory', None)\nc.merge(course)\n"
        f"c.CourseDirectory.root = {str(tmp_path)!r}\n")
    shutil.copy(Path(nbgrader.__file__).parent / "tests" / "apps" / "files" / "autotests.yml", tmp_path)
    answer = "def fun(x):\n    return x + 1\nclass E:\n    pass\nemb = E()\n"
    tests = {"plain": "### AUTOTEST fun(3)", "function": "### AUTOTEST fun", "write": "emb.weight[0] = 1"}
    for name, test in tests.items():
        nb = notebook_of(("answer", "### BEGIN SOLUTION\n" + answer + "### END SOLUTION"), ("test", test))
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        (tmp_path / "source" / name).mkdir(parents=True)
        nbformat.write(nb, tmp_path / "source" / name / "p1.ipynb")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "no-config")}
    results = {name: subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", name],
                                    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
               for name in tests}
    assert results["plain"].returncode == 0, results["plain"].stderr[-3000:]
    released = json.loads((tmp_path / "release" / "plain" / "p1.ipynb").read_text())
    assert "assert" in "".join(released["cells"][1]["source"])
    assert results["function"].returncode != 0
    assert "test cell 't1': `AUTOTEST fun` evaluates to a value of type builtins.function" in \
        results["function"].stderr
    assert results["write"].returncode != 0
    assert "test cell 't1', line 1: an item write into a value read from the student's side" in \
        results["write"].stderr


def test_no_execute_grades_the_saved_outputs():
    """``nbgrader autograde --no-execute`` (``Execute.enabled = False``): SealedVerdict puts the
    hidden tests back but runs no sealed re-check, so the saved outputs are graded, as in nbgrader;
    with execution on, the same cell fails sealed."""
    import copy

    import nbformat.v4 as v4
    from traitlets.config import Config

    from grading.preprocessors import SealedVerdict

    nb = notebook_of(("answer", "def f():\n    return 1\n"), ("test", "assert f() == 2"))
    saved = [v4.new_output("stream", name="stdout", text="ok\n")]
    nb.cells[1].outputs = copy.deepcopy(saved)
    config = Config({"SealedVerdict": {"sandbox": False}})
    off = Config({**config, "Execute": {"enabled": False}})
    skipped, _ = SealedVerdict(config=off).preprocess(copy.deepcopy(nb), {})
    checked, _ = SealedVerdict(config=config).preprocess(copy.deepcopy(nb), {})
    assert skipped.cells[1].outputs == saved
    assert checked.cells[1].outputs[0]["output_type"] == "error"
