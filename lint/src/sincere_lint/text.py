"""What counts as canned text: a sentence written into the code, not a label or a report.

Text is canned when it is a literal (or a template: an f-string, ``"...".format()``,
``"..." % x``, concatenation) of three or more words. It is honest, and not reported, when
it is a visible marker (``"<unprintable object>"``, ``"[body omitted]"``), when it quotes
the exception being handled, when the function writes the same text when it works, or
when the function's job is text about failures (its name or its return type says so).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass

from sincere_lint.index import walk

# An apology is canned wherever it is and whatever else it says ("Sorry, it failed: {exc}").
APOLOGY = re.compile(r"\b(sorry|apologi[sz]e|apologies|apology)\b", re.IGNORECASE)
# Calls that read the exception being handled.
CURRENT_EXCEPTION_CALLS = frozenset({"exc_info", "format_exc", "format_exception", "from_current"})
_WORD = re.compile(r"^\W*[^\W\d_]{2,}(?:['’-][^\W\d_]+)*\W*$")
_MARKER_ENDS = {"<": ">", "[": "]", "(": ")"}
# Three words make a sentence a user reads; one or two are labels ("unknown", "not found").
PROSE_WORDS = 3


def literal_text(node: ast.expr) -> str | None:
    """The literal text of a string-building expression, ``{}`` for each hole; else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
            for v in node.values
        )
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "format":  # "...".format(...)
            return literal_text(node.func.value)
        return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):  # "..." % args
        return literal_text(node.left)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = literal_text(node.left), literal_text(node.right)
        if left is None and right is None:
            return None
        return (left or "{}") + (right or "{}")
    return None


def is_prose(text: str) -> bool:
    """Is this a sentence for a person, not a label, a path, markup or a marker?"""
    stripped = text.strip()
    if stripped and _MARKER_ENDS.get(stripped[0]) == stripped[-1]:
        return False  # "<exception str() failed>", "[body omitted]": says what is missing
    return sum(1 for token in text.split() if _WORD.match(token)) >= PROSE_WORDS


def prose_of(node: ast.expr) -> str | None:
    """The template of ``node`` if it builds prose (in any branch of ``a if c else b`` or
    ``x or "..."``); else None."""
    if isinstance(node, ast.IfExp):
        return prose_of(node.body) or prose_of(node.orelse)
    if isinstance(node, ast.BoolOp):
        return next((t for t in map(prose_of, node.values) if t is not None), None)
    text = literal_text(node)
    return text if text is not None and is_prose(text) else None


def templates(nodes: Iterable[ast.AST]) -> frozenset[str]:
    """The prose templates built anywhere in these statements."""
    found: set[str] = set()
    for stmt in nodes:
        for node in walk(stmt):
            if isinstance(node, ast.expr):
                text = literal_text(node)
                if text is not None and is_prose(text):
                    found.add(text)
    return frozenset(found)


def returns_text_or_other(annotation: ast.expr | None) -> bool:
    """Is the return type a union of ``str`` and something else (``str | None``,
    ``Report | str``)? Then ``str`` is a separate channel, typically for the error."""
    leaves = _union(annotation) if annotation is not None else []
    return len(leaves) > 1 and any(isinstance(x, ast.Name) and x.id == "str" for x in leaves)


def _union(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            return _union(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return [node]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return [*_union(node.left), *_union(node.right)]
    if isinstance(node, ast.Subscript):
        outer = node.value.attr if isinstance(node.value, ast.Attribute) else None
        outer = node.value.id if isinstance(node.value, ast.Name) else outer
        if outer == "Optional":
            return [*_union(node.slice), ast.Constant(None)]
        if outer == "Union" and isinstance(node.slice, ast.Tuple):
            return [leaf for elt in node.slice.elts for leaf in _union(elt)]
    return [node]


@dataclass(frozen=True, slots=True)
class TextPolicy:
    """When canned-looking text on one failure path is honest, and not reported."""

    # The name bound by ``except E as name``, and names the handler derived from it: text
    # that quotes one of them reports the failure.
    exception_names: frozenset[str] = frozenset()
    # Templates the function also builds when it works: its ordinary output.
    ordinary: frozenset[str] = frozenset()
    # The function's name or return type says text about failure is what it produces.
    text_is_its_output: bool = False

    def canned(self, node: ast.expr) -> str | None:
        """The template of ``node`` if it is canned text that this path should not return."""
        text = prose_of(node)
        if text is None or APOLOGY.search(text):
            return text
        if self.text_is_its_output or text in self.ordinary:
            return None
        return None if quotes_failure(node, self.exception_names) else text


def quotes_failure(node: ast.AST, exception_names: frozenset[str]) -> bool:
    """Does this expression read the exception being handled?"""
    for child in walk(node):
        if isinstance(child, ast.Name) and child.id in exception_names:
            return True
        if isinstance(child, ast.Call):
            func = child.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in CURRENT_EXCEPTION_CALLS:
                return True
    return False
