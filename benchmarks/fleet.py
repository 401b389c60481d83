"""A fleet against one process: sincere on Redis and PostgreSQL, in one run.

    .venv/bin/python -m benchmarks.fleet [--requests 2000] [--concurrency 1 64]
        [--events 300] [--redis URL] [--postgres URL]

Starts, each in its own process group on 127.0.0.1: the fast upstream of
benchmarks/overhead.py, `sincere serve` alone (in memory, SQLite: today's default),
`sincere serve --workers 2` with `[cluster] redis_url` and a PostgreSQL store, and two
more `sincere serve` processes on two ports on that Redis and store. Reported, with the
raw keep-alive client and interleaved rounds of overhead.py (the gateways not measured
paused with SIGSTOP):

- requests per second at each concurrency, one process against `--workers 2`
  (target at concurrency 64: at least 1.6 times one process on 2 cores);
- the latency `--workers 2` adds at p50 over calling the upstream directly at
  concurrency 1 (target: at most 1 ms);
- the CPU time each request cost the gateway (all its processes), the Redis server (when
  it runs on this host), the upstream and the client, and from them the ceiling the host's
  cores put on any fleet: one process's work spread on every core, with nothing for Redis;
- the event delay across processes: a user's /v1/events socket on one process, the
  user's requests sent to the other, one at a time; the delay of each event is the time
  the socket received it minus its `timestamp` (set by the emitting process, on the same
  host clock). p50 and p99 (target p99: at most 50 ms).

It needs the Redis backends (sincere.backends.redis.events, .limits, .breakers) and a
Redis and a PostgreSQL to use; it uses its own key prefix and schema and removes both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import redis
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import create_engine, text
from websockets.asyncio.client import connect

from benchmarks.overhead import (
    HOST,
    SINCERE_CONFIG,
    TICKS,
    VENV_BIN,
    Connection,
    Phase,
    Server,
    Servers,
    Target,
    build_request,
    console,
    create_key,
    free_port,
    measure,
    paused,
    start_sincere,
    start_upstream,
    stopped_on_sigterm,
    versions,
    wait_ready,
)
from benchmarks.upstream import MODEL

REDIS_BACKENDS = ("events", "limits", "breakers")
CORES = os.cpu_count() or 1


def missing_backends() -> list[str]:
    return [
        f"sincere.backends.redis.{name}"
        for name in REDIS_BACKENDS
        if importlib.util.find_spec(f"sincere.backends.redis.{name}") is None
    ]


class Shared:
    """The fleet's Redis prefix and PostgreSQL schema, made for this run and removed after."""

    def __init__(self, redis_url: str, postgres: str) -> None:
        self.name = f"bench_{uuid.uuid4().hex[:12]}"
        self.redis_url = redis_url
        self.postgres = postgres
        self.database_url = f"{postgres}?options=-csearch_path%3D{self.name}"

    def __enter__(self) -> Shared:
        redis.Redis.from_url(self.redis_url).ping()  # fail early, and say which part is down
        with create_engine(self.postgres).begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.name}"'))
        return self

    def __exit__(self, *exc: object) -> None:
        with create_engine(self.postgres).begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE'))
        client = redis.Redis.from_url(self.redis_url)
        for key in client.scan_iter(match=f"{self.name}:*", count=1000):
            client.delete(key)
        client.close()


def start_fleet_member(
    servers: Servers, upstream: Server, shared: Shared, name: str, workers: int, key: str | None
) -> tuple[Server, str]:
    """A `sincere serve` on the shared Redis and store (a key made for the first one)."""
    config = servers.workdir / "fleet.toml"
    config.write_text(
        SINCERE_CONFIG.format(base_url=f"http://{HOST}:{upstream.port}/v1", model=MODEL)
        + f'\n[cluster]\nredis_url = "{shared.redis_url}"\nkey_prefix = "{shared.name}:"\n'
    )
    env = {
        "SINCERE_DATA_DIR": str(servers.workdir / f"{name}-data"),
        "SINCERE_DATABASE_URL": shared.database_url,
        "BENCH_UPSTREAM_KEY": "dummy",
    }
    command = [str(VENV_BIN / "sincere")]
    if key is None:
        key = create_key(command, config, env)
    port = free_port()
    args = [*command, "serve", "--config", str(config), "--port", str(port)]
    server = servers.start(name, port, [*args, "--workers", str(workers)], env)
    wait_ready(server, "/v1/models", {"Authorization": f"Bearer {key}"}, 120)
    return server, key


