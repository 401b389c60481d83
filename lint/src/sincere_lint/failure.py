"""Where a module's failure paths are, and which values leave a function through them.

A failure path is code that runs only because something failed: an ``except`` handler;
the code after a ``try`` whose body returns (reached only when it raised) or after a retry
loop around such a ``try``; and a private function whose result is only ever returned from
a failure path. Definitions nested in a handler (an optional import's stand-in function)
run later and are not part of it.
"""

from __future__ import annotations

import ast
import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_TRIES = (ast.Try, ast.TryStar)
# Exceptions that steer control rather than report a failure: a handler that catches only
# these (Ctrl-C, a cancelled task, an exhausted iterator) is not a failure path.
CONTROL_FLOW = frozenset(
    {
        "KeyboardInterrupt",
        "SystemExit",
        "GeneratorExit",
        "StopIteration",
        "StopAsyncIteration",
        "CancelledError",
    }
)


@dataclass(frozen=True, slots=True)
class FailurePath:
    """Why a place is a failure path, for the message."""

    kind: str  # "handler", "after-try", "after-loop" or "function"
    line: int
    name: str = ""  # the function's
    # For a handler: the name bound by ``except E as name``.
    exception: str = field(default="", compare=False)

    def describe(self) -> str:
        if self.kind == "handler":
            return f"in the except handler at line {self.line}"
        if self.kind == "after-try":
            return f"after the try at line {self.line} failed"
        if self.kind == "after-loop":
            return f"after every attempt of the loop at line {self.line} failed"
        return f"in {self.name}(), whose result is only returned from failure paths"


@dataclass(frozen=True, slots=True)
class Exit:
    """A ``return``, ``yield`` or ``yield from``: where a value leaves a function."""

    node: ast.Return | ast.Yield | ast.YieldFrom
    value: ast.expr | None
    failure: FailurePath | None


@dataclass(frozen=True, slots=True)
class Assignment:
    """``name = value`` in a function body, and whether it happened on a failure path."""

    name: str
    value: ast.expr
    line: int
    failure: FailurePath | None


@dataclass(frozen=True, slots=True)
class FailureExit:
    """A value that leaves a function on a failure path, and where to report it."""

    value: ast.expr
    failure: FailurePath
    report_at: ast.expr
    exit: Exit
    # The line of the assignment followed from the returned name, if one was.
    assigned_line: int | None = None

    def describe(self) -> str:
        where = self.failure.describe()
        if self.assigned_line is None:
            return where
        return f"(assigned on line {self.assigned_line}) {where}"


@dataclass(slots=True)
class Scope:
    """One function, or the module body: its exits and its assignments to plain names."""

    node: ast.Module | FunctionNode
    class_name: str | None
    exits: list[Exit] = field(default_factory=list)
    assignments: dict[str, list[Assignment]] = field(default_factory=dict)
    # The simple statements not on a failure path: what the function does when it works.
    normal: list[ast.stmt] = field(default_factory=list)
    # The module's lines with a ``yield`` (sorted), so that only those statements are searched.
    yield_lines: Sequence[int] = ()
    # Set when every call of this (private) function is returned from a failure path.
    failure: FailurePath | None = None

    @property
    def name(self) -> str:
        return "" if isinstance(self.node, ast.Module) else self.node.name

    @property
    def line(self) -> int:
        return 0 if isinstance(self.node, ast.Module) else self.node.lineno

    def assigned_before(
        self, name: str, line: int, failure: FailurePath | None
    ) -> Assignment | None:
        """The last assignment to ``name`` above ``line``, if it was made on ``failure``
        (or on any failure path when ``failure`` is None): a one-step data flow.

        An assignment made before the failure (in the ``try`` body) may or may not have
        happened, so it is not followed.
        """
        earlier = [a for a in self.assignments.get(name, ()) if a.line < line]
        if not earlier:
            return None
        last = max(earlier, key=lambda a: a.line)
        made_on = last.failure or self.failure
        if made_on is None or (failure is not None and made_on != failure):
            return None
        return last

    def failure_exits(self) -> Iterator[FailureExit]:
        """Every value that leaves this function on a failure path.

        A name returned on a failure path is followed to its last assignment; a name
        returned elsewhere counts when that assignment was made on a failure path
        (``reply = "..."`` in a handler, ``return reply`` after the ``try``).
        """
        for exit_ in self.exits:
            if exit_.value is None:
                continue
            value = unwrap(exit_.value)
            failure = exit_.failure or self.failure
            if isinstance(value, ast.Name):
                assigned = self.assigned_before(value.id, exit_.node.lineno, failure)
                via = failure
                if via is None and assigned is not None:
                    via = assigned.failure or self.failure
                if assigned is not None and via is not None:
                    yield FailureExit(unwrap(assigned.value), via, value, exit_, assigned.line)
                    continue
            if failure is not None:
                yield FailureExit(value, failure, value, exit_)
                continue
            # ``return {"response": reply}`` after a handler that set ``reply``.
            for name in _names(value):
                assigned = self.assigned_before(name.id, exit_.node.lineno, None)
                if assigned is not None and assigned.failure is not None:
                    yield FailureExit(value, assigned.failure, value, exit_, assigned.line)
                    break


