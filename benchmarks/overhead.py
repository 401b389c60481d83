"""Gateway overhead: sincere and LiteLLM's proxy in front of one fast upstream, in one run.

    .venv/bin/python -m benchmarks.overhead [--requests 2000] [--concurrency 1 64]
        [--no-litellm] [--baseline CHECKOUT]

Starts, each in its own process on 127.0.0.1: a fast OpenAI-compatible upstream
(benchmarks/upstream.py: a fixed short answer with usage), the real gateway
(`sincere serve`, model `gpt` on one openai deployment pointing at the upstream, a fresh
data directory, an enterprise key with generous tier limits) and LiteLLM's proxy (`litellm
--config`, model `gpt` -> openai/<model> at the upstream, master key, no database, no
telemetry). This process is the load generator: a small raw-asyncio HTTP/1.1 client on
uvloop, one keep-alive connection per concurrent caller, non-streaming
`POST /v1/chat/completions`. For each concurrency: a warm-up per target, then a fixed
number of requests per target, split into rounds that take the targets in turn (so that
whatever else the machine does falls on all of them alike; the other gateway is paused
with SIGSTOP meanwhile, so that its own background work does not), each request timed with
time.perf_counter from the first byte written to the last byte read. Reported per target:
requests/s, p50 and p99 latency, the latency added over calling the upstream directly, the
CPU time per request of the target process, of the upstream and of this client (from
/proc and time.process_time), and sincere's throughput as a multiple of LiteLLM's.

Every process shares the machine's cores: the figures include that contention, as they
would on a real host. Every process started here is stopped at the end, also on Ctrl-C.
LiteLLM is measured when its proxy runs (pip install -e '.[bench]'); otherwise the report
says why it did not. ``--baseline CHECKOUT`` adds the sincere of another checkout (say, a
git worktree of the commit before a change), run from its ``src/`` with this environment's
packages: before and after, side by side in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from benchmarks.upstream import ANSWER, MODEL

HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
PROMPT = b'{"model":"gpt","messages":[{"role":"user","content":"What is 2 + 2?"}],"max_tokens":16}'
LITELLM_KEY = "sk-bench-" + "0123456789abcdef" * 2  # the proxy's master key; no database
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
console = Console(highlight=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# Processes


@dataclass
class Server:
    """A process this benchmark started; stopped (with its process group) by ``stop``."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def cpu_s(self) -> float | None:
        """User + system CPU seconds so far of the process and every process of its group
        (``--workers N``: the workers do the work), from Linux /proc; else None."""
        if not Path(f"/proc/{self.proc.pid}/stat").exists():
            return None
        return sum(
            cpu for pgrp, cpu in map(_stat, Path("/proc").glob("[0-9]*")) if pgrp == self.proc.pid
        )

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the process's group (it and whatever it started)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)

    def stop(self) -> None:
        self.send_signal(signal.SIGCONT)  # a paused process would not act on SIGTERM
        if self.proc.poll() is None:
            self.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                self.proc.wait(5)
        # Whatever the leader left in its group (workers, helpers) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _stat(process: Path) -> tuple[int | None, float]:
    """A process's group and its CPU seconds so far (user + system); (None, 0) if gone."""
    try:
        fields = (process / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None, 0.0
    return int(fields[2]), (int(fields[11]) + int(fields[12])) / TICKS  # pgrp, utime, stime


class Servers:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Server] = []

    def start(
        self, name: str, port: int, args: list[str], env: dict[str, str] | None = None
    ) -> Server:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                cwd=self.workdir,
                start_new_session=True,  # its own process group: stopped as a whole
            )
        server = Server(name, port, proc, log)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in reversed(self.started):
            server.stop()


def wait_ready(server: Server, path: str, headers: dict[str, str], timeout_s: float) -> None:
    """Poll until ``path`` answers 200; raise with the log's tail if the process dies first."""
    deadline = time.monotonic() + timeout_s
    url = f"http://{HOST}:{server.port}{path}"
    last = "no answer"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(
                    f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}"
                )
            try:
                response = client.get(url, headers=headers)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready within {timeout_s:g} s ({last}):\n{server.tail()}")


