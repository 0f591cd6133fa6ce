"""Test-cell idioms the sealed checker cannot give a kernel's meaning, found by reading the code.

The sealed checker (:mod:`grading.sealed.namespace`) receives student data as copies and student
objects as proxies. Most test-cell code means the same there as in a kernel; the idioms below would
not, so :class:`grading.preprocessors.CheckSealedTests` refuses them when the assignment is
generated, naming the cell and the line, instead of letting them grade differently:

* an item write into a value read from the student's side (``emb.weight[0] = 1``,
  ``w = emb.weight; w[0] += 1``, ``del results[0]``): the checker holds a copy; write the whole
  attribute instead (``emb.weight = new_table``);
* an augmented assignment of a student object's attribute (``emb.weight -= 1``): the array read is
  a read-only copy; write ``emb.weight = emb.weight - 1``;
* a call of a list, dict, set or array method that changes its receiver in place on a value read
  from the student's side (``emb.weight.fill(0)``, ``history.append(3)``);
* binding a name the student's cells define to a function, lambda or class of the test cell (a
  mock, ``squares = lambda n: ...``): code of the checker is never handed to student code.

"Read from the student's side" means: a name the test cell does not bind itself (nor a builtin),
an attribute or item of one, or a name the cell bound to such an expression (calls excepted: a
result is the test's own copy).
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

#: Methods of list, dict, set and ndarray that change their receiver in place.
MUTATING_METHODS = frozenset({
    "append", "extend", "insert", "remove", "pop", "clear", "sort", "reverse",   # list
    "update", "setdefault", "popitem",                                           # dict
    "add", "discard", "difference_update", "intersection_update", "symmetric_difference_update",
    "fill", "resize", "put", "itemset", "partition", "setflags",                 # ndarray
})
_BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class Refusal:
    """One idiom found in a test cell: where, what, and what to write instead."""

    grade_id: str
    line: int
    idiom: str
    code: str
    advice: str

    def message(self) -> str:
        return (f"test cell {self.grade_id!r}, line {self.line}: {self.idiom} (`{self.code}`) cannot mean "
                f"in the sealed checker what it means in a kernel; {self.advice}")


def top_level_names(sources: Iterable[str]) -> set[str]:
    """Names the given cells bind at top level (assignments, definitions, imports)."""
    names: set[str] = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            names |= _bound_by(node, top_only=True)
    return names


def _bound_by(node: ast.AST, *, top_only: bool = False) -> set[str]:
    """Names a statement binds (at top level only, or anywhere inside it)."""
    names: set[str] = set()
    nodes = [node] if top_only else list(ast.walk(node))
    for sub in nodes:
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(sub.name)
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in sub.names if a.name != "*"}
        elif isinstance(sub, ast.arg):
            names.add(sub.arg)
        elif isinstance(sub, ast.ExceptHandler) and sub.name:
            names.add(sub.name)
        if top_only:
            targets = _assignment_targets(sub)
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
            if isinstance(sub, (ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith, ast.Try)):
                for child in ast.iter_child_nodes(sub):
                    if isinstance(child, ast.stmt):
                        names |= _bound_by(child, top_only=True)
                    if isinstance(child, ast.ExceptHandler):
                        names |= {child.name} if child.name else set()
                        for stmt in child.body:
                            names |= _bound_by(stmt, top_only=True)
        elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
            names.add(sub.id)
    return names


def _assignment_targets(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.Assign):
        return list(node.targets)
    if isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        return [node.target]
    if isinstance(node, (ast.For, ast.AsyncFor)):
        return [node.target]
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return [item.optional_vars for item in node.items if item.optional_vars is not None]
    return []


def _root(expr: ast.AST) -> tuple[str | None, bool]:
    """``(name, through_call)``: the name an attribute/item chain starts from, and whether a call
    lies on the way (its result is the test's own copy)."""
    through_call = False
    while True:
        if isinstance(expr, (ast.Attribute, ast.Subscript)):
            expr = expr.value
        elif isinstance(expr, ast.Call):
            through_call = True
            expr = expr.func
        elif isinstance(expr, ast.Name):
            return expr.id, through_call
        else:
            return None, through_call


class _Reader:
    """Walks one test cell in statement order, tracking names bound to student-side values."""

    def __init__(self, grade_id: str, source: str, student_defined: set[str], tree: ast.Module):
        self.grade_id = grade_id
        self.lines = source.splitlines()
        self.student_defined = student_defined
        self.own = _bound_by(tree)
        self.defined_here = {n.name for n in ast.walk(tree)
                             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        self.derived: set[str] = set()
        self.refusals: list[Refusal] = []

    def student_side(self, expr: ast.AST) -> bool:
        """Is ``expr`` (no call on the way) a value read from the student's side?"""
        name, through_call = _root(expr)
        if name is None or through_call:
            return False
        return name in self.derived or (name not in self.own and name not in _BUILTINS)

    def refuse(self, node: ast.AST, idiom: str, advice: str) -> None:
        line = getattr(node, "lineno", 0)
        code = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""
        self.refusals.append(Refusal(self.grade_id, line, idiom, code, advice))

    def visit(self, node: ast.AST) -> None:
        for target in _assignment_targets(node):
            self._target(node, target)
        if isinstance(node, ast.Delete):
            for target in node.targets:
                if isinstance(target, ast.Subscript) and self.student_side(target.value):
                    self.refuse(node, "deleting an item of a value read from the student's side",
                                "the checker holds a copy of it; check the student's behaviour through calls")
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Attribute) and \
                self.student_side(node.target.value):
            self.refuse(node, "an augmented assignment of a student object's attribute",
                        "an array read from a student object is a read-only copy: write "
                        "`obj.attr = obj.attr <op> value` instead")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in MUTATING_METHODS and self.student_side(node.func.value):
            self.refuse(node, f"an in-place `.{node.func.attr}()` on a value read from the student's side",
                        "the checker holds a copy of it; build a new value and assign the whole attribute")
        if isinstance(node, ast.Assign):
            self._track(node.targets, node.value)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            self._track([node.target], node.value)

    def _target(self, node: ast.AST, target: ast.AST) -> None:
        for sub in ast.walk(target):
            if isinstance(sub, ast.Subscript) and isinstance(sub.ctx, ast.Store) and self.student_side(sub.value):
                self.refuse(node, "an item write into a value read from the student's side",
                            "the checker holds a copy of it: assign the whole attribute "
                            "(`emb.weight = new_table`) instead")

    def _track(self, targets: list[ast.AST], value: ast.AST) -> None:
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        mock = isinstance(value, ast.Lambda) or (
            isinstance(value, ast.Name) and value.id in self.own and value.id not in self.derived
            and value.id in self.defined_here)
        for name in names:
            if mock and name in self.student_defined:
                self.refuse(value, f"binding the student's name {name!r} to code of the test cell",
                            "the sealed checker never hands its own code to student code; test the "
                            "behaviour through the student's functions instead")
            if isinstance(value, (ast.Name, ast.Attribute, ast.Subscript)) and self.student_side(value):
                self.derived.add(name)
            else:
                self.derived.discard(name)


def refusals(grade_id: str, source: str, student_defined: set[str]) -> list[Refusal]:
    """Idioms of one test cell that the sealed checker refuses (see the module docstring)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # nbgrader reports the syntax error itself when the cell runs
    reader = _Reader(grade_id, source, student_defined, tree)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
                node.name in student_defined:
            reader.refuse(node, f"a test-cell definition of the student's name {node.name!r}",
                          "the sealed checker never hands its own code to student code; give the "
                          "test's helper another name")
    for node in _in_order(tree):
        reader.visit(node)
    return reader.refusals


def _in_order(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, statements in source order (``ast.walk`` is breadth-first)."""
    for child in ast.iter_child_nodes(tree):
        yield child
        yield from _in_order(child)
