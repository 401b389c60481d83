"""What a returned expression holds: canned text, literal answers, invented numbers.

The inspector looks at one expression and says what it found as ``Hit``s; deciding
whether the expression is on a failure path is not its job.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sincere_lint.text import TextPolicy, literal_text
from sincere_lint.vocabulary import (
    ERROR_KEYS,
    SUCCESS_FLAGS,
    SUCCESS_STATUSES,
    Vocabulary,
    is_adapter_name,
    is_answer_class,
    is_error_class,
)

# Follows a name one step to the expression it was assigned, when that is known.
Resolver = Callable[[ast.expr], ast.expr | None]

_HTTP_ERROR = re.compile(r"HTTP_[45]\d\d")


@dataclass(frozen=True, slots=True)
class Hit:
    """One thing found in an expression: the rule, the node, and a short description."""

    code: str
    node: ast.expr
    detail: str


def callee_name(call: ast.Call) -> str | None:
    """``f`` for ``f(...)`` and ``obj.f(...)``; None for anything more dynamic."""
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def number(node: ast.expr) -> float | None:
    """The value of a numeric literal (``30``, ``0.7``, ``-1``); None for anything else."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = number(node.operand)
        return None if inner is None else (-inner if isinstance(node.op, ast.USub) else inner)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return None if isinstance(node.value, bool) else float(node.value)
    return None


