"""Soak: many concurrent streaming clients, half of them walking away, in front of an upstream
that fails at random.

    .venv/bin/python -m benchmarks.soak [--clients 200] [--seconds 60] [--seed 1]
    .venv/bin/python -m benchmarks.soak --processes 2     # a fleet: Redis + PostgreSQL

With ``--processes N`` (N > 1) the gateway is N ``sincere serve`` processes sharing the
machine's Redis and PostgreSQL (``--redis-url``, ``--database-url``), clients spread over
them, each user's event socket on another process than most of its requests (and moving
to the next process whenever its socket breaks); half-way one process is killed with
``kill -9`` and started again. Requests that were on it then are counted apart (their
clients see a broken connection, which must never end in ``[DONE]``).

The gateway (`sincere serve`, its own process) serves model `gpt` from two deployments of
the fault server from `tests/` (its own process too), which answers each completion with a
fault drawn at random from a fixed, seeded mix. Every client streams one request after
another; half of the requests are abandoned at a random point (before the first chunk or
after a few). Each user also holds the `/v1/events` WebSocket, so the benchmark sees every
event the gateway published. The report counts, per request:

- answers: a stream that ended in `[DONE]` after a final chunk carrying `sincere` provenance;
- clean errors: an OpenAI error object with the request id, as the HTTP answer or in band;
- abandoned: the client closed the connection on purpose;
- anything else (must be 0): a stream that ended without `[DONE]` or an error, `[DONE]`
  without provenance, an undecodable chunk, a client-side timeout, a broken connection;

and the terminal events (`request_completed` / `request_failed`) each request id got on
its user's socket: exactly one for every request. Every payload (SSE lines, error bodies,
events) is searched for the upstream's API key, which one of the faults echoes back; an
event of another user on a socket is counted too. It also samples the gateways' resident
memory (start and end, peak), and how long each gateway took to exit on SIGTERM at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from benchmarks.fleet import Shared
from benchmarks.overhead import Server, Servers, free_port, wait_ready
from sincere.config import load_settings
from sincere.runtime import open_key_store

HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
USERS = 20
TERMINAL = {"request_completed", "request_failed"}
KILL_MARGIN_S = 1.0  # a request's end on the server trails its client's view by less
console = Console(highlight=False)

# The upstream's behaviour: (weight, fault). The text is long enough for ~30 chunks.
TEXT = " ".join(f"word{i}" for i in range(30))


def fault_mix() -> list[tuple[float, Any]]:
    from tests.faults import Fault

    return [
        (90, Fault.ok(TEXT)),
        (6, Fault.status(500)),
        (5, Fault.status(503)),
        (3, Fault.rate_limited()),
        (5, Fault.reset()),
        (7, Fault.cut(after_chunks=5)),
        (4, Fault.stall(after_chunks=5, seconds=4)),
        (3, Fault.malformed_chunk(after_chunks=4)),
        (3, Fault.slow_first_token(3.0)),
        (3, Fault.no_done()),
        (2, Fault.empty()),
        (2, Fault.degenerate()),
        (3, Fault.hang(4)),
        (3, Fault.ok(TEXT, delay_s=0.5)),
        # What some servers and proxies send instead of a clean stream.
        (2, Fault.json_answer(TEXT)),
        (2, Fault.no_final_newline()),
        (2, Fault.crlf()),
        (2, Fault.keep_alive(seconds=4)),
        (1, Fault.huge_line(2 * 1024 * 1024)),
        (2, Fault.proxy_error(502)),
        (2, Fault.leak()),  # quotes the bearer token it got: the deployment's API key
    ]


CONFIG = """\
[defaults]
max_retries = 1
retry_base_s = 0.05
retry_max_s = 0.5
timeout_s = 10
first_token_timeout_s = 1.5
stream_idle_timeout_s = 1.5
breaker_open_s = 2
breaker_max_open_s = 8
auth_failure_open_s = 2
breaker_failure_ratio = 0.7

[tiers.enterprise]
requests_per_minute = 10000000
concurrent_requests = 1000

[[models]]
name = "gpt"
deployments = ["primary"]
fallbacks = ["backup"]

[[models]]
name = "backup"
deployments = ["secondary"]

[[deployments]]
name = "primary"
provider = "openai"
base_url = "{base_url}"
model = "m1"
api_key_env = "SOAK_UPSTREAM_KEY"

