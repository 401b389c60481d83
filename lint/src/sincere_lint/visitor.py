"""One module, checked: its failure paths found, what they return inspected, hits worded."""

from __future__ import annotations

import ast
from dataclasses import dataclass

from sincere_lint.callers import mark_failure_functions
from sincere_lint.failure import FailureExit, FailurePath, Scope, collect_scopes, unwrap
from sincere_lint.index import ModuleIndex
from sincere_lint.resolve import Constants
from sincere_lint.text import (
    TextPolicy,
    quotes_failure,
    returns_text_or_other,
    templates,
)
from sincere_lint.values import ExpressionInspector, Hit, callee_name
from sincere_lint.vocabulary import (
    Vocabulary,
    is_answer_class,
    is_error_class,
    is_message_function,
)

_RANDOM_MODULES = ("random", "numpy.random")
_ADVICE = {
    "SIN001": "raise an error instead",
    "SIN002": "raise an error or return an error object",
    "SIN003": "fail instead of inventing output",
    "SIN004": "report measured values or fail",
    "SIN005": "compute it from recorded data or leave it out",
}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A finding in one module: where (1-based line and column), which rule, what."""

    line: int
    column: int
    code: str
    message: str


def check_module(tree: ast.Module, source: str, vocabulary: Vocabulary) -> list[Diagnostic]:
    """Every fabrication in a parsed module, in source order."""
    return _ModuleCheck(tree, source, vocabulary).run()


class _ModuleCheck:
    def __init__(self, tree: ast.Module, source: str, vocabulary: Vocabulary) -> None:
        self.tree = tree
        self.lines = source.splitlines()
        self.vocabulary = vocabulary
        self.index = ModuleIndex.of(tree)
        self.random_modules, self.random_names = _random_imports(self.index.imports)
        self.constants = Constants(tree, self.index.classes)
        self.found: dict[tuple[int, int, str], Diagnostic] = {}

    def run(self) -> list[Diagnostic]:
        scopes = collect_scopes(self.tree, self.index.yield_lines)
        mark_failure_functions(self.index, scopes, self.vocabulary)
        for scope in scopes:
            exits = list(scope.failure_exits())
            if not exits:
                continue
            reported = scope.failure is not None and self.vocabulary.is_fallback_name(scope.name)
            ordinary = templates(scope.normal) if scope.failure is None else frozenset()
            for found in exits:
                if reported and found.failure is scope.failure:
                    continue  # the calls of a fallback generator are what is reported
                hits = self._inspector(scope, found, ordinary).returned(
                    found.value, found.report_at
                )
                verb = "returns" if isinstance(found.exit.node, ast.Return) else "yields"
                self._add_grouped(hits, verb, found.describe())
        self._estimates()
        return sorted(self.found.values(), key=lambda d: (d.line, d.column, d.code))

    def _estimates(self) -> None:
        """SIN005 on every error raised and every error or answer object built."""
        inspector = ExpressionInspector(self.vocabulary, lambda _: None)
        built: list[tuple[ast.expr, str]] = [
            (unwrap(node.exc), "attached to a raised error")
            for node in self.index.raises
            if node.exc is not None
        ]
        for call in self.index.calls:
            name = callee_name(call)
            if name and name[0].isupper() and (is_error_class(name) or is_answer_class(name)):
                built.append((call, f"attached to {name}(...)"))
        for node, where in built:
            if isinstance(node, ast.Call) and any(k.arg for k in node.keywords):
                hits = [h for h in inspector.inside(node) if h.code == "SIN005"]
                self._add_grouped(hits, "", where)

    def _add_grouped(self, hits: list[Hit], verb: str, where: str) -> None:
        """One diagnostic per rule for one expression, at its first hit, naming them all."""
        by_code: dict[str, list[Hit]] = {}
        for hit in hits:
            by_code.setdefault(hit.code, []).append(hit)
        for code, group in by_code.items():
            group.sort(key=lambda h: (h.node.lineno, h.node.col_offset))
            details = list(dict.fromkeys(h.detail for h in group))
            shown = ", ".join(details[:3]) + (", …" if len(details) > 3 else "")
            what = " ".join(filter(None, (verb, _WHAT[code].format(shown), where)))
            first = group[0].node
            key = (first.lineno, self._column(first.lineno, first.col_offset), code)
            self.found.setdefault(key, Diagnostic(*key, f"{what}; {_ADVICE[code]}"))

    def _column(self, line: int, offset: int) -> int:
        """The 1-based character column of a UTF-8 byte offset on a line."""
        if 0 < line <= len(self.lines):
            return len(self.lines[line - 1].encode()[:offset].decode(errors="replace")) + 1
        return offset + 1

    def _inspector(
        self, scope: Scope, found: FailureExit, ordinary: frozenset[str]
    ) -> ExpressionInspector:
        node = scope.node
        own_text = not isinstance(node, ast.Module) and (
            is_message_function(node.name) or returns_text_or_other(node.returns)
        )
        policy = TextPolicy(
            exception_names=_exception_names(scope, found.failure),
            ordinary=ordinary,
            text_is_its_output=own_text,
        )
        resolve = self.constants.resolver(scope, found.exit.node.lineno, found.failure)
        return ExpressionInspector(
            self.vocabulary, resolve, policy, self.random_modules, self.random_names
        )


_WHAT = {
    "SIN001": "canned text {}",
    "SIN002": "an answer with literal content in {}",
    "SIN003": "the result of {} (named for invented output)",
    "SIN004": "invented numbers: {}",
    "SIN005": "hard-coded estimate {}",
}


def _exception_names(scope: Scope, failure: FailurePath) -> frozenset[str]:
    """The handled exception's name, and the names assigned from it on the same path
    (``msg = str(exc)``, ``crash = ExceptionInfo.from_current()``)."""
    names = {failure.exception} if failure.exception else set()
    for name, assignments in scope.assignments.items():
        if any(
            a.failure == failure and quotes_failure(a.value, frozenset(names)) for a in assignments
        ):
            names.add(name)
    return frozenset(names)


def _random_imports(
    imports: list[ast.Import | ast.ImportFrom],
) -> tuple[frozenset[str], frozenset[str]]:
    """Names bound to the random modules, and names imported from them."""
    modules: set[str] = set()
    names: set[str] = set()
    for node in imports:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in _RANDOM_MODULES and alias.asname:
                    modules.add(alias.asname)
        elif isinstance(node, ast.ImportFrom) and node.module in _RANDOM_MODULES:
            names.update(alias.asname or alias.name for alias in node.names)
    return frozenset(modules), frozenset(names)