async def event_delays(emitter: Server, listener: Server, key: str, count: int) -> list[float]:
    """Seconds from each event's emission (on ``emitter``) to its arrival on ``listener``."""
    delays: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}
    async with connect(f"ws://{HOST}:{listener.port}/v1/events", additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        connection = Connection(emitter.port, build_request(emitter.port, key))
        for _ in range(count):
            await connection.call()
            ended = False
            while not ended:  # every event of this request, up to its terminal one
                async with asyncio.timeout(10):
                    message = json.loads(await ws.recv())
                received = time.time()
                if message["type"] != "event":
                    continue
                event = message["event"]
                delays.append(received - datetime.fromisoformat(event["timestamp"]).timestamp())
                ended = event["type"] in ("request_completed", "request_failed")
        await connection.close()
    return delays


def _local_redis_pid(url: str) -> int | None:
    """The pid of the redis-server this host runs for ``url`` (None: not local, or unseen)."""
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
        return None
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() == "redis-server":
                return int(comm.parent.name)
    return None


def _cpu_s(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(
    phases: list[Phase],
    delays: list[float],
    redis_ms: dict[int, str],
    args: argparse.Namespace,
) -> str:
    by_key = {(p.target.name, p.concurrency): p for p in phases}
    lines = [
        versions(),
        f"{args.requests} measured requests per target and concurrency, in {args.rounds} "
        "interleaved rounds (the gateways not measured paused)",
        "",
        "| target | concurrency | requests/s | p50 ms | p99 ms | added p50 ms "
        "| CPU ms/request: gateway | Redis | upstream | client |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in args.concurrency:
        direct = by_key[("direct", c)]
        for name in ("direct", "one process", "--workers 2 (Redis)"):
            p = by_key[(name, c)]
            added = "" if p is direct else f"{p.p(0.5) - direct.p(0.5):+.2f}"
            gateway = "" if p is direct else p.per_request_ms(p.cpu_s)
            in_redis = redis_ms.get(c, "n/a") if name.endswith("(Redis)") else ""
            lines.append(
                f"| {name} | {c} | {p.rps:,.0f} | {p.p(0.5):.2f} | {p.p(0.99):.2f} | {added} "
                f"| {gateway} | {in_redis} | {p.per_request_ms(p.upstream_cpu_s)} "
                f"| {p.per_request_ms(p.client_cpu_s)} |"
            )
    lines.append("")
    high, low = max(args.concurrency), min(args.concurrency)
    one, two = by_key[("one process", high)], by_key[("--workers 2 (Redis)", high)]
    lines.append(
        f"concurrency {high}: --workers 2 serves {two.rps / one.rps:.2f}× one process "
        "(target ≥ 1.6×)"
    )
    if one.cpu_s and one.upstream_cpu_s is not None:
        # The gateway, the upstream and the client share the host's cores: even a fleet
        # whose coordination cost nothing could not serve more than the cores allow.
        n = len(one.latencies)
        rest = (one.upstream_cpu_s + one.client_cpu_s) / n
        free = CORES / (one.cpu_s / n + rest)  # one process's work, spread on every core
        lines.append(
            f"  the ceiling on {CORES} cores shared with the upstream and the client, from "
            f"the CPU each request cost them: {free:,.0f} requests/s, "
            f"{free / one.rps:.2f}× one process, for a fleet whose Redis cost nothing"
        )
    added = by_key[("--workers 2 (Redis)", low)].p(0.5) - by_key[("direct", low)].p(0.5)
    lines.append(
        f"concurrency {low}: --workers 2 with Redis adds {added:.2f} ms at p50 (target ≤ 1 ms)"
    )
    lines.append(
        f"event delay across processes ({len(delays)} events): "
        f"p50 {statistics.median(delays) * 1000:.2f} ms, "
        f"p99 {quantile(delays, 0.99) * 1000:.2f} ms (target p99 ≤ 50 ms)"
    )
    return "\n".join(lines)


async def bench(args: argparse.Namespace, servers: Servers, shared: Shared) -> str:
    with console.status("starting the upstream and the gateways…"):
        upstream = start_upstream(servers)
        one, one_key = start_sincere(servers, upstream, "one")
        workers, key = start_fleet_member(servers, upstream, shared, "workers2", 2, None)
        a, _ = start_fleet_member(servers, upstream, shared, "fleet-a", 1, key)
        b, _ = start_fleet_member(servers, upstream, shared, "fleet-b", 1, key)
    targets = [
        Target("direct", upstream, None),
        Target("one process", one, one_key),
        Target("--workers 2 (Redis)", workers, key),
    ]
    progress = Progress(
        TextColumn("{task.description:<32}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    phases: list[Phase] = []
    redis_ms: dict[int, str] = {}  # the Redis server's CPU per request of the fleet
    redis_pid = _local_redis_pid(args.redis)
    with progress, paused([a, b]):
        for concurrency in args.concurrency:
            before = _cpu_s(redis_pid)
            measured = await measure(targets, upstream, concurrency, args, progress)
            after = _cpu_s(redis_pid)
            phases += measured
            if before is not None and after is not None:
                # Only the fleet's requests reach Redis: its warm-up and measured ones.
                warmup = args.warmup if args.warmup is not None else max(50, args.requests // 10)
                redis_ms[concurrency] = f"{(after - before) * 1000 / (warmup + args.requests):.3f}"
    with console.status("measuring the event delay across processes…"), paused([one, workers]):
        delays = await event_delays(a, b, key, args.events)
    return report(phases, delays, redis_ms, args)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fleet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per phase")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests per phase")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per phase")
    parser.add_argument("--events", type=int, default=300, help="requests for the event delay")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the fleet's Redis")
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="the fleet's PostgreSQL database (a schema of its own is made in it)",
    )
    args = parser.parse_args()
    if missing := missing_backends():
        sys.exit(
            "benchmarks/fleet.py measures the fleet on its Redis backends, and these are not "
            f"installed: {', '.join(missing)}. Run it from a checkout that has them."
        )
    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    workdir = Path(tempfile.mkdtemp(prefix="sincere-fleet-"))
    servers = Servers(workdir)
    keep = False
    try:
        with stopped_on_sigterm(), Shared(args.redis, args.postgres) as shared:
            try:
                run = uvloop.run if uvloop is not None else asyncio.run
                table = run(bench(args, servers, shared))
            finally:
                servers.stop_all()  # before the schema and the keys go
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise SystemExit(130) from None
    except BaseException:
        keep = True
        console.print(f"the servers' logs are kept in {workdir}")
        raise
    finally:
        servers.stop_all()
        if not keep:
            with contextlib.suppress(OSError):
                shutil.rmtree(workdir)
    print(f"\n{table}")


if __name__ == "__main__":
    main()
