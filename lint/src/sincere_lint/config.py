"""``[tool.sincere.lint]``: a project's rule selection and extra names.

The table is read from the nearest ``pyproject.toml`` above each checked file that has one
(like ruff, a ``pyproject.toml`` without the table does not stop the search)::

    [tool.sincere.lint]
    select = ["SIN"]                          # codes or prefixes; default: every rule
    ignore = ["SIN004"]
    extra-fallback-names = ["stub", "offline_reply"]  # words, or whole function names
    extra-answer-fields = ["verdict"]                 # whole keys and keyword names
    extra-metric-fields = ["queue_depth"]             # whole keys and keyword names
    extra-estimate-fields = ["wait_hint"]             # whole keys and keyword names
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from sincere_lint.rules import SELECTABLE, resolve_codes
from sincere_lint.vocabulary import Vocabulary

PYPROJECT = "pyproject.toml"
_LISTS = (
    "select",
    "ignore",
    "extra-fallback-names",
    "extra-answer-fields",
    "extra-metric-fields",
    "extra-estimate-fields",
)


class LintConfigError(ValueError):
    """A ``[tool.sincere.lint]`` table that cannot be used: the message names the file."""


@dataclass(frozen=True, slots=True)
class LintConfig:
    """The settings in force for one file."""

    select: frozenset[str] = frozenset(SELECTABLE)
    ignore: frozenset[str] = frozenset()
    vocabulary: Vocabulary = field(default_factory=Vocabulary)
    source: Path | None = None

    def enabled(
        self, select: frozenset[str] | None = None, ignore: frozenset[str] = frozenset()
    ) -> frozenset[str]:
        """The codes to report: the command line's ``--select`` replaces the file's,
        its ``--ignore`` adds to the file's."""
        return (self.select if select is None else select) - self.ignore - ignore


def load_config(pyproject: Path) -> LintConfig:
    """The ``[tool.sincere.lint]`` table of one file (the defaults if it has none)."""
    try:
        with pyproject.open("rb") as file:
            data = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LintConfigError(f"{pyproject}: cannot read: {exc}") from exc
    table = data.get("tool", {}).get("sincere", {}).get("lint")
    if table is None:
        return LintConfig(source=pyproject)
    if not isinstance(table, dict):
        raise LintConfigError(f"{pyproject}: [tool.sincere.lint] must be a table")
    unknown = sorted(set(table) - set(_LISTS))
    if unknown:
        known = ", ".join(_LISTS)
        raise LintConfigError(f"{pyproject}: unknown key(s) {', '.join(unknown)} (known: {known})")
    lists: dict[str, list[str]] = {}
    for key in _LISTS:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise LintConfigError(f"{pyproject}: {key} must be a list of strings")
        lists[key] = value
    try:
        select = resolve_codes(lists["select"]) if "select" in table else frozenset(SELECTABLE)
        ignore = resolve_codes(lists["ignore"])
    except ValueError as exc:
        raise LintConfigError(f"{pyproject}: {exc}") from exc
    vocabulary = Vocabulary().extended(
        fallback_names=lists["extra-fallback-names"],
        answer_fields=lists["extra-answer-fields"],
        metric_fields=lists["extra-metric-fields"],
        estimate_fields=lists["extra-estimate-fields"],
    )
    return LintConfig(select, ignore, vocabulary, pyproject)


def has_lint_table(pyproject: Path) -> bool:
    """Does this ``pyproject.toml`` configure sincere lint? (Unreadable files: yes, so the
    error is reported rather than silently skipped.)"""
    try:
        with pyproject.open("rb") as file:
            data = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError):
        return True
    return "lint" in data.get("tool", {}).get("sincere", {})


class ConfigFinder:
    """Finds and caches the configuration of each directory."""

    def __init__(self) -> None:
        self._by_dir: dict[Path, LintConfig] = {}

    def for_file(self, path: Path) -> LintConfig:
        directory = path.resolve().parent
        if directory not in self._by_dir:
            self._by_dir[directory] = self._find(directory)
        return self._by_dir[directory]

    def _find(self, directory: Path) -> LintConfig:
        for candidate in (directory, *directory.parents):
            if candidate in self._by_dir:
                return self._by_dir[candidate]
            pyproject = candidate / PYPROJECT
            if pyproject.is_file() and has_lint_table(pyproject):
                return load_config(pyproject)
        return LintConfig()