def _names(node: ast.expr) -> Iterator[ast.Name]:
    """The names read in an expression, outside lambdas and comprehensions."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Name):
            yield child
        elif isinstance(child, ast.expr) and not isinstance(
            child, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
        ):
            yield from _names(child)


def unwrap(node: ast.expr) -> ast.expr:
    """``await x`` is ``x`` for our purposes."""
    while isinstance(node, ast.Await):
        node = node.value
    return node


def collect_scopes(module: ast.Module, yield_lines: Sequence[int] = ()) -> list[Scope]:
    """Every function of the module (methods and nested functions too), and the module."""
    scopes = [Scope(module, None, yield_lines=yield_lines)]
    _walk_block(module.body, None, scopes[0])
    for node, class_name in _functions(module.body, None):
        scope = Scope(node, class_name, yield_lines=yield_lines)
        _walk_block(node.body, None, scope)
        scopes.append(scope)
    return scopes


def _functions(
    body: list[ast.stmt], class_name: str | None
) -> Iterator[tuple[FunctionNode, str | None]]:
    """The functions defined in a block, at any depth (only statements can hold them)."""
    for stmt in body:
        if isinstance(stmt, ast.ClassDef):
            yield from _functions(stmt.body, stmt.name)
        elif isinstance(stmt, FunctionNode):
            yield stmt, class_name
            yield from _functions(stmt.body, class_name)
        else:
            for block in _blocks(stmt):
                yield from _functions(block, class_name)


def _blocks(stmt: ast.stmt) -> Iterator[list[ast.stmt]]:
    """The statement lists inside a compound statement."""
    for name in ("body", "orelse", "finalbody"):
        block = getattr(stmt, name, None)
        if isinstance(block, list):
            yield block
    if isinstance(stmt, _TRIES):
        yield from (handler.body for handler in stmt.handlers)
    elif isinstance(stmt, ast.Match):
        yield from (case.body for case in stmt.cases)


def _walk_block(body: list[ast.stmt], failure: FailurePath | None, scope: Scope) -> None:
    after: FailurePath | None = None
    for stmt in body:
        _walk_stmt(stmt, failure or after, scope)
        if after is None:
            after = _failure_after(stmt)


def _walk_stmt(stmt: ast.stmt, failure: FailurePath | None, scope: Scope) -> None:
    if isinstance(stmt, (FunctionNode, ast.ClassDef)):
        return  # a scope of its own, run later: not part of this path
    if isinstance(stmt, _TRIES):
        _walk_block(stmt.body, failure, scope)
        for handler in stmt.handlers:
            path = None
            if not _steers(handler):
                path = FailurePath("handler", handler.lineno, exception=handler.name or "")
            _walk_block(handler.body, path or failure, scope)
        _walk_block(stmt.orelse, failure, scope)
        _walk_block(stmt.finalbody, failure, scope)
        return
    if isinstance(stmt, _LOOPS):
        _record_yields(stmt.iter if not isinstance(stmt, ast.While) else stmt.test, failure, scope)
        _walk_block(stmt.body, failure, scope)
        _walk_block(stmt.orelse, failure or _failure_after(stmt), scope)
        return
    if isinstance(stmt, ast.If):
        _record_yields(stmt.test, failure, scope)
        _walk_block(stmt.body, failure, scope)
        _walk_block(stmt.orelse, failure, scope)
        return
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        _walk_block(stmt.body, failure, scope)
        return
    if isinstance(stmt, ast.Match):
        for case in stmt.cases:
            _walk_block(case.body, failure, scope)
        return
    if failure is None:
        scope.normal.append(stmt)
    if isinstance(stmt, ast.Return):
        scope.exits.append(Exit(stmt, stmt.value, failure))
        return
    if isinstance(stmt, ast.Assign):
        for target in stmt.targets:
            if isinstance(target, ast.Name):
                _assign(scope, target.id, stmt.value, stmt.lineno, failure)
    elif (
        isinstance(stmt, ast.AnnAssign)
        and stmt.value is not None
        and isinstance(stmt.target, ast.Name)
    ):
        _assign(scope, stmt.target.id, stmt.value, stmt.lineno, failure)
    _record_yields(stmt, failure, scope)


def _assign(
    scope: Scope, name: str, value: ast.expr, line: int, failure: FailurePath | None
) -> None:
    scope.assignments.setdefault(name, []).append(Assignment(name, value, line, failure))


def _record_yields(node: ast.expr | ast.stmt, failure: FailurePath | None, scope: Scope) -> None:
    lines = scope.yield_lines
    first = bisect.bisect_left(lines, node.lineno)
    if first == len(lines) or lines[first] > (node.end_lineno or node.lineno):
        return
    for child in _expression_nodes(node):
        if isinstance(child, (ast.Yield, ast.YieldFrom)):
            scope.exits.append(Exit(child, child.value, failure))


def _expression_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a simple statement, without entering lambdas."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Lambda):
            continue
        yield child
        yield from _expression_nodes(child)


def _failure_after(stmt: ast.stmt) -> FailurePath | None:
    """The failure path that the code after ``stmt`` is on, if only failure leads there."""
    if isinstance(stmt, _TRIES) and _is_attempt(stmt, allow_continue=False):
        return FailurePath("after-try", stmt.lineno)
    if (
        isinstance(stmt, _LOOPS)
        and not _breaks(stmt.body)
        and any(isinstance(s, _TRIES) and _is_attempt(s, allow_continue=True) for s in stmt.body)
    ):
        return FailurePath("after-loop", stmt.lineno)
    return None


def _is_attempt(stmt: ast.Try | ast.TryStar, *, allow_continue: bool) -> bool:
    """A ``try`` whose body returns and which has a handler that lets control go on."""
    if not stmt.body or not isinstance(stmt.body[-1], ast.Return) or stmt.orelse:
        return False
    stops: tuple[type[ast.stmt], ...] = (ast.Return, ast.Raise, ast.Break)
    if not allow_continue:
        stops += (ast.Continue,)
    return any(not _ends_with(h.body, stops) and not _steers(h) for h in stmt.handlers)


def _steers(handler: ast.ExceptHandler) -> bool:
    """Does this handler catch only control-flow exceptions?"""
    caught = handler.type
    if caught is None:
        return False
    names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
    return all(
        (n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", "")) in CONTROL_FLOW
        for n in names
    )


def _ends_with(body: list[ast.stmt], kinds: tuple[type[ast.stmt], ...]) -> bool:
    if not body:
        return False
    last = body[-1]
    if isinstance(last, ast.If):
        return _ends_with(last.body, kinds) and _ends_with(last.orelse, kinds)
    return isinstance(last, kinds)


def _breaks(body: list[ast.stmt]) -> bool:
    """Does a ``break`` in this loop body (not in a nested loop) end the loop?"""
    for stmt in body:
        if isinstance(stmt, ast.Break):
            return True
        if isinstance(stmt, (*_LOOPS, FunctionNode, ast.ClassDef)):
            continue
        if any(_breaks(block) for block in _blocks(stmt)):
            return True
    return False
