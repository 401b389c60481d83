"""Soak: many concurrent streaming clients, half of them walking away, in front of an upstream
that fails at random.

    .venv/bin/python -m benchmarks.soak [--clients 200] [--seconds 60] [--seed 1]

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
its user's socket: exactly one for every request. It also samples the gateway's resident
memory and reports its peak, and how long the gateway took to exit on SIGTERM at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
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

from benchmarks.overhead import Server, Servers, free_port, wait_ready
from sincere.backends.sql import SqlKeyStore, open_database
from sincere.config import load_settings

HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
USERS = 20
TERMINAL = {"request_completed", "request_failed"}
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

[[deployments]]
name = "secondary"
provider = "openai"
base_url = "{base_url}"
model = "m2"
supports_prefill = true
"""


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


def start_gateway(servers: Servers, base_url: str) -> tuple[Server, list[str]]:
    config = servers.workdir / "sincere.toml"
    config.write_text(CONFIG.format(base_url=base_url))
    env = {"SINCERE_DATA_DIR": str(servers.workdir / "data")}
    settings = load_settings(config, env=env)
    database = open_database(settings.database_url())
    store = SqlKeyStore(database)

    async def create_keys() -> list[str]:
        return [(await store.create(f"user{i}", "enterprise"))[0] for i in range(USERS)]

    keys = asyncio.run(create_keys())
    database.engine.dispose()
    port = free_port()
    args = [str(VENV_BIN / "sincere"), "serve", "--config", str(config), "--port", str(port)]
    server = servers.start("sincere", port, args, env)
    wait_ready(server, "/livez", {}, 120)
    return server, keys


# What the clients saw


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    others: list[str] = field(default_factory=list)  # what each unexpected outcome was
    request_ids: dict[str, str] = field(default_factory=dict)  # request id -> outcome
    latencies: list[float] = field(default_factory=list)  # answered streams, seconds
    error_codes: Counter[str] = field(default_factory=Counter)  # clean errors by code

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
                    payload = await response.json(content_type=None)
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


async def client(
    index: int, deadline: float, url: str, keys: list[str], seed: int, tally: Tally, tick: Any
) -> None:
    rng = random.Random(seed * 100_003 + index)
    key = keys[index % len(keys)]
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            await one_request(session, url, key, f"soak-{index}-{n}", rng, tally)
            tick()


# What the event sockets saw


class EventLog:
    def __init__(self) -> None:
        self.types: dict[str, list[str]] = defaultdict(list)  # request id -> event types
        self.gaps = 0
        self.reconnects = 0

    async def follow(self, ws_url: str, key: str, stop: asyncio.Event) -> None:
        last_id: int | None = None
        while not stop.is_set():
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
                                if event["request_id"]:
                                    self.types[event["request_id"]].append(event["type"])
            except (ConnectionClosed, OSError):
                self.reconnects += 1
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


async def sample_memory(pid: int, samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        if (mb := rss_mb(pid)) is not None:
            samples.append(mb)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await stop.wait()


# The run


async def soak(args: argparse.Namespace, gateway: Server, keys: list[str]) -> dict[str, Any]:
    url = f"http://{HOST}:{gateway.port}/v1/chat/completions"
    ws_url = f"ws://{HOST}:{gateway.port}/v1/events"
    tally, events = Tally(), EventLog()
    stop_watching = asyncio.Event()
    memory: list[float] = []
    watchers = [asyncio.create_task(events.follow(ws_url, key, stop_watching)) for key in keys]
    watchers.append(asyncio.create_task(sample_memory(gateway.proc.pid, memory, stop_watching)))
    await asyncio.sleep(1)  # the sockets are open before the first request
    started = time.monotonic()
    deadline = started + args.seconds
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
            asyncio.create_task(client(i, deadline, url, keys, args.seed, tally, tick))
            for i in range(args.clients)
        ]
        while not all(c.done() for c in clients):
            await asyncio.sleep(0.5)
            elapsed = min(args.seconds, time.monotonic() - started)
            progress.update(task, completed=elapsed, done=done)
        await asyncio.gather(*clients)
    ran_s = time.monotonic() - started
    # Terminal events may trail the client's view (an abandoned request ends on the server
    # after the client left): wait until every request has one, or 15 s.
    settle = time.monotonic() + 15
    while time.monotonic() < settle:
        if all(any(t in TERMINAL for t in events.types.get(r, ())) for r in tally.request_ids):
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1)  # a duplicate terminal event would arrive now
    stop_watching.set()
    await asyncio.gather(*watchers)
    return {"tally": tally, "events": events, "memory": memory, "ran_s": ran_s}


