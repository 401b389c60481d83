"""What the checker said about each file, kept between runs so unchanged files are skipped.

Like ruff's ``.ruff_cache``: one directory (``.sincere_lint_cache`` in the working directory
unless told otherwise) holding ``findings.json``, a ``.gitignore`` of ``*`` so that it is
never committed, and a ``CACHEDIR.TAG`` for backup tools. For each file, by absolute path,
it keeps a digest of what was checked (the file's bytes and the vocabulary in force) and
the file's diagnostics before ``--select``/``--ignore`` are applied. The whole file is
ignored when the checker changes: its version or any byte of its source.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sincere_lint import __version__
from sincere_lint.visitor import Diagnostic
from sincere_lint.vocabulary import Vocabulary

DEFAULT_DIR = ".sincere_lint_cache"
ENV_DIR = "SINCERE_LINT_CACHE_DIR"
_FINDINGS = "findings.json"
_CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by sincere-lint.\n"
    "# For information about cache directory tags, see https://bford.info/cachedir/\n"
)


def checker_fingerprint() -> str:
    """The version and a digest of the checker's own source: a new rule is a new checker."""
    digest = hashlib.sha256(__version__.encode())
    for module in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(module.name.encode() + b"\0" + module.read_bytes())
    return digest.hexdigest()


def vocabulary_fingerprint(vocabulary: Vocabulary) -> bytes:
    """The word lists in a stable order (a frozenset's order changes between processes)."""
    lists = {f.name: sorted(getattr(vocabulary, f.name)) for f in dataclasses.fields(vocabulary)}
    return json.dumps(lists, sort_keys=True).encode()


def digest(data: bytes, vocabulary: bytes) -> str:
    """What the diagnostics of one file depend on, besides the checker."""
    return hashlib.sha256(vocabulary + b"\0" + data).hexdigest()


class FindingsCache:
    """The diagnostics of files already checked, loaded from and saved to one directory."""

    def __init__(self, directory: Path, checker: str | None = None) -> None:
        self.directory = directory
        self.checker = checker or checker_fingerprint()
        self._entries = self._load()
        self._added: dict[str, list[Any]] = {}

    def get(self, path: str, key: str) -> list[Diagnostic] | None:
        """The diagnostics of this file if it was checked with this digest, else None."""
        entry = self._entries.get(path)
        if entry is None or entry[0] != key:
            return None
        return [Diagnostic(*row) for row in entry[1]]

    def put(self, path: str, key: str, diagnostics: list[Diagnostic]) -> None:
        rows = [[d.line, d.column, d.code, d.message] for d in diagnostics]
        self._entries[path] = self._added[path] = [key, rows]

    def save(self) -> None:
        """Write what this run added, merged with what other runs wrote meanwhile.

        Raises OSError when the directory cannot be written.
        """
        if not self._added:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, text in ((".gitignore", "*\n"), ("CACHEDIR.TAG", _CACHEDIR_TAG)):
            if not (self.directory / name).exists():
                (self.directory / name).write_text(text, encoding="utf-8")
        entries = {**self._load(), **self._added}
        data = json.dumps({"checker": self.checker, "files": entries}, ensure_ascii=False)
        # Written whole, then renamed: a run reading it meanwhile sees the old or the new.
        temporary = self.directory / f".{_FINDINGS}.{os.getpid()}.tmp"
        try:
            temporary.write_text(data, encoding="utf-8")
            os.replace(temporary, self.directory / _FINDINGS)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def _load(self) -> dict[str, list[Any]]:
        """The entries on disk; none when there is no cache, it is unreadable, or it was
        written by another checker."""
        try:
            with (self.directory / _FINDINGS).open(encoding="utf-8") as file:
                data = json.load(file)
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("checker") != self.checker:
            return {}
        files = data.get("files")
        return files if isinstance(files, dict) else {}
