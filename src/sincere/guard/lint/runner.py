"""Checking files: find the Python files under the given paths, check each, apply noqa."""

from __future__ import annotations

import ast
import importlib.util
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sincere.guard.lint.config import ConfigFinder
from sincere.guard.lint.noqa import is_silenced, noqa_lines
from sincere.guard.lint.rules import SELECTABLE, SYNTAX_ERROR
from sincere.guard.lint.visitor import check_module
from sincere.guard.lint.vocabulary import Vocabulary

# Directories never entered while walking a tree (a path given explicitly is still checked).
SKIPPED_DIRS = frozenset(
    {"__pycache__", "node_modules", "site-packages", "venv", "build", "dist", "__pypackages__"}
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding: ``path:line:column: code message``, with 1-based line and column."""

    path: str
    line: int
    column: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.code} {self.message}"


@dataclass(slots=True)
class LintResult:
    """What one run found, and how many files it checked."""

    findings: list[Finding] = field(default_factory=list)
    files: int = 0


def lint_source(
    source: str,
    path: str = "<source>",
    *,
    vocabulary: Vocabulary | None = None,
    enabled: Iterable[str] = SELECTABLE,
) -> list[Finding]:
    """The findings in one module's source text, ``# noqa`` comments applied."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old escape sequences and the like are not ours
        try:
            tree = ast.parse(source, filename=path)
        except (SyntaxError, ValueError) as exc:
            line = getattr(exc, "lineno", None) or 1
            column = getattr(exc, "offset", None) or 1
            reason = getattr(exc, "msg", None) or str(exc)
            return [Finding(path, line, column, SYNTAX_ERROR, f"cannot parse: {reason}")]
    codes = frozenset(enabled)
    silenced = noqa_lines(source)
    return [
        Finding(path, d.line, d.column, d.code, d.message)
        for d in check_module(tree, source, vocabulary or Vocabulary())
        if d.code in codes and not is_silenced(silenced, d.line, d.code)
    ]


def lint_paths(
    paths: Iterable[Path],
    *,
    select: frozenset[str] | None = None,
    ignore: frozenset[str] = frozenset(),
) -> LintResult:
    """Check every Python file under ``paths``, each with its project's configuration.

    ``select`` replaces the configured selection, ``ignore`` adds to the configured one.
    Raises LintConfigError for a ``[tool.sincere.lint]`` table that cannot be used.
    """
    configs = ConfigFinder()
    result = LintResult()
    for file in python_files(paths):
        config = configs.for_file(file)
        result.files += 1
        display = display_path(file)
        try:
            source = importlib.util.decode_source(file.read_bytes())
        except (OSError, SyntaxError, UnicodeDecodeError) as exc:
            result.findings.append(Finding(display, 1, 1, SYNTAX_ERROR, f"cannot read: {exc}"))
            continue
        result.findings.extend(
            lint_source(
                source,
                display,
                vocabulary=config.vocabulary,
                enabled=config.enabled(select, ignore),
            )
        )
    return result


def python_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The files named, and the ``*.py`` files under the directories named, in order."""
    for path in paths:
        if not path.is_dir():
            yield path
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS)
            yield from (Path(root) / f for f in sorted(files) if f.endswith((".py", ".pyi")))


def display_path(path: Path) -> str:
    """The path relative to the working directory when it is inside it, else as given."""
    try:
        return path.resolve().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()