def shorten(text: str, limit: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@dataclass(frozen=True, slots=True)
class ExpressionInspector:
    """Finds fabrications in the expressions that one failure path returns."""

    vocabulary: Vocabulary
    resolve: Resolver
    text: TextPolicy = field(default_factory=TextPolicy)
    # Aliases of the random modules (``import random as rnd``) and names imported from
    # them (``from random import uniform``) in this module.
    random_modules: frozenset[str] = frozenset()
    random_names: frozenset[str] = frozenset()

    def returned(self, value: ast.expr, report_at: ast.expr) -> list[Hit]:
        """Hits in an expression returned or yielded on a failure path.

        ``report_at`` is the returned expression itself, or the name it was read from when
        ``value`` is what that name was assigned; hits in a followed value are reported at
        the name.
        """
        direct = value is report_at
        if direct and isinstance(value, (ast.Name, ast.Attribute)):
            resolved = self.resolve(value)
            if resolved is None:
                return []
            value, direct = resolved, False
        hits = self._inspect(value)
        return hits if direct else [Hit(h.code, report_at, h.detail) for h in hits]

    def _inspect(self, value: ast.expr) -> list[Hit]:
        if isinstance(value, ast.Call) and self._is_fallback_call(value):
            return [Hit("SIN003", value, f"'{callee_name(value)}()'")]
        hits: list[Hit] = []
        text = self.text.canned(value)
        if text is not None:
            hits.append(Hit("SIN001", value, f'"{shorten(text)}"'))
        hits.extend(self.inside(value))
        return hits

    def inside(self, node: ast.expr, in_error: bool = False) -> Iterator[Hit]:
        """Hits in the fields of the dicts and objects an expression builds."""
        if isinstance(node, ast.Lambda):
            return
        if isinstance(node, ast.Dict):
            in_error = in_error or _dict_is_error(node)
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    yield from self._field(key.value, value, in_error)
                yield from self.inside(value, in_error)
            return
        if isinstance(node, ast.Call):
            yield from self._call(node, in_error)
            return
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                yield from self.inside(child, in_error)
            elif isinstance(child, ast.comprehension):
                yield from self.inside(child.iter, in_error)

    def _call(self, call: ast.Call, in_error: bool) -> Iterator[Hit]:
        name = callee_name(call)
        if self._is_random(call):
            yield Hit("SIN004", call, f"a random value from {ast.unparse(call.func)}()")
            return
        if self._is_fallback_call(call) and not in_error:
            yield Hit("SIN003", call, f"'{name}()'")
            return
        in_error = in_error or _call_is_error(call, name)
        if name and name[0].isupper() and is_answer_class(name) and not in_error:
            for arg in call.args:
                text = self.text.canned(arg)
                if text is not None:
                    yield Hit("SIN002", arg, f'{name}("{shorten(text)}")')
        for keyword in call.keywords:
            if keyword.arg is not None:
                yield from self._field(keyword.arg, keyword.value, in_error)
        for child in (*call.args, *(k.value for k in call.keywords)):
            yield from self.inside(child, in_error)

    def _is_fallback_call(self, call: ast.Call) -> bool:
        """A call of a generator of invented output. A fake/mock *adapter* given a real
        value (``wrap_in_fake_stream(response)``) only changes the value's shape."""
        name = callee_name(call)
        if name is None or not self.vocabulary.is_fallback_name(name):
            return False
        given = [*call.args, *(k.value for k in call.keywords)]
        real = any(not isinstance(arg, ast.Constant) for arg in given)
        return not (is_adapter_name(name) and real)

    def _field(self, key: str, value: ast.expr, in_error: bool) -> Iterator[Hit]:
        vocabulary = self.vocabulary
        if vocabulary.is_estimate_field(key):
            if estimate_literal(value):
                yield Hit("SIN005", value, f"{key}={ast.unparse(value)}")
        elif vocabulary.is_metric_field(key):
            if number(value):
                yield Hit("SIN004", value, f"{key}={ast.unparse(value)}")
        elif vocabulary.is_answer_field(key) and not in_error:
            target = value
            if isinstance(value, (ast.Name, ast.Attribute)):
                target = self.resolve(value) or value
            if self._has_literal_payload(target):
                yield Hit("SIN002", value, f"'{key}'")

    def _has_literal_payload(self, node: ast.expr) -> bool:
        """Does an answer field hold content nobody computed: prose, numbers, literal data?"""
        if isinstance(node, ast.Constant) and not isinstance(node.value, str):
            return bool(number(node))
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return any(self._is_literal_item(e) for e in node.elts)
        if isinstance(node, ast.Dict):
            return not _dict_is_error(node) and any(self._is_literal_item(v) for v in node.values)
        return self.text.canned(node) is not None

    def _is_literal_item(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return bool(node.value.strip())
        return self._has_literal_payload(node)

    def _is_random(self, call: ast.Call) -> bool:
        func = call.func
        if isinstance(func, ast.Name):
            return func.id in self.random_names
        parts: list[str] = []
        while isinstance(func, ast.Attribute):
            parts.append(func.attr)
            func = func.value
        if isinstance(func, ast.Name):
            parts.append(func.id)
        return "random" in parts[1:] or (len(parts) > 1 and parts[-1] in self.random_modules)


def estimate_literal(value: ast.expr) -> bool:
    """A literal estimate: a non-zero number, or text with a number in it ("~30 s")."""
    if number(value):
        return True
    text = literal_text(value)
    return text is not None and any(c.isdigit() for c in text)


def _dict_is_error(node: ast.Dict) -> bool:
    return any(
        isinstance(k, ast.Constant) and isinstance(k.value, str) and _marks_error(k.value, v)
        for k, v in zip(node.keys, node.values, strict=True)
    )


def _call_is_error(call: ast.Call, name: str | None) -> bool:
    if name is not None and is_error_class(name):
        return True
    if any(k.arg is not None and _marks_error(k.arg, k.value) for k in call.keywords):
        return True
    # ``Probe(False, ...)``: a positional ok-flag that says it failed, or an HTTP error status.
    return any(
        _is_error_status(arg) or (isinstance(arg, ast.Constant) and arg.value is False)
        for arg in call.args
    )


def _marks_error(key: str, value: ast.expr) -> bool:
    """Does ``key: value`` say that the object reports a failure?"""
    key = key.lower()
    if key == "type":
        return isinstance(value, ast.Constant) and value.value == "error"
    if key not in ERROR_KEYS and key not in SUCCESS_FLAGS:
        return False
    if not isinstance(value, ast.Constant):
        return True  # computed: it may well say failure, so trust it
    if key in SUCCESS_FLAGS:
        return value.value is not True
    if key in ("status", "status_code"):
        if isinstance(value.value, str):
            return value.value.lower() not in SUCCESS_STATUSES
        return not (isinstance(value.value, int) and value.value < 400)
    return value.value not in (None, False, "")


def _is_error_status(node: ast.expr) -> bool:
    """A positional HTTP error status: ``404`` or ``status.HTTP_503_SERVICE_UNAVAILABLE``."""
    code = number(node)
    if code is not None:
        return 400 <= code < 600
    return isinstance(node, ast.Attribute) and bool(_HTTP_ERROR.match(node.attr))
