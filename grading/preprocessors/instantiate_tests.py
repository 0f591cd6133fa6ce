"""``SealedInstantiateTests``: nbgrader's ``InstantiateTests`` (``### AUTOTEST`` cells) that refuses
a snippet whose value the sealed checker would see differently from a kernel."""

from __future__ import annotations

from typing import Any

from nbgrader.preprocessors import InstantiateTests

from grading.notebook import grade_id
from grading.sealed.protocol import NUMPY_SCALAR_TYPES, PYTHON_TYPES

#: ``module:qualname`` of the types whose values reach a sealed test cell as themselves (by value).
BY_VALUE_TYPES = frozenset(
    {f"builtins:{name}" for name in (*PYTHON_TYPES, "NoneType", "list", "tuple", "set", "frozenset", "dict")}
    | {"numpy:ndarray"} | {f"numpy:{name}" for name in NUMPY_SCALAR_TYPES})

#: Kernel expression: space-separated ``module:qualname`` of a value's type (of the class itself
#: when the value is a class, as ``type(a)``) and, in containers, of every item.
_TYPES_PROBE = (
    "(lambda v, f: f(f, v))(({snippet}), lambda f, v: ' '.join("
    "[(v if isinstance(v, type) else type(v)).__module__ + ':' + (v if isinstance(v, type) else type(v)).__qualname__]"
    " + ([f(f, x) for x in (list(v.keys()) + list(v.values()) if type(v) is dict else v)]"
    " if type(v) in (list, tuple, set, frozenset, dict) else [])))"
)


class SealedAutotestError(ValueError):
    """An ``AUTOTEST`` snippet evaluates to a value the sealed checker only sees through a proxy."""


class SealedInstantiateTests(InstantiateTests):
    """Instantiate ``AUTOTEST`` lines as nbgrader does, refusing snippets whose value is (or holds)
    a student object: the sealed checker sees those through proxies, so the type and ``str``
    checks nbgrader generates for them would fail for a correct student. Autotest plain values
    computed from the object instead (``fun(3)``, not ``fun``)."""

    _cell_id = ""
    _python = False

    def preprocess_cell(self, cell: Any, resources: Any, index: int) -> Any:
        self._cell_id = grade_id(cell) or f"cell-{index}"
        self._python = str(resources.get("kernel_name", "")).startswith("python")
        return super().preprocess_cell(cell, resources, index)

    def _instantiate_tests(self, snippet: str, salt: Any = None) -> Any:
        if self._python:  # the sealed checker grades Python notebooks only
            kinds = str(self._execute_code_snippet(_TYPES_PROBE.format(snippet=snippet)) or "").split()
            foreign = sorted(set(kinds) - BY_VALUE_TYPES)
            if foreign:
                raise SealedAutotestError(
                    f"test cell {self._cell_id!r}: `AUTOTEST {snippet}` evaluates to a value of type "
                    f"{foreign[0].replace(':', '.')}, which the sealed checker sees only through a proxy, so "
                    "nbgrader's type and value checks of it would fail for a correct student; autotest plain "
                    "data computed from it instead (e.g. the result of a call)")
        return super()._instantiate_tests(snippet, salt)

