"""SIGTERM on a real `sincere serve` while requests hang upstream: bounded, and honest.

Every wait here is bounded generously; no assertion is about how long anything took, only
that the process exited and what each client and the user's event socket received.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.faults import Fault, FaultServer, refused_port

WAIT_S = 60  # bound on every wait for something that should happen
GRACE_S = 1


def config(tmp_path: Path, upstream: str) -> Path:
    path = tmp_path / "sincere.toml"
    path.write_text(
        f"""
[defaults]
max_retries = 0
timeout_s = 600                # only the shutdown can end these requests
first_token_timeout_s = 600
stream_idle_timeout_s = 600

[server]
shutdown_grace_s = 600         # --shutdown-grace overrides it

[[models]]
name = "gpt"
deployments = ["up"]

[[deployments]]
name = "up"
provider = "openai"
base_url = "{upstream}"
model = "up-model"
"""
    )
    return path


Served = tuple[subprocess.Popen[str], str]


@pytest.fixture
def served(tmp_path: Path, fault_server: FaultServer) -> Iterator[Served]:
    """`sincere serve` in its own process, on the fault server: the process and its address."""
    port = refused_port()
    env = {"SINCERE_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    env["HOME"] = str(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)  # this checkout's sincere
    command = [sys.executable, "-m", "sincere.cli", "serve", "--port", str(port)]
    command += ["--shutdown-grace", str(GRACE_S)]
    process = subprocess.Popen(
        [*command, "--config", str(config(tmp_path, fault_server.base_url))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        yield process, f"127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=WAIT_S)


def first_key(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if "Uvicorn running" in line:
            return lines[lines.index("First admin key (shown once, store it now):\n") + 1].strip()
    raise AssertionError("".join(lines))


def chat(key: str, rid: str, *, stream: bool) -> bytes:
    body = json.dumps(
        {"model": "gpt", "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
    ).encode()
    return (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {key}\r\nx-request-id: {rid}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        await asyncio.sleep(0.01)


async def events_until_closed(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every event the socket gets until the server closes it."""
    events: list[dict[str, Any]] = []
    try:
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "event":
                events.append(message["event"])
    except ConnectionClosed:
        return events


def sse_data(raw: bytes) -> list[str]:
    """The ``data:`` payloads of a chunked SSE response (chunk-size lines dropped)."""
    return [
        line.removeprefix("data: ")
        for line in raw.decode().split("\r\n")
        if line.startswith("data: ")
    ]


async def test_sigterm_ends_hanging_requests_as_failed_and_the_process_exits(
    served: Served, fault_server: FaultServer
) -> None:
    process, address = served
    key = await asyncio.to_thread(first_key, process)
    fault_server.script(Fault.stall(after_chunks=1), Fault.hang())  # both hang for good
    host, port = address.split(":")
    async with connect(
        f"ws://{address}/v1/events", additional_headers={"Authorization": f"Bearer {key}"}
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"

        stream_reader, stream_writer = await asyncio.open_connection(host, int(port))
        stream_writer.write(chat(key, "streaming", stream=True))
        received = b""
        async with asyncio.timeout(WAIT_S):
            while b'"content"' not in received:  # the first chunk is out: the stream is on
                received += await stream_reader.read(65536)
        wait_reader, wait_writer = await asyncio.open_connection(host, int(port))
        wait_writer.write(chat(key, "waiting", stream=False))
        await until(lambda: len(fault_server.completions) == 2)

        process.send_signal(signal.SIGTERM)

        async with asyncio.timeout(WAIT_S):
            received += await stream_reader.read()  # to the end: the server closes it
            waited = await wait_reader.read()
            events = await events_until_closed(ws)
    assert ws.close_code == 1012  # service restart: reconnect elsewhere, or later

    await asyncio.to_thread(process.wait, WAIT_S)  # it exited (a timeout raises)
    assert process.returncode in (0, -signal.SIGTERM)

    # The stream: its text, then the in-band error; never [DONE].
    data = sse_data(received)
    assert json.loads(data[0])["choices"][0]["delta"]["content"]
    assert "[DONE]" not in data
    error = json.loads(data[-1])["error"]
    assert (error["code"], error["request_id"]) == ("service_unavailable", "streaming")
    assert error["message"] == "the gateway is shutting down"
    assert received.endswith(b"0\r\n\r\n")  # the response ended cleanly after it

    # The waiting request: a plain 503 saying why.
    head, _, body = waited.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503")
    assert b"retry-after" not in head.lower()  # when it could succeed is unknown
    assert b"the gateway is shutting down" in body

    # The user's events: each request failed, once, saying why, before the socket closed.
    ends = sorted(
        (e["request_id"], e["type"], e["data"].get("reason"))
        for e in events
        if e["type"] in ("request_completed", "request_failed")
    )
    assert ends == [
        ("streaming", "request_failed", "shutting_down"),
        ("waiting", "request_failed", "shutting_down"),
    ]
    upstream = {r.connection for r in fault_server.completions}
    await until(lambda: set(fault_server.client_closed) == upstream)  # neither is left open