def upstream_process(*args: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run ``benchmarks.upstream`` as a module: run as a
    script, its directory would come first on sys.path, and ``benchmarks/queue.py`` would
    shadow the standard library's ``queue``."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return [sys.executable, "-m", "benchmarks.upstream", *args], {"PYTHONPATH": path}


def start_upstream(servers: Servers) -> Server:
    port = free_port()
    command, env = upstream_process("--port", str(port))
    server = servers.start("upstream", port, command, env)
    _wait_upstream(server)
    return server


def _wait_upstream(server: Server) -> None:
    """The upstream has no GET route: wait until it answers a completion."""
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"the upstream exited:\n{server.tail()}")
            try:
                response = client.post(
                    f"http://{HOST}:{server.port}/v1/chat/completions", content=PROMPT
                )
                if response.status_code == 200 and ANSWER in response.text:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"the upstream did not answer within 30 s:\n{server.tail()}")


SINCERE_CONFIG = """\
[tiers.enterprise]
requests_per_minute = 10000000
concurrent_requests = 1000

[[models]]
name = "gpt"
deployments = ["upstream"]

[[deployments]]
name = "upstream"
provider = "openai"
base_url = "{base_url}"
model = "{model}"
api_key_env = "BENCH_UPSTREAM_KEY"
"""


