"""``pip install ./lint`` alone: the checker without the gateway, finding what the gateway's
``sincere lint`` finds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = "tests/lint/corpus"
# The gateway's runtime dependencies that a team linting a folder must not have to install.
GATEWAY_ONLY = {"llama-cpp-python", "aiohttp", "fastapi", "uvicorn", "sqlalchemy", "sincere"}


def _run(*command: str | Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with ``pip install ./lint`` and nothing else."""
    path = tmp_path_factory.mktemp("lint-alone") / "venv"
    _run(sys.executable, "-m", "venv", path)
    _run(path / "bin" / "python", "-m", "pip", "install", "--quiet", ROOT / "lint", env=_outside())
    return path


def _outside() -> dict[str, str]:
    """This environment without the paths that make the working tree importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_installing_the_checker_alone_brings_none_of_the_gateways_dependencies(
    venv: Path,
) -> None:
    listing = _run(
        venv / "bin" / "python",
        "-c",
        "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in "
        "m.distributions()))",
        env=_outside(),
    )
    installed = {_normalized(name) for name in listing.split()}
    assert {"sincere-lint", "typer"} <= installed
    assert installed & GATEWAY_ONLY == set()


def test_the_console_script_finds_what_sincere_lint_finds(venv: Path) -> None:
    alone = _run(venv / "bin" / "sincere-lint", "--no-cache", "-f", "json", CORPUS, env=_outside())
    gateway = _run(sys.executable, "-m", "sincere.cli", "lint", "--no-cache", "-f", "json", CORPUS)
    findings = json.loads(alone)
    assert len(findings) >= 60
    assert findings == json.loads(gateway)
