"""Admission queues under a sustained overload: waits per tier, fair shares, estimate error.

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.queue [--capacity 8] [--multiple 3]
        [--seconds 40] [--warmup 5] [--delay-ms 100] [--jitter-ms 20]

Starts, each in its own process on 127.0.0.1: the fast upstream (benchmarks/upstream.py)
holding every completion for a service time drawn uniformly from 80-120 ms, and the real
gateway (`sincere serve` from this checkout's ``src/``), model `gpt` on one deployment with
``max_concurrency = C`` (``--capacity``), tier limits so generous that only the queue
decides (10,000,000 requests a minute, 1,000 at once), ``max_queue_wait_s = 60`` for every
tier, ``queue_aging_s`` as shipped (10 s), and no retries.

The load is **closed-loop**: each user keeps a fixed number of requests outstanding (a new
one as soon as one ends, no think time), ``--multiple`` x C of them in all (3 x C: C served,
2 x C waiting, all the time). An open loop (Poisson arrivals at three times the service
rate) has no steady state: its queue grows by two capacities' worth every service time
until requests time out, so its waits would be set by the run's length and the tier's
``max_queue_wait_s``, not by the queue. A closed loop keeps the overload constant, and every
user always has work there (it is backlogged for the whole run), so its fair share is plain:
an equal split of what its tier received. The mix for C = 8: one enterprise user and two
standard users with one request each (their tiers go first, so they hold about 3 of the 8
slots: about 10 % and 30 % of capacity), and four free users with the rest: three with 3
requests each and one heavy user with 12 (57 % of the free tier's requests, where fair
queueing should give it 25 % of the free tier's service). For C = 4 (``--capacity 4``):
one enterprise and one standard user, three free users with one request each (sequential
clients, the commonest kind) and the heavy one with 7.

Each user holds the ``/v1/events`` WebSocket (its key in a first ``auth`` message); every
request sends its own ``x-request-id``, so its ``request_queued`` events (position and the
announced wait, p50 and p90) and its ``request_dequeued`` event are matched to it. For each
request: tier, user, the ``x-sincere-queue-wait-ms`` the gateway answered, the end-to-end
latency, the first announced estimate. The first ``--warmup`` seconds are not measured; then
the requests sent within ``--seconds`` are, and the load stays on until the last of them
has ended (so that none of them sees a queue that drains).

Reported: per tier, requests, queue wait p50 / p90 / p99 / max, timeouts (503
``queue_timeout``) and other errors; per user, the slot time it received (each answered
request's latency less its queue wait, clipped to the measured window) as a share of its
tier's, against the fair share; the estimate's error: the median absolute error of the
first announced p50 against the wait that followed, its median signed error, the share of
waits within the announced p90, and the announcements with ``estimate_known: false``.
Every process started here is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from benchmarks.overhead import (
    HOST,
    PROMPT,
    Server,
    Servers,
    free_port,
    stopped_on_sigterm,
    upstream_process,
    wait_ready,
)
from benchmarks.upstream import ANSWER, MODEL
from sincere.config import load_settings
from sincere.runtime import open_key_store

SOURCE = Path(__file__).resolve().parents[1] / "src"  # the gateway run is this checkout's
TIERS = ("enterprise", "standard", "free")
console = Console(highlight=False)

CONFIG = """\
[defaults]
timeout_s = {timeout_s}
max_retries = 0
queue_aging_s = {aging_s}

[server]
event_buffer = 8192

[tiers.free]
requests_per_minute = 10000000
concurrent_requests = 1000
max_queue_wait_s = {max_wait_s}

[tiers.standard]
requests_per_minute = 10000000
concurrent_requests = 1000
max_queue_wait_s = {max_wait_s}

[tiers.enterprise]
requests_per_minute = 10000000
concurrent_requests = 1000
max_queue_wait_s = {max_wait_s}

[[models]]
name = "gpt"
deployments = ["upstream"]

