"""Telemetry and the data agent: what recording costs a chat request, and how fast
``/v1/usage`` answers over 10k, 100k and 1M recorded attempts, on SQLite and PostgreSQL.

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.usage [--requests 2000]
        [--rows 10000 100000 1000000] [--no-postgres]

Part 1, recording on the chat path: the fast upstream (benchmarks/upstream.py) and two
`sincere serve` processes in front of it, one with `[telemetry] enabled = true` (the
default) and one with it off; concurrency 1, non-streaming, rounds that take the targets in
turn with the others paused (benchmarks/overhead.py's method, its load generator). Reported:
p50 and p99 of each, and the p50 added by recording.

Part 2, `/v1/usage`: for each size N, a fresh store (a SQLite file; a PostgreSQL schema of
its own at 127.0.0.1:5432/test, dropped at the end) filled with N attempts of benchmark
traffic spread over 30 days (fixed seed: 50 users, 4 models on 6 deployments, 8 % failed,
a quarter of the requests with a failed attempt before the answer), then `sincere serve` on
it, and `GET /v1/usage` timed 20 times per query: an admin's 30 days of every user by
model, an admin's 24 hours by hour, and one user's own 7 days by deployment. The table is
filled through the product's own writer (`SqlTelemetryStore.write`), in batches.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import create_engine, text

from benchmarks.overhead import (
    HOST,
    Server,
    Servers,
    Target,
    console,
    measure,
    start_sincere,
    start_upstream,
    stopped_on_sigterm,
)
from sincere.backends.sql.database import open_database
from sincere.backends.sql.telemetry import SqlTelemetryStore
from sincere.telemetry import AttemptRow

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DAY_S = 86_400.0
QUERIES = (  # (who, query string)
    ("admin", "window=30d&group_by=model"),
    ("admin", "window=24h&group_by=hour"),
    ("user", "window=7d&group_by=deployment"),
)
TIMES_PER_QUERY = 20
MODELS = {"gpt-a": ("dep-a1", "dep-a2"), "gpt-b": ("dep-b1",), "gpt-c": ("dep-c1", "dep-c2")}
MODELS["gpt-d"] = ("dep-d1",)


def traffic(count: int, now: float, seed: int = 12) -> list[AttemptRow]:
    """``count`` attempts of benchmark traffic over the 30 days before ``now``."""
    rng = random.Random(seed)
    rows: list[AttemptRow] = []
    users = [f"user-{i}" for i in range(50)]
    while len(rows) < count:
        at = now - rng.random() * 30 * DAY_S
        model = rng.choice(list(MODELS))
        user = rng.choice(users)
        request_id = f"req_{uuid.UUID(int=rng.getrandbits(128)).hex}"
        failed_first = rng.random() < 0.25 and len(MODELS[model]) > 1
        failed = rng.random() < 0.08
        deployments = list(MODELS[model])
        attempts = [deployments[0], deployments[1]] if failed_first else [deployments[0]]
        for index, deployment in enumerate(attempts):
            final = index == len(attempts) - 1
            ok = final and not failed
            tokens_in, tokens_out = rng.randint(20, 2000), rng.randint(5, 800)
            rows.append(
                AttemptRow(
                    at=at,
                    request_id=request_id,
                    index=index,
                    user_id=user,
                    tier="standard",
                    surface="http",
                    requested_model=model,
                    model=model,
                    deployment=deployment,
                    outcome="ok" if ok else "upstream_error",
                    final=final,
                    request_outcome="answered" if not failed else "upstream_error",
                    status_code=None if ok else 502,
                    latency_s=rng.uniform(0.2, 3.0),
                    tokens_in=tokens_in if ok else None,
                    tokens_out=tokens_out if ok else None,
                    cost_usd=(tokens_in + 2 * tokens_out) / 1e6 if ok else 0.0,
                    ttft_s=rng.uniform(0.05, 0.8) if ok else None,
                    queue_wait_s=0.0 if final else None,
                    request_latency_s=rng.uniform(0.2, 6.0) if final else None,
                    request_cost_usd=(tokens_in + 2 * tokens_out) / 1e6 if final and ok else None,
                    request_rows=len(attempts) if final else None,
                )
            )
    return rows[:count]


async def fill(url: str, count: int, progress: Progress) -> None:
    store = SqlTelemetryStore(open_database(url))
    rows = traffic(count, time.time())
    task = progress.add_task(f"filling {count:,}", total=count)
    for start in range(0, count, 5000):
        await store.write(rows[start : start + 5000])
        progress.advance(task, min(5000, count - start))


async def time_queries(server: Server, keys: dict[str, str]) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {}
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{server.port}", timeout=600) as client:
        for who, query in QUERIES:
            user = "&user=user-7" if who == "admin" and "deployment" in query else ""
            headers = {"authorization": f"Bearer {keys[who]}"}
            times: list[float] = []
            for _ in range(TIMES_PER_QUERY):
                started = time.perf_counter()
                response = await client.get(f"/v1/usage?{query}{user}", headers=headers)
                times.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(
                        f"/v1/usage?{query}: {response.status_code} {response.text}\n"
                        f"{server.tail()}"
                    )
            timings[f"{who}: {query}"] = times
    return timings


def usage_keys(config: Path, env: dict[str, str]) -> dict[str, str]:
    """An admin key, and a key of the benchmark traffic's user-7."""

    def create(user: str, role: str) -> str:
        command = [sys.executable, "-m", "sincere.cli", "keys", "create", "--config", str(config)]
        command += ["--user", user, "--tier", "enterprise", "--role", role]
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, **env}, check=True
        )
        return done.stdout.strip().splitlines()[-1]

    return {"admin": create("ops", "admin"), "user": create("user-7", "user")}


