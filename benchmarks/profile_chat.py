"""CPU per chat request inside sincere's ASGI app, without the HTTP server or a client.

    .venv/bin/python -m benchmarks.profile_chat [--requests 5000] [--profile 30]

Starts the fast upstream (benchmarks/upstream.py) in its own process, builds the gateway
as `sincere serve` does (same settings as benchmarks/overhead.py, a fresh data directory),
and calls the ASGI app directly with a non-streaming chat request, one at a time. Reports
the process CPU time per request (the app's own work plus its upstream call, minus
uvicorn's HTTP parsing and the client): a steadier figure than latency on a shared machine,
for comparing two versions of the code. With --profile N it prints the N costliest
functions by cumulative time (cProfile; --sort tottime for their own time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.overhead import HOST, PROMPT, SINCERE_CONFIG, Servers, start_upstream
from benchmarks.upstream import MODEL
from sincere.config import load_settings
from sincere.runtime import build_runtime
from sincere.server.app import create_app
from sincere.server.lifecycle import CONNECTION_EXTENSION, ClientConnection


async def _call(app: Any, key: str) -> int:
    """One POST /v1/chat/completions through the ASGI app; the status code."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(PROMPT)).encode()),
            (b"authorization", f"Bearer {key}".encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        # What sincere's HTTP protocol (server/serving.py) gives every request.
        "extensions": {CONNECTION_EXTENSION: {"connection": ClientConnection()}},
    }
    status = 0
    read = False

    async def receive() -> dict[str, Any]:
        nonlocal read
        if not read:
            read = True
            return {"type": "http.request", "body": PROMPT, "more_body": False}
        await asyncio.Event().wait()  # as a server does: the next message is the disconnect
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _run(app: Any, key: str, requests: int, profile: int, sort: str) -> list[float]:
    for _ in range(max(200, requests // 10)):  # warm-up: caches, connection pool
        assert await _call(app, key) == 200
    profiler = cProfile.Profile() if profile else None
    samples: list[float] = []
    if profiler:
        profiler.enable()
    for _ in range(requests):
        before = time.process_time()
        status = await _call(app, key)
        samples.append(time.process_time() - before)
        assert status == 200, status
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats(sort).print_stats(profile)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_chat",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=5000, help="measured requests")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="print the N costliest functions"
    )
    parser.add_argument(
        "--sort", default="cumulative", help="cProfile sort key for --profile (e.g. tottime)"
    )
    args = parser.parse_args()
    import uvloop

    workdir = Path(tempfile.mkdtemp(prefix="sincere-profile-"))
    servers = Servers(workdir)
    try:
        upstream = start_upstream(servers)
        config = workdir / "sincere.toml"
        config.write_text(
            SINCERE_CONFIG.format(base_url=f"http://{HOST}:{upstream.port}/v1", model=MODEL)
        )
        env = {"SINCERE_DATA_DIR": str(workdir / "data"), "BENCH_UPSTREAM_KEY": "dummy"}
        os.environ.update(env)
        gateway = build_runtime(load_settings(config))
        key, _ = uvloop.run(gateway.keys.create("bench", "enterprise"))
        app = create_app(gateway)
        samples = uvloop.run(_run(app, key, args.requests, args.profile, args.sort))
        uvloop.run(gateway.aclose())
    finally:
        servers.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    total = sum(samples)
    print(
        f"{len(samples)} requests: CPU {total / len(samples) * 1e6:.0f} us/request on average, "
        f"median {statistics.median(samples) * 1e6:.0f} us"
    )


if __name__ == "__main__":
    main()
