"""Which private functions are reached only from failure paths.

A private function (``_name``, not a dunder) whose every use in its module is a call whose
result a failure path returns is itself a failure path: what it returns is what the handler
returns. Public functions may be called from other modules, and a function used in any
other way (passed as a callback, named in a string, decorated) may be reached from
anywhere, so neither is one. Functions named for invented output (``_fallback_response``)
are reported where they are called, so nothing is followed through them.
"""

from __future__ import annotations

import ast

from sincere_lint.failure import FailurePath, Scope
from sincere_lint.index import ModuleIndex
from sincere_lint.vocabulary import Vocabulary

_PLAIN_DECORATORS = frozenset({"staticmethod", "classmethod", "overload"})


def mark_failure_functions(index: ModuleIndex, scopes: list[Scope], vocabulary: Vocabulary) -> None:
    """Set ``Scope.failure`` on every function reached only from failure paths."""
    candidates: dict[str, list[Scope]] = {}
    blocked: set[str] = set()
    for scope in scopes:
        name = scope.name
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            continue
        if isinstance(scope.node, ast.Module):
            continue
        if any(not _is_plain(d) for d in scope.node.decorator_list) or name in index.strings:
            blocked.add(name)  # registered somewhere, or looked up by name: reachable
        candidates.setdefault(name, []).append(scope)
    if not candidates:
        return
    changed = True
    while changed:
        changed = False
        returned = _returned_callees(scopes, vocabulary)
        for name, defs in candidates.items():
            if name in blocked or defs[0].failure is not None:
                continue
            found = index.uses.get(name, [])
            if found and all(id(use) in returned for use in found):
                for scope in defs:
                    scope.failure = FailurePath("function", scope.line, name)
                changed = True


def _is_plain(decorator: ast.expr) -> bool:
    return isinstance(decorator, ast.Name) and decorator.id in _PLAIN_DECORATORS


def _returned_callees(scopes: list[Scope], vocabulary: Vocabulary) -> set[int]:
    """The ids of the ``func`` nodes of calls whose result a failure path returns."""
    callees: set[int] = set()
    for scope in scopes:
        # A fallback generator is reported where it is called, not followed into.
        reported = scope.failure is not None and vocabulary.is_fallback_name(scope.name)
        for found in scope.failure_exits():
            if reported and found.failure is scope.failure:
                continue
            if isinstance(found.value, ast.Call):
                callees.add(id(found.value.func))
    return callees
