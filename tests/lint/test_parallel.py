"""Checking on every core finds exactly what checking in one process finds, in the same order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sincere_lint import lint_paths
from sincere_lint.pool import MIN_FILES_PER_WORKER
from sincere_lint.runner import python_files

ROOT = Path(__file__).resolve().parents[2]
# Findings and clean files, parse errors included: the corpus, the gateway and the checker.
TREES = [ROOT / "tests" / "lint" / "corpus", ROOT / "src", ROOT / "lint" / "src"]


def test_enough_files_to_start_the_pool() -> None:
    assert len(list(python_files(TREES))) >= MIN_FILES_PER_WORKER * 2


def test_two_processes_find_what_one_finds() -> None:
    serial = lint_paths(TREES, jobs=1)
    parallel = lint_paths(TREES, jobs=2)
    assert serial.findings
    assert parallel.findings == serial.findings
    assert parallel.files == serial.files


def test_the_command_prints_the_same_whatever_the_jobs(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n    pass\n")

    def run(jobs: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sincere_lint", "--no-cache", "-j", jobs, "-f", "json"]
            + [str(p) for p in [*TREES, broken]],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
            check=False,
        )

    one, two = run("1"), run("2")
    assert one.returncode == two.returncode == 1
    assert '"SIN000"' in one.stdout
    assert (two.stdout, two.stderr) == (one.stdout, one.stderr)
