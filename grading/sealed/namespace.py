"""The namespace one test cell runs in, in the sealed checker: a kernel's meaning, the checker's trust.

A test cell is ``exec``'d with a :class:`TestNamespace` as its globals and locals, so CPython's
module-level name operations (and, for functions the cell defines, their global look-ups) go
through it:

* reading a name the cell did not bind (``__missing__``) takes it from the student's namespace in
  the worker, as a kernel would: plain data by value (arrays read-only, so an in-place write on a
  copy fails loudly instead of silently changing nothing), any other object as a proxy, and a
  module as the checker's own copy of that module. Builtin names (``len``, ``AssertionError``, ...)
  and the names the setup cells import are never taken from the student's side, whatever the
  student binds to them, unless the instructor lists the name in ``preferred``
  (``SealedVerdict.student_names``);
* binding a name binds it in the cell (which reads back its own object), and a name the student's
  namespace held when the cell started (or that the cell deleted from it) on the student's side
  too: to a student object (``squares = orig``, restoring a deleted function) or to plain data bound
  by a line of the visible part of the cell. Data bound by a hidden-test line never crosses (it
  could carry the hidden tests' reference values to student code), nor do the cell's own
  functions, classes and modules;
* deleting a name (``del squares``) deletes the cell's binding and the student's.
"""

from __future__ import annotations

import builtins
import re
import sys
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from grading.sealed.proxy import RemoteObject, Session, read_only

#: Names every test cell takes from the checker's builtins, never from the student.
BUILTIN_NAMES = frozenset(dir(builtins))

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def checker_module(name: Any) -> Any:
    """The checker's own copy of the module a student name refers to (only modules the checker has
    already imported: a name from the worker never makes the checker import anything)."""
    if type(name) is not str or not _MODULE_NAME.match(name) or name not in sys.modules:
        raise NameError(f"a student name refers to module {str(name)[:100]!r}, which the sealed checker "
                        "has not imported: import it in the test cell")
    return sys.modules[name]


class TestNamespace(dict):
    """Globals and locals of one test cell (see the module docstring for the rules)."""

    __test__ = False  # not a pytest test class

    def __init__(self, session: Session, *, preferred: Collection[str] = (),
                 instructor: Mapping[str, Any] | None = None,
                 hidden_line: Callable[[], bool] = lambda: False):
        super().__init__({"__name__": "__main__", "__builtins__": builtins})
        dict.update(self, instructor or {})
        self._session = session
        self._preferred = frozenset(preferred)
        self._hidden_line = hidden_line
        names = session.request("globalnames")
        self._student = {n for n in names if type(n) is str} if type(names) is list else set()

    def __missing__(self, name: str) -> Any:
        if type(name) is not str or (name in BUILTIN_NAMES and name not in self._preferred):
            raise KeyError(name)
        try:
            reply = self._session.request("loadglobal", {"name": name})
        except NameError:
            raise KeyError(name) from None
        if type(reply) is not dict:
            raise RuntimeError(f"malformed student name {name!r} from the worker")
        if "module" in reply:
            return checker_module(reply["module"])
        return read_only(reply.get("value"))

    def __setitem__(self, name: str, value: Any) -> None:
        dict.__setitem__(self, name, value)  # the cell reads back its own object, as in a kernel
        if name in self._student and (
                isinstance(value, RemoteObject) or (_sendable(value) and not self._hidden_line())):
            self._session.request("setglobal", {"name": name}, {"value": value})

    def __delitem__(self, name: str) -> None:
        had_own = dict.pop(self, name, _MISSING) is not _MISSING
        if had_own and name not in self._student:
            return
        try:
            self._session.request("delglobal", {"name": name})
        except NameError:
            if not had_own:
                raise KeyError(name) from None
        self._student.add(name)


_MISSING = object()


def _sendable(value: Any) -> bool:
    """Plain data that crosses to the worker by value (no checker function, module or class)."""
    t = type(value)
    if value is None or t in (bool, int, float, complex, str, np.ndarray) or isinstance(value, np.generic):
        return True
    if t in (list, tuple, set, frozenset):
        return all(_sendable(item) for item in value)
    if t is dict:
        return all(_sendable(k) and _sendable(v) for k, v in value.items())
    return isinstance(value, RemoteObject)