async def part_usage(args: argparse.Namespace, servers: Servers, progress: Progress) -> str:
    lines = [
        "| store | attempts | query | p50 ms | p95 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    upstream = start_upstream(servers)
    stores = ["sqlite"] + ([] if args.no_postgres else ["postgresql"])
    for store in stores:
        for count in args.rows:
            name = f"{store}-{count}"
            env: dict[str, str] = {}
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            if store == "sqlite":
                url = f"sqlite:///{servers.workdir / f'{name}-data' / 'sincere.db'}"
            else:
                with create_engine(POSTGRES).begin() as conn:
                    conn.execute(text(f'CREATE SCHEMA "{schema}"'))
                url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
                env["SINCERE_DATABASE_URL"] = url
            try:
                await fill(url, count, progress)
                config = servers.workdir / f"{name}.toml"
                server, _ = start_sincere(servers, upstream, name, env=env)
                data_env = {"SINCERE_DATA_DIR": str(servers.workdir / f"{name}-data"), **env}
                keys = usage_keys(config, data_env)
                timings = await time_queries(server, keys)
                server.stop()
            finally:
                if store == "postgresql":
                    with create_engine(POSTGRES).begin() as conn:
                        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            for query, times in timings.items():
                ordered = sorted(times)
                p50 = statistics.median(ordered) * 1000
                p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)] * 1000
                lines.append(
                    f"| {store} | {count:,} | {query} | {p50:.1f} | {p95:.1f} | "
                    f"{ordered[-1] * 1000:.1f} |"
                )
    return "\n".join(lines)


async def part_recording(args: argparse.Namespace, servers: Servers, progress: Progress) -> str:
    upstream = start_upstream(servers)
    on, on_key = start_sincere(servers, upstream, "recording")
    off, off_key = start_sincere(
        servers, upstream, "not-recording", extra="\n[telemetry]\nenabled = false\n"
    )
    targets = [
        Target("direct", upstream, None),
        Target("recording", on, on_key),
        Target("not recording", off, off_key),
    ]
    phases = await measure(targets, upstream, 1, args, progress)
    by_name = {p.target.name: p for p in phases}
    lines = [
        "| target (c = 1) | requests | p50 ms | p99 ms | p50 added over direct ms |",
        "|---|---|---|---|---|",
    ]
    direct = by_name["direct"].p(0.5)
    for phase in phases:
        p50 = phase.p(0.5)
        lines.append(
            f"| {phase.target.name} | {len(phase.latencies):,} | {p50:.3f} | "
            f"{phase.p(0.99):.3f} | {p50 - direct:.3f} |"
        )
    added = by_name["recording"].p(0.5) - by_name["not recording"].p(0.5)
    lines.append(f"\nrecording adds {added:+.3f} ms at p50 (recording − not recording)")
    return "\n".join(lines)


async def bench(args: argparse.Namespace, servers: Servers) -> str:
    progress = Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        recording = await part_recording(args, servers, progress)
        usage = "" if args.no_usage else await part_usage(args, servers, progress)
    return f"{recording}\n\n{usage}".strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.usage",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=2000, help="measured chat requests")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests per target")
    parser.add_argument("--rounds", type=int, default=10, help="rounds taking the targets in turn")
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="store sizes"
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--no-usage", action="store_true", help="part 1 only")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sincere-usage-bench-"))
    servers = Servers(workdir)
    try:
        with stopped_on_sigterm():
            result = asyncio.run(bench(args, servers))
        console.print(result)
    finally:
        servers.stop_all()
        with contextlib.suppress(OSError):
            for path in sorted(workdir.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            workdir.rmdir()


if __name__ == "__main__":
    main()