def create_key(command: list[str], config: Path, env: dict[str, str]) -> str:
    """A key for the benchmark's user (enterprise tier), made with ``sincere keys create``."""
    created = subprocess.run(
        [
            *command,
            *("keys", "create", "--config", str(config)),
            *("--user", "bench", "--tier", "enterprise"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )
    if created.returncode != 0:
        raise RuntimeError(f"sincere keys create failed:\n{created.stderr}")
    return created.stdout.strip().splitlines()[-1]


def start_sincere(
    servers: Servers,
    upstream: Server,
    name: str = "sincere",
    source: Path | None = None,
    *,
    extra: str = "",
    env: dict[str, str] | None = None,
) -> tuple[Server, str]:
    """``sincere serve`` as installed, or (``source``) from another checkout's ``src``
    with this environment's packages: the same gateway before a change, in the same run.
    ``extra`` is added to its configuration file, ``env`` to its environment."""
    config = servers.workdir / f"{name}.toml"
    config.write_text(
        SINCERE_CONFIG.format(base_url=f"http://{HOST}:{upstream.port}/v1", model=MODEL) + extra
    )
    env = {
        "SINCERE_DATA_DIR": str(servers.workdir / f"{name}-data"),
        "BENCH_UPSTREAM_KEY": "dummy",
        **(env or {}),
    }
    command = [str(VENV_BIN / "sincere")]
    if source is not None:
        command = [sys.executable, "-m", "sincere.cli"]
        env["PYTHONPATH"] = str(source / "src")
    key = create_key(command, config, env)
    port = free_port()
    server = servers.start(
        name, port, [*command, "serve", "--config", str(config), "--port", str(port)], env
    )
    wait_ready(server, "/v1/models", {"Authorization": f"Bearer {key}"}, 120)
    return server, key


LITELLM_CONFIG = """\
model_list:
  - model_name: gpt
    litellm_params:
      model: openai/{model}
      api_base: {base_url}
      api_key: dummy
litellm_settings:
  telemetry: false
general_settings:
  master_key: {key}
  disable_spend_logs: true
  disable_error_logs: true
"""


def start_litellm(servers: Servers, upstream: Server) -> Server:
    config = servers.workdir / "litellm.yaml"
    config.write_text(
        LITELLM_CONFIG.format(
            model=MODEL, base_url=f"http://{HOST}:{upstream.port}/v1", key=LITELLM_KEY
        )
    )
    port = free_port()
    server = servers.start(
        "litellm",
        port,
        [str(VENV_BIN / "litellm"), "--config", str(config), "--host", HOST, "--port", str(port)],
        # The bundled price map instead of a download at start; no database, no telemetry.
        {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"},
    )
    wait_ready(server, "/v1/models", {"Authorization": f"Bearer {LITELLM_KEY}"}, 180)
    return server


# Load generation


class BadResponse(Exception):
    pass


class Connection:
    """One HTTP/1.1 keep-alive connection that sends the same request again and again."""

    def __init__(self, port: int, request: bytes) -> None:
        self.port = port
        self.request = request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def call(self) -> float:
        """Seconds for one request and its complete response."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None
        assert self.writer is not None
        started = time.perf_counter()
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, headers = _parse_head(head)
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(self.reader)
        else:
            body = await self.reader.read()
            await self.close()
        elapsed = time.perf_counter() - started
        if headers.get("connection", "").lower() == "close":
            await self.close()
        if status != 200 or ANSWER.encode() not in body:
            raise BadResponse(f"HTTP {status}: {body[:300]!r}")
        return elapsed

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def build_request(port: int, key: str | None) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}:{port}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(PROMPT)}\r\n\r\n"
    )
    return head.encode() + PROMPT


@dataclass
class Target:
    name: str
    server: Server
    key: str | None
    connections: list[Connection] = field(default_factory=list)

    async def connect(self, size: int) -> None:
        """``size`` fresh connections, opened before any timing starts.

        Servers close keep-alive connections that idle for a few seconds (uvicorn: 5 s), as
        they do while the other targets take their turn: every round starts with new ones.
        """
        await self.close()
        request = build_request(self.server.port, self.key)
        self.connections = [Connection(self.server.port, request) for _ in range(size)]
        await asyncio.gather(*(c.open() for c in self.connections))

    async def close(self) -> None:
        for connection in self.connections:
            await connection.close()
        self.connections.clear()


@dataclass
class Phase:
    """One target at one concurrency: the measured requests of every round, added up."""

    target: Target
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float | None = 0.0  # the target process's CPU time (None: /proc unreadable)
    upstream_cpu_s: float | None = 0.0
    client_cpu_s: float = 0.0  # this process (the load generator)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall_s

    def p(self, q: float) -> float:
        """The q-quantile latency in milliseconds (nearest rank)."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

    def per_request_ms(self, seconds: float | None) -> str:
        return "n/a" if seconds is None else f"{seconds * 1000 / len(self.latencies):.2f}"


def _add(total: float | None, before: float | None, after: float | None) -> float | None:
    if total is None or before is None or after is None:
        return None
    return total + after - before


async def run_load(
    target: Target, concurrency: int, count: int, progress: Progress, task: TaskID
) -> tuple[list[float], float]:
    """``count`` requests from ``concurrency`` callers; the latencies and the wall time."""
    latencies: list[float] = []
    remaining = count

    async def caller(connection: Connection) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                latencies.append(await connection.call())
            except (OSError, asyncio.IncompleteReadError, BadResponse) as exc:
                raise BadResponse(f"{target.name}: {type(exc).__name__}: {exc}") from exc
            progress.advance(task)

    await target.connect(concurrency)
    started = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in target.connections))
    return latencies, time.perf_counter() - started


def others(targets: list[Target], measured: Target, upstream: Server) -> list[Server]:
    """The gateways not being measured (the upstream serves every target: it never pauses)."""
    return [t.server for t in targets if t is not measured and t.server is not upstream]


@contextlib.contextmanager
def paused(servers: list[Server]) -> Iterator[None]:
    """Stop these processes (SIGSTOP) for the block, and let them go on after it.

    LiteLLM's proxy runs periodic jobs even when idle; on a 2-core machine they would be
    counted against whichever target is measured at the time.
    """
    for server in servers:
        server.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for server in servers:
            server.send_signal(signal.SIGCONT)


async def measure(
    targets: list[Target],
    upstream: Server,
    concurrency: int,
    args: argparse.Namespace,
    progress: Progress,
) -> list[Phase]:
    """A warm-up per target, then ``args.rounds`` rounds that take the targets in turn.

    Interleaving spreads whatever else the machine does over every target alike; the other
    gateways are paused meanwhile, so that their own background work does not fall on it.
    """
    warmup = args.warmup if args.warmup is not None else max(50, args.requests // 10)
    for target in targets:
        task = progress.add_task(f"{target.name} c={concurrency} warm-up", total=warmup)
        with paused(others(targets, target, upstream)):
            await run_load(target, concurrency, warmup, progress, task)
    phases = [Phase(t, concurrency) for t in targets]
    tasks = [progress.add_task(f"{t.name} c={concurrency}", total=args.requests) for t in targets]
    rounds = max(1, min(args.rounds, args.requests))
    for r in range(rounds):
        share = args.requests // rounds + (args.requests % rounds if r == rounds - 1 else 0)
        for phase, task in zip(phases, tasks, strict=True):
            server = phase.target.server
            with paused(others(targets, phase.target, upstream)):
                cpu, up, client = server.cpu_s(), upstream.cpu_s(), time.process_time()
                latencies, wall = await run_load(phase.target, concurrency, share, progress, task)
            phase.latencies += latencies
            phase.wall_s += wall
            phase.client_cpu_s += time.process_time() - client
            phase.cpu_s = _add(phase.cpu_s, cpu, server.cpu_s())
            phase.upstream_cpu_s = _add(phase.upstream_cpu_s, up, upstream.cpu_s())
    for target in targets:
        await target.close()
    return phases


# Report


def versions() -> str:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    names = ("sincere", "litellm", "uvicorn", "uvloop", "httptools", "fastapi", "httpx")
    listed = ", ".join(f"{n} {version(n)}" for n in names)
    return f"Python {platform.python_version()}, {os.cpu_count()} cores; {listed}"


def report(phases: list[Phase], litellm_missing: str | None, args: argparse.Namespace) -> str:
    lines = [
        f"{versions()}",
        f"{args.requests} measured requests per target and concurrency, in {args.rounds} "
        "interleaved rounds (the other gateway paused)",
        "",
        "| target | concurrency | requests/s | p50 ms | p99 ms | added p50 ms | added p99 ms "
        "| target CPU ms/req | upstream CPU ms/req | client CPU ms/req |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(p.target.name, p.concurrency): p for p in phases}
    for c in args.concurrency:
        direct = by_key[("direct", c)]
        for name in args.target_names:
            phase = by_key.get((name, c))
            if phase is None:
                lines.append(f"| {name} | {c} | not measured: {litellm_missing} ||||||||")
                continue
            added = " | "
            upstream_cpu = ""
            if phase is not direct:
                added = (
                    f"{phase.p(0.5) - direct.p(0.5):+.2f} | {phase.p(0.99) - direct.p(0.99):+.2f}"
                )
                upstream_cpu = phase.per_request_ms(phase.upstream_cpu_s)
            lines.append(
                f"| {name} | {c} | {phase.rps:,.0f} | {phase.p(0.5):.2f} | {phase.p(0.99):.2f} "
                f"| {added} | {phase.per_request_ms(phase.cpu_s)} | {upstream_cpu} "
                f"| {phase.per_request_ms(phase.client_cpu_s)} |"
            )
    lines.append("")
    for c in args.concurrency:
        ours, theirs = by_key.get(("sincere", c)), by_key.get(("litellm", c))
        if ours is None:
            continue
        added = ours.p(0.5) - by_key[("direct", c)].p(0.5)
        text = f"concurrency {c}: sincere adds {added:.2f} ms at p50"
        if (old := by_key.get(("baseline", c))) is not None:
            text += f" (the baseline {old.p(0.5) - by_key[('direct', c)].p(0.5):.2f} ms)"
        if theirs is not None:
            text += f"; its throughput is {ours.rps / theirs.rps:.2f}× LiteLLM's"
            if ours.cpu_s and theirs.cpu_s:
                text += f", its CPU time per request {theirs.cpu_s / ours.cpu_s:.2f}× smaller"
        lines.append(text)
    return "\n".join(lines)


async def bench(args: argparse.Namespace, servers: Servers) -> str:
    progress = Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with console.status("starting the upstream and sincere…"):
        upstream = start_upstream(servers)
        sincere, key = start_sincere(servers, upstream)
    targets = [Target("direct", upstream, None), Target("sincere", sincere, key)]
    if args.baseline is not None:
        with console.status("starting the baseline sincere…"):
            old, old_key = start_sincere(servers, upstream, "baseline", args.baseline)
        targets.append(Target("baseline", old, old_key))
    litellm_missing: str | None = None
    if args.no_litellm:
        litellm_missing = "--no-litellm"
    else:
        with console.status("starting LiteLLM's proxy…"):
            try:
                targets.append(Target("litellm", start_litellm(servers, upstream), LITELLM_KEY))
            except (RuntimeError, OSError) as exc:
                litellm_missing = f"the proxy did not start ({str(exc).splitlines()[0]})"
                console.print(f"[yellow]LiteLLM not measured:[/] {exc}")
    args.target_names = [t.name for t in targets] + (["litellm"] if litellm_missing else [])
    phases: list[Phase] = []
    with progress:
        for concurrency in args.concurrency:
            phases += await measure(targets, upstream, concurrency, args, progress)
    return report(phases, litellm_missing, args)


@contextlib.contextmanager
def stopped_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so that the finally below stops every server."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.overhead",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--requests", type=int, default=2000, help="measured requests per phase (default 2000)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="warm-up requests per phase (default N/10)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 64],
        help="concurrent callers, one keep-alive connection each (default: 1 64)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="split each target's requests into this many rounds, taken in turn (default 4)",
    )
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM's proxy")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="CHECKOUT",
        help="also measure the sincere of another checkout (e.g. a git worktree of the "
        "commit before a change), run from its src/ with this environment's packages",
    )
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # the plain loop works, only the client costs a little more
        uvloop = None  # type: ignore[assignment]
    workdir = Path(tempfile.mkdtemp(prefix="sincere-overhead-"))
    servers = Servers(workdir)
    keep = False
    try:
        with stopped_on_sigterm():
            run = uvloop.run if uvloop is not None else asyncio.run
            table = run(bench(args, servers))
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
