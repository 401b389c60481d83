"""How long ``sincere-lint`` takes on a real tree: LiteLLM's package, about 3,100 files.

    .venv/bin/python -m benchmarks.lint_speed [--repeat 3] [--source DIR]

Without ``--source`` it downloads LiteLLM's wheel (``pip download litellm==VERSION
--no-deps``, nothing installed) and unpacks it into the temporary directory once. Each run
is the real command in its own process, ``python -m sincere_lint -f json litellm``, from the
unpacked directory:

- serial, no cache (``-j 1 --no-cache``): how the checker ran before it used every core;
- parallel, no cache: every core;
- cold: every core, with an empty cache directory (checks everything and writes the cache);
- warm: the same cache directory again, nothing changed (checks nothing).

The cold and warm runs are measured serially (``-j 1``) too. Every run's output must be
the same as the serial uncached one's, or the benchmark fails. The table gives the median
wall time, and the CPU time (user + system) of the command and its workers, per setting;
the load average before and after says how busy the machine was.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from sincere_lint import __version__
from sincere_lint.pool import usable_cpus
from sincere_lint.runner import python_files

LITELLM = "1.110.2"


@dataclass(frozen=True, slots=True)
class Setting:
    """One way of running the command."""

    name: str
    jobs: int
    cache: str  # "none", "cold" or "warm"


@dataclass(slots=True)
class Timings:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def litellm_source(version: str) -> Path:
    """LiteLLM's package directory, unpacked from its wheel (downloaded once)."""
    root = Path(tempfile.gettempdir()) / f"sincere-lint-bench-litellm-{version}"
    package = root / "src" / "litellm"
    if package.is_dir():
        return package
    wheels = root / "wheel"
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", wheels]
    subprocess.run([*download, f"litellm=={version}"], check=True)
    wheel = next(wheels.glob("litellm-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(root / "src")
    return package


def run_once(source: Path, setting: Setting, cache_dir: Path) -> tuple[float, float, str]:
    """Wall time, CPU time (the command and its workers) and standard output of one run."""
    if setting.cache == "cold":
        shutil.rmtree(cache_dir, ignore_errors=True)
    cache = ["--no-cache"] if setting.cache == "none" else ["--cache-dir", str(cache_dir)]
    command = [sys.executable, "-m", "sincere_lint", "-f", "json", "-j", str(setting.jobs)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [*command, *cache, source.name],
        cwd=source.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each setting")
    parser.add_argument("--source", type=Path, help="a package directory instead of LiteLLM's")
    args = parser.parse_args()
    console = Console()
    source = (args.source or litellm_source(LITELLM)).resolve()
    files = sum(1 for _ in python_files([source]))
    cores = usable_cpus()
    settings = [
        Setting("serial, no cache", 1, "none"),
        Setting("parallel, no cache", cores, "none"),
        Setting("serial, cold cache", 1, "cold"),
        Setting("serial, warm cache", 1, "warm"),
        Setting("parallel, cold cache", cores, "cold"),
        Setting("parallel, warm cache", cores, "warm"),
    ]
    timings = {setting: Timings() for setting in settings}
    expected: str | None = None
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch, Progress(console=console) as progress:
        task = progress.add_task("sincere-lint", total=args.repeat * len(settings))
        for _ in range(args.repeat):
            for setting in settings:
                progress.update(task, description=setting.name)
                wall, cpu, output = run_once(source, setting, Path(scratch) / "cache")
                expected = output if expected is None else expected
                if output != expected:
                    raise SystemExit(f"{setting.name}: the findings differ from the first run's")
                timings[setting].wall.append(wall)
                timings[setting].cpu.append(cpu)
                progress.advance(task)
    load_after = os.getloadavg()

    table = Table(title=f"sincere-lint {__version__} on {source.name} ({files:,} files)")
    table.add_column("setting")
    table.add_column("jobs", justify="right")
    table.add_column("wall, median (min–max)", justify="right")
    table.add_column("CPU, median", justify="right")
    for setting, measured in timings.items():
        table.add_row(
            setting.name,
            str(setting.jobs),
            f"{statistics.median(measured.wall):.2f} s "
            f"({min(measured.wall):.2f}–{max(measured.wall):.2f})",
            f"{statistics.median(measured.cpu):.2f} s",
        )
    console.print(table)
    console.print(
        f"{args.repeat} runs each; {cores} usable CPUs; Python {platform.python_version()}; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
        "every run printed the same findings."
    )


if __name__ == "__main__":
    main()