def stop_gateway(gateway: Server) -> float | None:
    """SIGTERM; the seconds until the process exited (None if it had to be killed)."""
    started = time.monotonic()
    gateway.send_signal(signal.SIGTERM)
    try:
        gateway.proc.wait(60)
    except subprocess.TimeoutExpired:
        return None
    return time.monotonic() - started


def report(args: argparse.Namespace, result: dict[str, Any], exit_s: float | None) -> str:
    tally: Tally = result["tally"]
    events: EventLog = result["events"]
    total = sum(tally.outcomes.values())
    terminal = Counter(
        sum(t in TERMINAL for t in events.types.get(rid, ())) for rid in tally.request_ids
    )
    by_outcome: dict[str, Counter[int]] = defaultdict(Counter)
    for rid, outcome in tally.request_ids.items():
        by_outcome[outcome][sum(t in TERMINAL for t in events.types.get(rid, ()))] += 1
    memory: list[float] = result["memory"]
    lat = sorted(tally.latencies)

    def pct(q: float) -> str:
        return f"{lat[min(len(lat) - 1, int(q * len(lat)))] * 1000:.0f}" if lat else "n/a"

    lines = [
        f"{args.clients} clients, {result['ran_s']:.0f} s, seed {args.seed}: {total} requests "
        f"({total / result['ran_s']:.1f}/s)",
        "",
        "| outcome | requests | share | terminal events 0 / 1 / more |",
        "|---|---|---|---|",
    ]
    for outcome in ("answer", "clean_error", "abandoned", "other"):
        n = tally.outcomes[outcome]
        t = by_outcome[outcome]
        more = sum(v for k, v in t.items() if k > 1)
        share = f"{100 * n / total:.1f} %" if total else "n/a"
        lines.append(f"| {outcome} | {n} | {share} | {t[0]} / {t[1]} / {more} |")
    more_total = sum(v for k, v in terminal.items() if k > 1)
    lines += [
        "",
        f"- requests with exactly one terminal event: {terminal[1]} of {total} "
        f"(none: {terminal[0]}, more than one: {more_total})",
        f"- answered streams, time to [DONE]: p50 {pct(0.5)} ms, p90 {pct(0.9)} ms, "
        f"p99 {pct(0.99)} ms",
        f"- gateway resident memory: start {memory[0]:.0f} MB, median "
        f"{statistics.median(memory):.0f} MB, peak {max(memory):.0f} MB"
        if memory
        else "- gateway resident memory: not sampled",
        "- clean errors by code: "
        + ", ".join(f"{code} {n}" for code, n in tally.error_codes.most_common()),
        f"- event sockets: {events.reconnects} reconnects, {events.gaps} gap messages",
        f"- gateway exit after SIGTERM: {exit_s:.2f} s"
        if exit_s is not None
        else "- gateway exit after SIGTERM: did not exit within 60 s (killed)",
    ]
    if tally.others:
        lines += ["", "Unexpected outcomes (first 10):", *(f"- {o}" for o in tally.others[:10])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200, help="concurrent streaming clients")
    parser.add_argument("--seconds", type=float, default=60, help="how long clients send")
    parser.add_argument("--seed", type=int, default=1, help="seed of the faults and the clients")
    parser.add_argument("--serve-faults", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_faults is not None:
        serve_faults(args.serve_faults, args.seed, count=2_000_000)
        return
    with tempfile.TemporaryDirectory(prefix="sincere-soak-") as tmp:
        servers = Servers(Path(tmp))
        try:
            console.print("starting the fault server and the gateway…")
            _, base_url = start_fault_server(servers, args.seed)
            gateway, keys = start_gateway(servers, base_url)
            result = asyncio.run(soak(args, gateway, keys))
            exit_s = stop_gateway(gateway)
            console.print(report(args, result, exit_s), markup=False)
        finally:
            servers.stop_all()


if __name__ == "__main__":
    main()
