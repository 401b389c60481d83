"""Following a name one step back to the value it holds.

Local names go to their last assignment on the same failure path (``Scope.assigned_before``);
UPPER_CASE module and class constants assigned once go to their value, and so do
attributes that ``__init__`` sets once and nothing else changes (``self.busy_message``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from sincere_lint.failure import FailurePath, Scope, unwrap
from sincere_lint.index import walk
from sincere_lint.values import Resolver

_CONSTANT = re.compile(r"^_*[A-Z][A-Z0-9_]*$")


class Constants:
    """The constants of one module: module-level, class-level and set once in ``__init__``."""

    def __init__(self, tree: ast.Module, classes: list[ast.ClassDef]) -> None:
        self.classes = classes
        self.module = _constants(tree.body)
        self.by_class = {
            (node.name, name): value
            for node in classes
            if not _is_enum(node)
            for name, value in _constants(node.body).items()
        }
        self._instance: dict[str, dict[str, ast.expr]] = {}

    def resolver(self, scope: Scope, line: int, failure: FailurePath) -> Resolver:
        """One step back from a name read at ``line`` (on ``failure``) to its value."""

        def resolve(node: ast.expr) -> ast.expr | None:
            if isinstance(node, ast.Name):
                assigned = scope.assigned_before(node.id, line, failure)
                if assigned is not None:
                    return unwrap(assigned.value)
                if node.id in scope.assignments or node.id in _parameters(scope):
                    return None
                return self.module.get(node.id)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                owner = node.value.id
                if owner in ("self", "cls"):
                    owner = scope.class_name or ""
                found = self.by_class.get((owner, node.attr))
                if found is None and node.value.id == "self":
                    found = self._set_once(owner).get(node.attr)
                return found
            return None

        return resolve

    def _set_once(self, class_name: str) -> dict[str, ast.expr]:
        """``self.name = value`` made exactly once in a class, in its ``__init__``."""
        if class_name not in self._instance:
            classes = [c for c in self.classes if c.name == class_name]
            found = _instance_constants(classes[0]) if len(classes) == 1 else {}
            self._instance[class_name] = found
        return self._instance[class_name]


def _instance_constants(node: ast.ClassDef) -> dict[str, ast.expr]:
    assigned: dict[str, list[tuple[str, ast.expr]]] = {}
    for method in node.body:
        if not isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for child in walk(method):
            targets: list[ast.expr] = []
            value: ast.expr | None = None
            if isinstance(child, ast.Assign):
                targets, value = child.targets, child.value
            elif isinstance(child, (ast.AnnAssign, ast.AugAssign)):
                targets, value = [child.target], child.value
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                    and value is not None
                ):
                    assigned.setdefault(target.attr, []).append((method.name, value))
    return {
        name: found[0][1]
        for name, found in assigned.items()
        if len(found) == 1 and found[0][0] == "__init__"
    }


def _is_enum(node: ast.ClassDef) -> bool:
    """Enum members are structured values, not text, whatever their value is."""
    return any("Enum" in ast.unparse(base) for base in node.bases)


def _parameters(scope: Scope) -> frozenset[str]:
    if isinstance(scope.node, ast.Module):
        return frozenset()
    args = scope.node.args
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return frozenset(a.arg for a in every if a is not None)


def _constants(body: list[ast.stmt]) -> dict[str, ast.expr]:
    """UPPER_CASE names assigned exactly once at the top of a module or class body."""
    seen: dict[str, list[ast.expr]] = {}
    for stmt in body:
        for name, value in _assigned(stmt):
            seen.setdefault(name, []).append(value)
    return {n: v[0] for n, v in seen.items() if len(v) == 1 and _CONSTANT.match(n)}


def _assigned(stmt: ast.stmt) -> Iterator[tuple[str, ast.expr]]:
    if isinstance(stmt, ast.Assign):
        for target in stmt.targets:
            if isinstance(target, ast.Name):
                yield target.id, stmt.value
    elif (
        isinstance(stmt, ast.AnnAssign)
        and stmt.value is not None
        and isinstance(stmt.target, ast.Name)
    ):
        yield stmt.target.id, stmt.value