[[deployments]]
name = "secondary"
provider = "openai"
base_url = "{base_url}"
model = "m2"
api_key_env = "SOAK_UPSTREAM_KEY"
supports_prefill = true
{fleet}"""

FLEET = """
[cluster]
redis_url = "{redis_url}"
key_prefix = "{prefix}"

[store]
url = "{database_url}"
"""
SECRET = "sk-soak-" + os.urandom(12).hex()  # the deployments' API key: never in a payload


# The fault server, in a process of its own (`--serve-faults`), so that its work does not
# share a core's event loop with the clients.


def serve_faults(port_file: Path, seed: int, count: int) -> None:
    from tests.faults import FaultServer

    rng = random.Random(seed)
    weights, faults = zip(*fault_mix(), strict=True)
    with FaultServer() as server:
        server.script(*rng.choices(faults, weights=weights, k=count))
        port_file.write_text(str(server.port))
        stop = asyncio.Event()

        async def wait() -> None:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()

        asyncio.run(wait())


def start_fault_server(servers: Servers, seed: int) -> tuple[Server, str]:
    port_file = servers.workdir / "faults.port"
    args = [sys.executable, "-m", "benchmarks.soak", "--serve-faults", str(port_file)]
    server = servers.start("faults", 0, [*args, "--seed", str(seed)], {"PYTHONPATH": os.getcwd()})
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if server.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the fault server did not start:\n{server.tail()}")
        time.sleep(0.05)
    server.port = int(port_file.read_text())
    return server, f"http://{HOST}:{server.port}/v1"


@dataclass
class Fleet:
    """The gateway processes, by index; each keeps its port across a restart."""

    servers: Servers
    args: list[list[str]]  # each process's command
    env: dict[str, str]
    gateways: list[Server]
    user_prefix: str

    def start(self, index: int) -> Server:
        port = int(self.args[index][self.args[index].index("--port") + 1])
        server = self.servers.start(f"sincere{index}", port, self.args[index], self.env)
        wait_ready(server, "/livez", {}, 120)
        if index < len(self.gateways):
            self.gateways[index] = server
        else:
            self.gateways.append(server)
        return server


def start_gateways(
    servers: Servers, base_url: str, args: argparse.Namespace, shared: Shared | None
) -> tuple[Fleet, list[str]]:
    """``args.processes`` gateways on one configuration (a fleet on ``shared``'s Redis
    prefix and PostgreSQL schema); the users' keys."""
    fleet = ""
    run = os.urandom(4).hex()  # this run's users are its own
    if shared is not None:
        fleet = FLEET.format(
            redis_url=shared.redis_url,
            database_url=shared.database_url,
            prefix=f"{shared.name}:",
        )
    config = servers.workdir / "sincere.toml"
    config.write_text(CONFIG.format(base_url=base_url, fleet=fleet))
    env = {"SINCERE_DATA_DIR": str(servers.workdir / "data"), "SOAK_UPSTREAM_KEY": SECRET}
    store = open_key_store(load_settings(config, env=env))
    user_prefix = f"soak-{run}-user" if args.processes > 1 else "user"

    async def create_keys() -> list[str]:
        return [(await store.create(f"{user_prefix}{i}", "enterprise"))[0] for i in range(USERS)]

    keys = asyncio.run(create_keys())
    commands = [
        [str(VENV_BIN / "sincere"), "serve", "--config", str(config), "--port", str(free_port())]
        for _ in range(args.processes)
    ]
    gateways = Fleet(servers, commands, env, [], user_prefix)
    for index in range(args.processes):
        gateways.start(index)
    return gateways, keys


# What the clients saw


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    others: list[str] = field(default_factory=list)  # what each unexpected outcome was
    request_ids: dict[str, str] = field(default_factory=dict)  # request id -> outcome
    latencies: list[float] = field(default_factory=list)  # answered streams, seconds
    error_codes: Counter[str] = field(default_factory=Counter)  # clean errors by code
    spans: dict[str, tuple[int, float, float]] = field(default_factory=dict)  # process, times
    secrets: int = 0  # payloads that contained the upstream's API key

    def add(self, rid: str, outcome: str, detail: str = "") -> None:
        self.outcomes[outcome] += 1
        self.request_ids[rid] = outcome
        if outcome == "other":
            self.others.append(f"{rid}: {detail}")


