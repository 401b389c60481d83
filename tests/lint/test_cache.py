"""The findings cache: a warm run says what a cold one says, and nothing stale survives."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from sincere_lint import lint_paths
from sincere_lint.cache import FindingsCache

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "lint" / "corpus"

CANNED = """\
def answer(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return "Sorry, something went wrong while answering your question."
"""
OFFLINE = """\
def answer(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return offline_reply(prompt)
"""


def _project(tmp_path: Path) -> Path:
    """A copy of the corpus with a pyproject.toml of its own, and two files of ours."""
    project = tmp_path / "project"
    shutil.copytree(CORPUS, project / "corpus")
    (project / "pyproject.toml").write_text("[tool.sincere.lint]\nignore = []\n")
    (project / "canned.py").write_text(CANNED)
    (project / "offline.py").write_text(OFFLINE)
    return project


def _cached_run(
    project: Path, cache_dir: Path, select: frozenset[str] | None = None
) -> tuple[list[str], int]:
    """The findings (as text) of a run that reads and writes the cache, and how many files
    the cache answered for."""
    cache = FindingsCache(cache_dir)
    result = lint_paths([project], select=select, cache=cache)
    cache.save()
    return [str(f) for f in result.findings], result.cached


def _uncached(project: Path) -> list[str]:
    return [str(f) for f in lint_paths([project]).findings]


def test_a_warm_run_finds_what_an_uncached_run_finds_without_checking_again(
    tmp_path: Path,
) -> None:
    project, cache_dir = _project(tmp_path), tmp_path / "cache"
    expected = _uncached(project)
    assert any("SIN001" in line for line in expected)
    cold, cached = _cached_run(project, cache_dir)
    assert (cold, cached) == (expected, 0)
    warm, cached = _cached_run(project, cache_dir)
    files = lint_paths([project]).files
    assert (warm, cached) == (expected, files)


def test_a_changed_file_is_checked_again(tmp_path: Path) -> None:
    project, cache_dir = _project(tmp_path), tmp_path / "cache"
    before, _ = _cached_run(project, cache_dir)
    assert any("canned.py:5:" in line for line in before)
    (project / "canned.py").write_text(CANNED.replace('return "Sorry', 'raise  # "Sorry'))
    warm, cached = _cached_run(project, cache_dir)
    assert warm == _uncached(project)
    assert not any("canned.py:" in line for line in warm)
    assert cached == lint_paths([project]).files - 1


def test_a_changed_configuration_invalidates_the_files_it_applies_to(tmp_path: Path) -> None:
    project, cache_dir = _project(tmp_path), tmp_path / "cache"
    before, _ = _cached_run(project, cache_dir)
    assert not any("offline.py" in line for line in before)
    (project / "pyproject.toml").write_text(
        '[tool.sincere.lint]\nextra-fallback-names = ["offline_reply"]\n'
    )
    after, cached = _cached_run(project, cache_dir)
    assert after == _uncached(project)
    assert any("offline.py" in line and "SIN003" in line for line in after)
    assert cached == 0


def test_the_cache_keeps_every_rule_so_a_later_selection_is_not_stale(tmp_path: Path) -> None:
    project, cache_dir = _project(tmp_path), tmp_path / "cache"
    only_sin002, _ = _cached_run(project, cache_dir, select=frozenset({"SIN002"}))
    assert only_sin002
    assert all(" SIN002 " in line for line in only_sin002)
    every_rule, cached = _cached_run(project, cache_dir)
    assert every_rule == _uncached(project)
    assert cached == lint_paths([project]).files


def test_a_cache_written_by_another_checker_or_damaged_is_ignored(tmp_path: Path) -> None:
    project, cache_dir = _project(tmp_path), tmp_path / "cache"
    cache = FindingsCache(cache_dir, checker="an older sincere-lint")
    lint_paths([project], cache=cache)
    cache.save()
    findings, cached = _cached_run(project, cache_dir)
    assert (findings, cached) == (_uncached(project), 0)
    (cache_dir / "findings.json").write_text('{"checker": "trunc')
    findings, cached = _cached_run(project, cache_dir)
    assert (findings, cached) == (_uncached(project), 0)


def test_the_command_keeps_its_cache_in_an_ignored_directory_unless_told_not_to(
    tmp_path: Path,
) -> None:
    (tmp_path / "canned.py").write_text(CANNED)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sincere_lint", *args, "canned.py"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )

    uncached = run("--no-cache")
    assert uncached.returncode == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canned.py"]
    cold, warm = run(), run()
    assert cold.stdout == warm.stdout == uncached.stdout
    assert cold.stderr == warm.stderr == uncached.stderr
    cache_dir = tmp_path / ".sincere_lint_cache"
    assert (cache_dir / ".gitignore").read_text() == "*\n"
    assert (cache_dir / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172")
    assert (cache_dir / "findings.json").is_file()
    elsewhere = run("--cache-dir", "elsewhere")
    assert elsewhere.stdout == uncached.stdout
    assert (tmp_path / "elsewhere" / "findings.json").is_file()
