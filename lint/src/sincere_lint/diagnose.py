"""One module's source in, its diagnostics out: parsed, checked, ``# noqa`` applied.

What comes out depends only on the source and the vocabulary, never on the file's path or
the rule selection, so it can be computed in another process and kept in the cache.
"""

from __future__ import annotations

import ast
import importlib.util
import warnings

from sincere_lint.noqa import is_silenced, noqa_lines
from sincere_lint.rules import SYNTAX_ERROR
from sincere_lint.visitor import Diagnostic, check_module
from sincere_lint.vocabulary import Vocabulary


def diagnose(source: str, vocabulary: Vocabulary, filename: str = "<source>") -> list[Diagnostic]:
    """Every rule's findings in one module, or one ``SIN000`` when it does not parse."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old escape sequences and the like are not ours
        try:
            tree = ast.parse(source, filename=filename)
        except (SyntaxError, ValueError) as exc:
            line = getattr(exc, "lineno", None) or 1
            column = getattr(exc, "offset", None) or 1
            reason = getattr(exc, "msg", None) or str(exc)
            return [Diagnostic(line, column, SYNTAX_ERROR, f"cannot parse: {reason}")]
    silenced = noqa_lines(source)
    return [
        d
        for d in check_module(tree, source, vocabulary)
        if not is_silenced(silenced, d.line, d.code)
    ]


def diagnose_bytes(data: bytes, vocabulary: Vocabulary, filename: str) -> list[Diagnostic]:
    """As ``diagnose``, for a file's bytes in the encoding it declares (PEP 263)."""
    try:
        source = importlib.util.decode_source(data)
    except (SyntaxError, UnicodeDecodeError) as exc:
        return [Diagnostic(1, 1, SYNTAX_ERROR, f"cannot read: {exc}")]
    return diagnose(source, vocabulary, filename)