def _event(line: bytes) -> dict[str, Any] | str | None:
    """One SSE line: the decoded JSON, "[DONE]", or None for blanks."""
    text = line.decode("utf-8").strip()
    if not text:
        return None
    if not text.startswith("data: "):
        raise ValueError(f"not an SSE data line: {text[:80]!r}")
    data = text[6:]
    if data == "[DONE]":
        return data
    decoded = json.loads(data)
    if not isinstance(decoded, dict):
        raise ValueError("an event that is not an object")
    return decoded


def _clean_error(payload: Any, rid: str, tally: Tally) -> bool:
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return False
    clean = error.get("request_id") == rid and bool(error.get("message"))
    if clean:
        tally.error_codes[str(error.get("code"))] += 1
    return clean


async def one_request(
    session: aiohttp.ClientSession,
    url: str,
    key: str,
    rid: str,
    rng: random.Random,
    tally: Tally,
    process: int = 0,
) -> None:
    started = time.monotonic()
    try:
        await _one_request(session, url, key, rid, rng, tally)
    finally:
        tally.spans[rid] = (process, started, time.monotonic())


async def _one_request(
    session: aiohttp.ClientSession, url: str, key: str, rid: str, rng: random.Random, tally: Tally
) -> None:
    # Half the requests are abandoned: before the first chunk (0) or after a few.
    abandon_after = rng.randrange(0, 8) if rng.random() < 0.5 else None
    body = {
        "model": "gpt",
        "messages": [{"role": "user", "content": f"soak {rid}"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {key}", "x-request-id": rid}
    started = time.monotonic()
    try:
        async with asyncio.timeout(40):  # the gateway's own deadline is 10 s
            async with session.post(url, json=body, headers=headers) as response:
                if response.status != 200:
                    raw = await response.read()
                    tally.secrets += SECRET.encode() in raw
                    payload = json.loads(raw)
                    if _clean_error(payload, rid, tally):
                        tally.add(rid, "clean_error")
                    else:
                        tally.add(rid, "other", f"HTTP {response.status} {str(payload)[:200]}")
                    return
                chunks = 0
                provenance = False
                while True:
                    if abandon_after is not None and chunks >= abandon_after:
                        response.close()  # the client walks away mid-stream
                        tally.add(rid, "abandoned")
                        return
                    line = await response.content.readline()
                    tally.secrets += SECRET.encode() in line
                    if not line:
                        tally.add(rid, "other", f"stream ended after {chunks} chunks, no [DONE]")
                        return
                    event = _event(line)
                    if event is None:
                        continue
                    if event == "[DONE]":
                        if provenance:
                            tally.add(rid, "answer")
                            tally.latencies.append(time.monotonic() - started)
                        else:
                            tally.add(rid, "other", "[DONE] without provenance")
                        return
                    assert isinstance(event, dict)
                    if "error" in event:
                        outcome = "clean_error" if _clean_error(event, rid, tally) else "other"
                        tally.add(rid, outcome, f"in-band {str(event)[:200]}")
                        return
                    provenance = provenance or bool(event.get("sincere"))
                    chunks += 1
    except TimeoutError:
        tally.add(rid, "other", "no end within 40 s")
    except (aiohttp.ClientError, ValueError) as exc:
        tally.add(rid, "other", f"{type(exc).__name__}: {exc}")
        if isinstance(exc, aiohttp.ClientConnectorError):
            await asyncio.sleep(0.1)  # a process that is down: as a client would, not in a spin


async def client(
    index: int,
    deadline: float,
    urls: list[str],
    keys: list[str],
    seed: int,
    tally: Tally,
    tick: Any,
) -> None:
    rng = random.Random(seed * 100_003 + index)
    key = keys[index % len(keys)]
    process = index % len(urls)  # spread over the processes
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            rid = f"soak-{index}-{n}"
            await one_request(session, urls[process], key, rid, rng, tally, process)
            tick()


# What the event sockets saw


class EventLog:
    def __init__(self) -> None:
        self.types: dict[str, list[str]] = defaultdict(list)  # request id -> event types
        self.gaps = 0
        self.reconnects = 0
        self.foreign = 0  # events of another user on a user's socket
        self.secrets = 0  # events whose text held the upstream's API key

    async def follow(
        self, ws_urls: list[str], first: int, user_id: str, key: str, stop: asyncio.Event
    ) -> None:
        """One user's socket: on process ``first``, then the next one at every break."""
        last_id: int | None = None
        process = first
        while not stop.is_set():
            ws_url = ws_urls[process % len(ws_urls)]
            url = ws_url if last_id is None else f"{ws_url}?last_event_id={last_id}"
            try:
                async with connect(
                    url, additional_headers={"Authorization": f"Bearer {key}"}
                ) as ws:
                    while not stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(0.5):
                                message = json.loads(await ws.recv())
                            if message["type"] == "gap":
                                self.gaps += 1
                            elif message["type"] == "event":
                                event = message["event"]
                                last_id = event["id"]
                                self.foreign += event["user_id"] != user_id
                                self.secrets += SECRET in json.dumps(event)
                                if event["request_id"]:
                                    self.types[event["request_id"]].append(event["type"])
            except (ConnectionClosed, OSError):
                self.reconnects += 1
                process += 1  # reconnect elsewhere: that process has this user's events too
                await asyncio.sleep(0.2)


# Memory


def rss_mb(pid: int, field_name: str = "VmRSS") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def sample_memory(fleet: Fleet, memory: dict[int, list[float]], stop: asyncio.Event) -> None:
    """Each process's resident memory, twice a second (a restarted process starts anew)."""
    pids: dict[int, int] = {}
    while not stop.is_set():
        for index, gateway in enumerate(fleet.gateways):
            if pids.get(index) != gateway.proc.pid:
                pids[index] = gateway.proc.pid
                memory[index] = []
            if (mb := rss_mb(gateway.proc.pid)) is not None:
                memory[index].append(mb)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await stop.wait()


# The run


async def kill_and_restart(
    fleet: Fleet, started: float, after_s: float, window: dict[str, float]
) -> None:
    """``kill -9`` process 0 ``after_s`` into the run, then start it again on its port."""
    await asyncio.sleep(max(0.0, started + after_s - time.monotonic()))
    window["killed"] = time.monotonic()
    window["after_s"] = window["killed"] - started
    fleet.gateways[0].send_signal(signal.SIGKILL)
    await asyncio.to_thread(fleet.gateways[0].proc.wait)
    await asyncio.to_thread(fleet.start, 0)
    window["back"] = time.monotonic()


async def soak(args: argparse.Namespace, fleet: Fleet, keys: list[str]) -> dict[str, Any]:
    ports = [g.port for g in fleet.gateways]
    urls = [f"http://{HOST}:{port}/v1/chat/completions" for port in ports]
    ws_urls = [f"ws://{HOST}:{port}/v1/events" for port in ports]
    tally, events = Tally(), EventLog()
    stop_watching = asyncio.Event()
    memory: dict[int, list[float]] = {}
    # A user's socket is on the next process after the one most of its clients use.
    watchers = [
        asyncio.create_task(
            events.follow(ws_urls, i + 1, f"{fleet.user_prefix}{i}", key, stop_watching)
        )
        for i, key in enumerate(keys)
    ]
    watchers.append(asyncio.create_task(sample_memory(fleet, memory, stop_watching)))
    await asyncio.sleep(1)  # the sockets are open before the first request
    started = time.monotonic()
    deadline = started + args.seconds
    window: dict[str, float] = {}
    killer = None
    if args.kill:
        killer = asyncio.create_task(kill_and_restart(fleet, started, args.seconds / 2, window))
    with Progress(
        TextColumn("[bold]soak[/] {task.fields[done]} requests"),
        BarColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("soak", total=args.seconds, done=0)
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1

        clients = [
            asyncio.create_task(client(i, deadline, urls, keys, args.seed, tally, tick))
            for i in range(args.clients)
        ]
        while not all(c.done() for c in clients):
            await asyncio.sleep(0.5)
            elapsed = min(args.seconds, time.monotonic() - started)
            progress.update(task, completed=elapsed, done=done)
        await asyncio.gather(*clients)
    if killer is not None:
        await killer
    ran_s = time.monotonic() - started
    # The requests that were on the killed process while it died or was down: their
    # clients see a broken connection, and their events may end with the process.
    # A request ends on the server a moment after its client saw it end (an abandoned one
    # when the server notices the client left; any one when its terminal event, posted,
    # is written in the process's next round trip to Redis): one that ended just before
    # the kill may have died with the process.
    killed = {
        rid
        for rid, (process, began, ended) in tally.spans.items()
        if window
        and process == 0
        and began < window["back"]
        and ended + KILL_MARGIN_S >= window["killed"]
    }
    # Terminal events may trail the client's view (an abandoned request ends on the server
    # after the client left): wait until every request has one, or 15 s.
    settle = time.monotonic() + 15
    while time.monotonic() < settle:
        if all(
            any(t in TERMINAL for t in events.types.get(r, ()))
            for r in tally.request_ids
            if r not in killed
        ):
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1)  # a duplicate terminal event would arrive now
    stop_watching.set()
    await asyncio.gather(*watchers)
    return {
        "tally": tally,
        "events": events,
        "memory": memory,
        "ran_s": ran_s,
        "killed": killed,
        "window": window,
    }


def stop_gateway(gateway: Server) -> float | None:
    """SIGTERM; the seconds until the process exited (None if it had to be killed)."""
    started = time.monotonic()
    gateway.send_signal(signal.SIGTERM)
    try:
        gateway.proc.wait(60)
    except subprocess.TimeoutExpired:
        return None
    return time.monotonic() - started


def terminal_counts(result: dict[str, Any]) -> dict[str, int]:
    """How many terminal events each request (not lost with a killed process) got."""
    events: EventLog = result["events"]
    return {
        rid: sum(t in TERMINAL for t in events.types.get(rid, ()))
        for rid in result["tally"].request_ids
        if rid not in result["killed"]
    }


def violations(result: dict[str, Any]) -> list[str]:
    """What must never happen; empty when the run was clean."""
    tally: Tally = result["tally"]
    events: EventLog = result["events"]
    found = []
    others = [
        o for rid, o in tally.request_ids.items() if o == "other" and rid not in result["killed"]
    ]
    if others:
        found.append(f"{len(others)} requests ended in neither an answer nor a clean error")
    if any("[DONE] without provenance" in o for o in tally.others):
        found.append("a stream ended in [DONE] without provenance")
    not_one = [rid for rid, n in terminal_counts(result).items() if n != 1]
    if not_one:
        window = result["window"]
        detail = ", ".join(
            f"{rid} (process {p}, {began - window.get('killed', began):+.1f} s from the kill, "
            f"{tally.request_ids[rid]}, events {result['events'].types.get(rid, [])})"
            for rid in not_one[:5]
            for p, began, _ in [tally.spans[rid]]
        )
        found.append(f"{len(not_one)} requests without exactly one terminal event: {detail}")
    if events.foreign:
        found.append(f"{events.foreign} events delivered to another user")
    if events.gaps:
        # A socket that moved to another process must get every event it missed from the
        # shared history (a run is far shorter than the history a user keeps).
        found.append(f"{events.gaps} gap messages: events lost on a reconnect")
    if tally.secrets or events.secrets:
        found.append(f"the API key in {tally.secrets + events.secrets} payloads")
    return found


def report(args: argparse.Namespace, result: dict[str, Any], exits: list[float | None]) -> str:
    tally: Tally = result["tally"]
    events: EventLog = result["events"]
    killed: set[str] = result["killed"]
    total = sum(tally.outcomes.values())
    counts = terminal_counts(result)
    terminal = Counter(counts.values())
    by_outcome: dict[str, Counter[int]] = defaultdict(Counter)
    for rid, outcome in tally.request_ids.items():
        if rid not in killed:
            by_outcome[outcome][counts[rid]] += 1
    memory: dict[int, list[float]] = result["memory"]
    lat = sorted(tally.latencies)

    def pct(q: float) -> str:
        return f"{lat[min(len(lat) - 1, int(q * len(lat)))] * 1000:.0f}" if lat else "n/a"

    processes = f", {args.processes} processes" if args.processes > 1 else ""
    lines = [
        f"{args.clients} clients{processes}, {result['ran_s']:.0f} s, seed {args.seed}: "
        f"{total} requests ({total / result['ran_s']:.1f}/s)",
        "",
        "| outcome | requests | share | terminal events 0 / 1 / more |",
        "|---|---|---|---|",
    ]
    for outcome in ("answer", "clean_error", "abandoned", "other"):
        n = sum(1 for rid, o in tally.request_ids.items() if o == outcome and rid not in killed)
        t = by_outcome[outcome]
        more = sum(v for k, v in t.items() if k > 1)
        share = f"{100 * n / total:.1f} %" if total else "n/a"
        lines.append(f"| {outcome} | {n} | {share} | {t[0]} / {t[1]} / {more} |")
    if result["window"]:
        window = result["window"]
        lost = Counter(tally.request_ids[rid] for rid in killed)
        lines.append(
            f"| on the killed process | {len(killed)} | "
            f"{100 * len(killed) / total:.1f} % | (not counted) |"
        )
        lines += [
            "",
            f"- process 0 killed with SIGKILL {window['after_s']:.0f} s into the run, "
            f"serving again {window['back'] - window['killed']:.1f} s later; its "
            f"requests then: " + ", ".join(f"{o} {n}" for o, n in lost.most_common()),
        ]
    more_total = sum(v for k, v in terminal.items() if k > 1)
    counted = total - len(killed)
    lines += [
        "",
        f"- requests with exactly one terminal event: {terminal[1]} of {counted} "
        f"(none: {terminal[0]}, more than one: {more_total})",
        f"- answered streams, time to [DONE]: p50 {pct(0.5)} ms, p90 {pct(0.9)} ms, "
        f"p99 {pct(0.99)} ms",
        f"- events of another user on a socket: {events.foreign}; payloads with the API key: "
        f"{tally.secrets + events.secrets}",
        "- clean errors by code: "
        + ", ".join(f"{code} {n}" for code, n in tally.error_codes.most_common()),
        f"- event sockets: {events.reconnects} reconnects, {events.gaps} gap messages",
    ]
    for index, samples in sorted(memory.items()):
        if samples:
            lines.append(
                f"- process {index} resident memory: start {samples[0]:.0f} MB, end "
                f"{samples[-1]:.0f} MB, peak {max(samples):.0f} MB"
            )
    for index, exit_s in enumerate(exits):
        lines.append(
            f"- process {index} exit after SIGTERM: {exit_s:.2f} s"
            if exit_s is not None
            else f"- process {index} exit after SIGTERM: did not exit within 60 s (killed)"
        )
    bad = violations(result)
    lines += ["", "Violations: " + ("; ".join(bad) if bad else "none")]
    if tally.others:
        lines += ["", "Unexpected outcomes (first 10):", *(f"- {o}" for o in tally.others[:10])]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """One soak as configured: its result and its report."""
    with contextlib.ExitStack() as stack:
        servers = Servers(Path(stack.enter_context(tempfile.TemporaryDirectory())))
        shared = None
        if args.processes > 1:  # its own Redis prefix and schema, removed at the end
            shared = stack.enter_context(Shared(args.redis_url, args.database_url))
        stack.callback(servers.stop_all)  # before the schema and the keys go
        console.print(f"starting the fault server and {args.processes} gateway(s)…")
        _, base_url = start_fault_server(servers, args.seed)
        fleet, keys = start_gateways(servers, base_url, args, shared)
        result = asyncio.run(soak(args, fleet, keys))
        exits = [stop_gateway(gateway) for gateway in fleet.gateways]
        return result, report(args, result, exits)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200, help="concurrent streaming clients")
    parser.add_argument("--seconds", type=float, default=60, help="how long clients send")
    parser.add_argument("--seed", type=int, default=1, help="seed of the faults and the clients")
    parser.add_argument(
        "--processes", type=int, default=1, help="gateway processes (> 1: a fleet on Redis)"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="the fleet's Redis")
    parser.add_argument(
        "--database-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="the fleet's store",
    )
    parser.add_argument(
        "--kill",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="kill -9 process 0 half-way and restart it (default: with --processes > 1)",
    )
    parser.add_argument("--serve-faults", type=Path, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = parser().parse_args()
    if args.serve_faults is not None:
        serve_faults(args.serve_faults, args.seed, count=2_000_000)
        return
    if args.kill is None:
        args.kill = args.processes > 1
    _, text = run(args)
    console.print(text, markup=False)


if __name__ == "__main__":
    main()
