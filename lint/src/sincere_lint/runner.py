"""Checking files: find the Python files under the given paths, check each, apply noqa."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sincere_lint.cache import FindingsCache, digest, vocabulary_fingerprint
from sincere_lint.config import ConfigFinder, LintConfig
from sincere_lint.diagnose import diagnose
from sincere_lint.pool import Source, diagnose_all
from sincere_lint.rules import SELECTABLE, SYNTAX_ERROR
from sincere_lint.visitor import Diagnostic
from sincere_lint.vocabulary import Vocabulary

# Directories never entered while walking a tree (a path given explicitly is still checked).
SKIPPED_DIRS = frozenset(
    {"__pycache__", "node_modules", "site-packages", "venv", "build", "dist", "__pypackages__"}
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding: ``path:line:col: code message``, with 1-based line and column."""

    path: str
    line: int
    column: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.code} {self.message}"


@dataclass(slots=True)
class LintResult:
    """What one run found, how many files it checked, and how many of those the cache
    answered for."""

    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    cached: int = 0


def lint_source(
    source: str,
    path: str = "<source>",
    *,
    vocabulary: Vocabulary | None = None,
    enabled: Iterable[str] = SELECTABLE,
) -> list[Finding]:
    """The findings in one module's source text, ``# noqa`` comments applied."""
    return _findings(path, diagnose(source, vocabulary or Vocabulary(), path), frozenset(enabled))


@dataclass(slots=True)
class _File:
    """One file of a run: where it is, how it is shown, what applies to it."""

    path: Path
    display: str
    config: LintConfig
    diagnostics: list[Diagnostic] | None = None


def lint_paths(
    paths: Iterable[Path],
    *,
    select: frozenset[str] | None = None,
    ignore: frozenset[str] = frozenset(),
    jobs: int = 1,
    cache: FindingsCache | None = None,
) -> LintResult:
    """Check every Python file under ``paths``, each with its project's configuration.

    ``select`` replaces the configured selection, ``ignore`` adds to the configured one.
    Files are checked in ``jobs`` processes; those whose bytes and configuration are in
    ``cache`` are not checked again. The result is the same whatever ``jobs`` and ``cache``.
    Raises LintConfigError for a ``[tool.sincere.lint]`` table that cannot be used.
    """
    configs = ConfigFinder()
    files = [_File(p, display_path(p), configs.for_file(p)) for p in python_files(paths)]
    fingerprints: dict[int, bytes] = {}  # by id of a LintConfig: one per directory at most
    pending: list[tuple[_File, str, Source]] = []
    for file in files:
        try:
            data = file.path.read_bytes()
        except OSError as exc:
            file.diagnostics = [Diagnostic(1, 1, SYNTAX_ERROR, f"cannot read: {exc}")]
            continue
        vocabulary = file.config.vocabulary
        key = ""
        if cache is not None:
            if id(file.config) not in fingerprints:
                fingerprints[id(file.config)] = vocabulary_fingerprint(vocabulary)
            key = digest(data, fingerprints[id(file.config)])
            file.diagnostics = cache.get(os.path.abspath(file.path), key)
        if file.diagnostics is None:
            pending.append((file, key, Source(data, vocabulary, file.display)))
    checked = diagnose_all([source for _, _, source in pending], jobs)
    for (file, key, _), diagnostics in zip(pending, checked, strict=True):
        file.diagnostics = diagnostics
        if cache is not None:
            cache.put(os.path.abspath(file.path), key, diagnostics)
    result = LintResult(files=len(files), cached=len(files) - len(pending))
    for file in files:
        enabled = file.config.enabled(select, ignore)
        result.findings.extend(_findings(file.display, file.diagnostics or [], enabled))
    return result


def _findings(path: str, diagnostics: list[Diagnostic], enabled: frozenset[str]) -> list[Finding]:
    """The diagnostics of the enabled rules (a file that cannot be checked always shows)."""
    return [
        Finding(path, d.line, d.column, d.code, d.message)
        for d in diagnostics
        if d.code in enabled or d.code == SYNTAX_ERROR
    ]


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
