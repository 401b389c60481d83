"""``sincere-lint`` (and ``sincere lint``): the command. It parses, runs the checker and prints;
exit 0, 1 or 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from sincere_lint.cache import DEFAULT_DIR, ENV_DIR, FindingsCache
from sincere_lint.config import LintConfigError
from sincere_lint.pool import usable_cpus
from sincere_lint.report import FORMATS, render
from sincere_lint.rules import RULES, resolve_codes, split_codes
from sincere_lint.runner import lint_paths

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
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            metavar="N",
            min=1,
            help="Check files in N processes. Default: one per CPU.",
            show_default=False,
        ),
    ] = None,
    no_cache: Annotated[
        bool,
        typer.Option("--no-cache", help="Check every file, neither reading nor writing the cache."),
    ] = False,
    cache_dir: Annotated[
        Path,
        typer.Option(
            "--cache-dir",
            metavar="DIR",
            envvar=ENV_DIR,
            help="Where the findings of unchanged files are kept.",
        ),
    ] = Path(DEFAULT_DIR),
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

    Unchanged files are not checked again: their findings are kept in the cache directory.
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
        cache = None if no_cache else FindingsCache(cache_dir)
        result = lint_paths(
            paths, select=selected, ignore=ignored, jobs=jobs or usable_cpus(), cache=cache
        )
    except (ValueError, LintConfigError) as exc:
        _usage_error(str(exc))
    if cache is not None:
        try:
            cache.save()
        except OSError as exc:  # the findings stand; only the next run is slower
            sys.stderr.write(f"sincere lint: warning: cannot write the cache: {exc}\n")
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


def main() -> None:
    """The ``sincere-lint`` console script."""
    typer.run(lint)


if __name__ == "__main__":  # pragma: no cover
    main()
