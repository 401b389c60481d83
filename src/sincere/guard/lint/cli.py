"""``sincere lint``: the command. It parses, runs the checker and prints; exit 0, 1 or 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from sincere.guard.lint.config import LintConfigError
from sincere.guard.lint.report import FORMATS, render
from sincere.guard.lint.rules import RULES, resolve_codes, split_codes
from sincere.guard.lint.runner import lint_paths

EXIT_CLEAN = 0
EXIT_FOUND = 1
EXIT_USAGE = 2


def lint(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Files and directories to check; directories are searched for *.py files.",
            metavar="PATH...",
            show_default=False,
        ),
    ] = None,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            metavar="FORMAT",
            help="Output: text (path:line:col: CODE message), json or sarif (SARIF 2.1.0).",
        ),
    ] = "text",
    select: Annotated[
        str | None,
        typer.Option(
            "--select",
            metavar="CODES",
            help="Only these rules: codes or prefixes, comma-separated (SIN001,SIN002). "
            "Replaces the select list of pyproject.toml.",
        ),
    ] = None,
    ignore: Annotated[
        str | None,
        typer.Option(
            "--ignore",
            metavar="CODES",
            help="Skip these rules: codes or prefixes, comma-separated. "
            "Added to the ignore list of pyproject.toml.",
        ),
    ] = None,
    explain: Annotated[
        str | None,
        typer.Option(
            "--explain", metavar="CODE", help="Explain one rule, with a bad and a good example."
        ),
    ] = None,
) -> None:
    """Find failure paths that fabricate a reply, a metric or an estimate.

    Exit status: 0 when nothing is found, 1 when something is, 2 on a usage error.

    Silence one line with `# noqa: CODE`. Configure in pyproject.toml (tool.sincere.lint).
    """
    if explain is not None:
        rule = RULES.get(explain.strip().upper())
        if rule is None:
            _usage_error(f"unknown rule code {explain!r} (known: {', '.join(RULES)})")
        sys.stdout.write(rule.explain())
        raise typer.Exit(EXIT_CLEAN)
    if format not in FORMATS:
        _usage_error(f"unknown format {format!r} (choose from: {', '.join(FORMATS)})")
    if not paths:
        _usage_error("no path given: name the files or directories to check")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        _usage_error(f"no such file or directory: {', '.join(missing)}")
    try:
        selected = resolve_codes(split_codes(select)) if select is not None else None
        ignored = resolve_codes(split_codes(ignore))
        result = lint_paths(paths, select=selected, ignore=ignored)
    except (ValueError, LintConfigError) as exc:
        _usage_error(str(exc))
    sys.stdout.write(render(result.findings, format))
    files = f"{result.files} file{'s' if result.files != 1 else ''}"
    if result.findings:
        count = len(result.findings)
        sys.stderr.write(f"sincere lint: {count} finding{'s' if count != 1 else ''} in {files}\n")
        raise typer.Exit(EXIT_FOUND)
    sys.stderr.write(f"sincere lint: no findings in {files}\n")
    raise typer.Exit(EXIT_CLEAN)


def _usage_error(message: str) -> NoReturn:
    sys.stderr.write(f"sincere lint: error: {message}\n")
    raise typer.Exit(EXIT_USAGE)


if __name__ == "__main__":  # pragma: no cover
    typer.run(lint)