[[deployments]]
name = "upstream"
provider = "openai"
base_url = "{base_url}"
model = "{model}"
api_key_env = "BENCH_UPSTREAM_KEY"
max_concurrency = {capacity}
"""


# The users


@dataclass(frozen=True)
class User:
    name: str
    tier: str
    outstanding: int  # requests it keeps in flight


def mix(capacity: int, multiple: float) -> list[User]:
    """``multiple`` x ``capacity`` requests outstanding: enterprise and standard users with
    one each (about 10 % and 30 % of the slots), the rest from four free users, the last of
    them heavy (its tier's other users keep a sixth of the free requests each)."""
    total = max(round(multiple * capacity), 6)
    users = [User(f"ent-{i}", "enterprise", 1) for i in range(max(1, round(0.1 * capacity)))]
    users += [User(f"std-{i}", "standard", 1) for i in range(max(1, round(0.3 * capacity)))]
    free = total - len(users)
    each = max(1, free // 6)
    users += [User(f"free-{i}", "free", each) for i in range(3)]
    users.append(User("free-heavy", "free", max(1, free - 3 * each)))
    return users


# What was measured


@dataclass
class Request:
    rid: str
    user: User
    sent: float  # time.monotonic()
    ended: float = 0.0
    status: int = 0
    outcome: str = "pending"  # answer, an error code, or what broke
    wait_ms: float | None = None  # x-sincere-queue-wait-ms (answers)
    body_wait_ms: float | None = None  # sincere.queue_wait_ms in the JSON body
    measured: bool = False

    @property
    def slot(self) -> tuple[float, float] | None:
        """When it held a slot, as the client saw it: after its queue wait, to its end."""
        if self.outcome != "answer" or self.wait_ms is None:
            return None
        return self.sent + self.wait_ms / 1000, self.ended


@dataclass
class Announced:
    """What a request's event stream told its user."""

    first: dict[str, Any] | None = None  # the first request_queued event's data
    queued: int = 0  # request_queued events
    unknown: int = 0  # of them with estimate_known false
    waited_ms: float | None = None  # request_dequeued


@dataclass
class Run:
    users: list[User]
    requests: list[Request] = field(default_factory=list)
    events: dict[str, Announced] = field(default_factory=lambda: defaultdict(Announced))
    window: tuple[float, float] = (0.0, 0.0)
    socket_breaks: Counter[str] = field(default_factory=Counter)
    gateway_cpu_s: float | None = None


# Load


async def worker(
    run: Run,
    user: User,
    index: int,
    session: aiohttp.ClientSession,
    url: str,
    key: str,
    stop: asyncio.Event,
    tick: Any,
) -> None:
    """One of the user's outstanding requests, sent again as soon as it ends."""
    n = 0
    while not stop.is_set():
        n += 1
        rid = f"qb-{user.name}-{index}-{n}"
        request = Request(rid, user, time.monotonic())
        start, end = run.window
        request.measured = start <= request.sent <= end
        run.requests.append(request)
        headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "x-request-id": rid,
        }
        try:
            async with session.post(url, data=PROMPT, headers=headers) as response:
                body = await response.read()
                request.status = response.status
                wait = response.headers.get("x-sincere-queue-wait-ms")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            request.ended = time.monotonic()
            request.outcome = type(exc).__name__
            await asyncio.sleep(0.1)
            continue
        request.ended = time.monotonic()
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if request.status == 200 and isinstance(payload, dict) and ANSWER.encode() in body:
            request.outcome = "answer"
            request.wait_ms = float(wait) if wait is not None else None
            request.body_wait_ms = (payload.get("sincere") or {}).get("queue_wait_ms")
        else:
            error = payload.get("error") if isinstance(payload, dict) else None
            code = error.get("code") or error.get("type") if isinstance(error, dict) else None
            request.outcome = str(code or f"HTTP {request.status}")
        tick()


async def follow(
    run: Run, user: User, ws_url: str, key: str, ready: asyncio.Event, stop: asyncio.Event
) -> None:
    """The user's event socket: every queue event of its requests, by request id."""
    last_id: int | None = None
    while not stop.is_set():
        url = ws_url if last_id is None else f"{ws_url}?last_event_id={last_id}"
        try:
            async with connect(url, max_queue=None) as ws:
                await ws.send(json.dumps({"type": "auth", "key": key}))
                while not stop.is_set():
                    try:
                        async with asyncio.timeout(0.5):
                            message = json.loads(await ws.recv())
                    except TimeoutError:
                        continue
                    if message["type"] == "ready":
                        ready.set()
                    elif message["type"] == "gap":
                        run.socket_breaks["gap"] += 1
                    elif message["type"] == "event":
                        last_id = message["event"]["id"]
                        _note(run, message["event"])
        except (ConnectionClosed, OSError) as exc:
            run.socket_breaks[type(exc).__name__] += 1
            await asyncio.sleep(0.1)


def _note(run: Run, event: dict[str, Any]) -> None:
    rid, kind, data = event.get("request_id"), event["type"], event["data"]
    if not rid:
        return
    if kind == "request_queued":
        seen = run.events[rid]
        seen.queued += 1
        seen.unknown += not data.get("estimate_known")
        if seen.first is None:
            seen.first = data
    elif kind == "request_dequeued":
        run.events[rid].waited_ms = data.get("waited_ms")


async def load(args: argparse.Namespace, run: Run, port: int, keys: dict[str, str]) -> None:
    url = f"http://{HOST}:{port}/v1/chat/completions"
    ws_url = f"ws://{HOST}:{port}/v1/events"
    stop_sockets, stop = asyncio.Event(), asyncio.Event()
    readies = {u.name: asyncio.Event() for u in run.users}
    sockets = [
        asyncio.create_task(follow(run, u, ws_url, keys[u.name], readies[u.name], stop_sockets))
        for u in run.users
    ]
    async with asyncio.timeout(30):
        await asyncio.gather(*(r.wait() for r in readies.values()))
    sessions = {
        u.name: aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=u.outstanding),
            timeout=aiohttp.ClientTimeout(total=args.max_wait_s + 60),
        )
        for u in run.users
    }
    started = time.monotonic()
    run.window = (started + args.warmup, started + args.warmup + args.seconds)
    total = args.warmup + args.seconds
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1

    progress = Progress(
        TextColumn("[bold]overload[/] {task.fields[phase]:<9} {task.fields[done]:>6} requests"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    try:
        with progress:
            task = progress.add_task("load", total=total, done=0, phase="warm-up")
            workers = [
                asyncio.create_task(
                    worker(run, u, i, sessions[u.name], url, keys[u.name], stop, tick)
                )
                for u in run.users
                for i in range(u.outstanding)
            ]
            # The load stays on until every measured request has ended.
            while True:
                await asyncio.sleep(0.25)
                now = time.monotonic()
                phase = "warm-up" if now < run.window[0] else "measured"
                if now > run.window[1]:
                    phase = "draining"
                    pending = [r for r in run.requests if r.measured and not r.ended]
                    if not pending:
                        break
                progress.update(task, completed=min(total, now - started), done=done, phase=phase)
            stop.set()
            await asyncio.gather(*workers)
        await asyncio.sleep(0.5)  # the last events reach their sockets
    finally:
        stop.set()
        stop_sockets.set()
        await asyncio.gather(*sockets, return_exceptions=True)
        for session in sessions.values():
            await session.close()


# Processes


def start_upstream(servers: Servers, args: argparse.Namespace) -> Server:
    port = free_port()
    command, env = upstream_process(
        *("--port", str(port)),
        *("--delay-ms", str(args.delay_ms), "--jitter-ms", str(args.jitter_ms)),
    )
    server = servers.start("upstream", port, command, env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # it has no GET route: wait until it listens
        if server.proc.poll() is not None:
            raise RuntimeError(f"the upstream exited:\n{server.tail()}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return server
        time.sleep(0.1)
    raise RuntimeError(f"the upstream did not listen within 30 s:\n{server.tail()}")


def start_gateway(
    servers: Servers, upstream: Server, args: argparse.Namespace, users: list[User]
) -> tuple[Server, dict[str, str]]:
    """``sincere serve`` from this checkout, and a key per user (in its store)."""
    config = servers.workdir / "sincere.toml"
    config.write_text(
        CONFIG.format(
            timeout_s=args.max_wait_s + 60,
            aging_s=args.aging_s,
            max_wait_s=args.max_wait_s,
            base_url=f"http://{HOST}:{upstream.port}/v1",
            model=MODEL,
            capacity=args.capacity,
        )
    )
    env = {
        "SINCERE_DATA_DIR": str(servers.workdir / "data"),
        "BENCH_UPSTREAM_KEY": "dummy",
        "PYTHONPATH": str(SOURCE),
    }
    store = open_key_store(load_settings(config, env=env))

    async def create_keys() -> dict[str, str]:
        return {u.name: (await store.create(u.name, u.tier))[0] for u in users}

    keys = asyncio.run(create_keys())
    command = [sys.executable, "-m", "sincere.cli"]
    port = free_port()
    server = servers.start(
        "sincere", port, [*command, "serve", "--config", str(config), "--port", str(port)], env
    )
    wait_ready(server, "/livez", {}, 120)
    return server, keys


# Report


def pct(values: Iterable[float], q: float) -> float:
    """The q-quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def clipped(span: tuple[float, float], window: tuple[float, float]) -> float:
    return max(0.0, min(span[1], window[1]) - max(span[0], window[0]))


def ms(value: float) -> str:
    return f"{value:,.0f}"


def estimate_row(label: str, answers: list[Request], run: Run) -> str:
    """The first announced wait of these answers against the waits that followed."""
    known: list[tuple[float, float, float]] = []  # announced p50, p90; actual
    positions = []
    for r in answers:
        seen = run.events.get(r.rid)
        if seen is None or seen.first is None:
            continue
        positions.append(seen.first["position"])
        if seen.first.get("estimate_known") and r.wait_ms is not None:
            first = seen.first
            known.append(
                (first["estimated_wait_ms_p50"], first["estimated_wait_ms_p90"], r.wait_ms)
            )
    if not known:
        return f"| {label} | {len(answers):,} | 0 |  |  |  |  |  |  |"
    errors = [p50 - actual for p50, _, actual in known]
    within = sum(actual <= p90 for _, p90, actual in known) / len(known)
    return (
        f"| {label} | {len(answers):,} | {len(known):,} "
        f"| {statistics.median(abs(e) for e in errors):.0f} "
        f"| {statistics.median(errors):+.0f} | {within:.1%} "
        f"| {statistics.median(p50 for p50, _, _ in known):.0f} "
        f"| {statistics.median(a for _, _, a in known):.0f} "
        f"| {statistics.median(positions):.0f} |"
    )


def report(args: argparse.Namespace, run: Run) -> str:
    measured = [r for r in run.requests if r.measured]
    answers = [r for r in measured if r.outcome == "answer" and r.wait_ms is not None]
    window_s = run.window[1] - run.window[0]
    slot_s: dict[str, float] = defaultdict(float)
    served: Counter[str] = Counter()  # answers that ended in the window
    for r in run.requests:
        if (span := r.slot) is not None:
            slot_s[r.user.name] += clipped(span, run.window)
            served[r.user.name] += run.window[0] <= r.ended <= run.window[1]
    busy = sum(slot_s.values())
    service_ms = [r.ended * 1000 - r.sent * 1000 - (r.wait_ms or 0) for r in answers]
    outstanding = sum(u.outstanding for u in run.users)
    lines = [
        f"Python {platform.python_version()}, {os.cpu_count()} cores, load average before "
        f"{args.load_before}; capacity {args.capacity}, {outstanding} requests outstanding "
        f"({outstanding / args.capacity:.2g}× capacity, closed loop), upstream service time "
        f"{args.delay_ms - args.jitter_ms:g}-{args.delay_ms + args.jitter_ms:g} ms, "
        f"queue_aging_s {args.aging_s:g}, max_queue_wait_s {args.max_wait_s:g}",
        f"measured: {len(measured):,} requests sent in {window_s:.0f} s after a "
        f"{args.warmup:g} s warm-up; {len(measured) / window_s:.1f} requests/s; the slots "
        f"were busy {busy / (args.capacity * window_s):.1%} of the window (slot time as "
        f"clients saw it, with the answer's way back: over 100 % is no slot idle); "
        f"service time (latency less queue wait) p50 "
        f"{pct(service_ms, 0.5):.1f} ms, p99 {pct(service_ms, 0.99):.1f} ms",
    ]
    if run.gateway_cpu_s is not None:
        lines[-1] += f"; gateway CPU {run.gateway_cpu_s * 1000 / len(run.requests):.2f} ms/request"
    # Per tier
    lines += [
        "",
        "| tier | users | outstanding | requests | share of slot time | queue wait p50 ms "
        "| p90 | p99 | max | timeouts | other errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tier in TIERS:
        users = [u for u in run.users if u.tier == tier]
        mine = [r for r in measured if r.user.tier == tier]
        waits = [r.wait_ms for r in answers if r.user.tier == tier and r.wait_ms is not None]
        timeouts = sum(r.outcome == "queue_timeout" for r in mine)
        other = sum(r.outcome not in ("answer", "queue_timeout") for r in mine)
        share = sum(slot_s[u.name] for u in users) / busy if busy else 0.0
        cells = [ms(pct(waits, q)) for q in (0.5, 0.9, 0.99, 1.0)] if waits else ["n/a"] * 4
        lines.append(
            f"| {tier} | {len(users)} | {sum(u.outstanding for u in users)} | {len(mine):,} "
            f"| {share:.1%} | {' | '.join(cells)} | {timeouts} | {other} |"
        )
    # Per user
    lines += [
        "",
        "| user | tier | outstanding | answers in window | slot time s | share of its tier "
        "| fair share | received ÷ fair | FCFS would give |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for tier in TIERS:
        users = [u for u in run.users if u.tier == tier]
        tier_s = sum(slot_s[u.name] for u in users)
        tier_outstanding = sum(u.outstanding for u in users)
        for u in users:
            share = slot_s[u.name] / tier_s if tier_s else 0.0
            fair = 1 / len(users)
            lines.append(
                f"| {u.name} | {tier} | {u.outstanding} | {served[u.name]:,} "
                f"| {slot_s[u.name]:.1f} | {share:.1%} | {fair:.1%} | {share / fair:.2f} "
                f"| {u.outstanding / tier_outstanding:.1%} |"
            )
    # The estimates
    lines += [
        "",
        "| requests of | answers | first estimate known | first p50: median abs error ms "
        "| median signed error ms (announced − actual) | actual wait ≤ announced p90 "
        "| median announced p50 ms | median actual wait ms | median first position |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups = [(tier, [r for r in answers if r.user.tier == tier]) for tier in TIERS]
    groups += [(f"user {u.name}", [r for r in answers if r.user is u]) for u in run.users]
    groups.append(("all", answers))
    lines += [estimate_row(label, group, run) for label, group in groups]
    announced = [run.events[r.rid] for r in measured if r.rid in run.events]
    total_queued = sum(a.queued for a in announced)
    unknown = sum(a.unknown for a in announced)
    first_unknown = sum(
        1 for a in announced if a.first is not None and not a.first.get("estimate_known")
    )
    mismatch = [
        abs(run.events[r.rid].waited_ms - r.wait_ms)  # type: ignore[operator]
        for r in answers
        if r.rid in run.events and run.events[r.rid].waited_ms is not None
    ]
    body_mismatch = [
        abs(r.body_wait_ms - r.wait_ms)  # type: ignore[operator]
        for r in answers
        if r.body_wait_ms is not None
    ]
    outcomes = Counter(r.outcome for r in measured)
    silent = sum(1 for r in answers if r.rid not in run.events or run.events[r.rid].first is None)
    lines += [
        "",
        f"request_queued announcements for measured requests: {total_queued:,}, of them "
        f"{unknown:,} with estimate_known false ({first_unknown:,} first announcements); "
        f"answers without a queue event: {silent:,}",
        f"header vs request_dequeued waited_ms: max difference "
        f"{max(mismatch, default=0):.1f} ms over {len(mismatch):,}; header vs body "
        f"sincere.queue_wait_ms: max {max(body_mismatch, default=0):.1f} ms",
        f"outcomes: {', '.join(f'{k} {v:,}' for k, v in outcomes.most_common())}",
    ]
    if run.socket_breaks:
        lines.append(f"event sockets: {dict(run.socket_breaks)}")
    return "\n".join(lines)


def bench(args: argparse.Namespace, servers: Servers) -> str:
    users = mix(args.capacity, args.multiple)
    run = Run(users)
    with console.status("starting the upstream and sincere…"):
        upstream = start_upstream(servers, args)
        gateway, keys = start_gateway(servers, upstream, args, users)
    cpu = gateway.cpu_s()
    try:
        import uvloop
    except ImportError:  # the plain loop works, only the client costs a little more
        uvloop = None  # type: ignore[assignment]
    runner = uvloop.run if uvloop is not None else asyncio.run
    runner(load(args, run, gateway.port, keys))
    after = gateway.cpu_s()
    run.gateway_cpu_s = None if cpu is None or after is None else after - cpu
    return report(args, run)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.queue",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--capacity", type=int, default=8, help="max_concurrency (default 8)")
    parser.add_argument(
        "--multiple",
        type=float,
        default=3.0,
        help="requests outstanding, as a multiple of the capacity (default 3)",
    )
    parser.add_argument("--seconds", type=float, default=40, help="measured seconds (40)")
    parser.add_argument("--warmup", type=float, default=5, help="seconds not measured (5)")
    parser.add_argument(
        "--delay-ms", type=float, default=100, help="the upstream's mean service time (100)"
    )
    parser.add_argument(
        "--jitter-ms", type=float, default=20, help="service times spread uniformly ± (20)"
    )
    parser.add_argument("--aging-s", type=float, default=10, help="queue_aging_s (10)")
    parser.add_argument(
        "--max-wait-s", type=float, default=60, help="max_queue_wait_s of every tier (60)"
    )
    args = parser.parse_args()
    args.load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    workdir = Path(tempfile.mkdtemp(prefix="sincere-queue-"))
    servers = Servers(workdir)
    keep = False
    try:
        with stopped_on_sigterm():
            table = bench(args, servers)
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
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{table}")


if __name__ == "__main__":
    main()
