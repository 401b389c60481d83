"""Every request's events end with exactly one request_completed or request_failed, even
when its client leaves mid-request (and then its upstream request is let go too).

Real sockets throughout: a raw HTTP client on 127.0.0.1 that closes its connection, the
user's own /v1/events WebSocket, and the fault server, which records the gateway closing
the upstream connection it was holding.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from sincere.config import BUILTIN_DEPLOYMENT, Settings
from sincere.llm import embedded
from sincere.runtime import build_runtime
from tests.faults import Fault, FaultServer
from tests.live import LiveGateway, LiveServer, run, settings_for

WAIT_S = 20  # bound on every wait for something that should happen


def patient_settings(tmp_path: Path, upstream: str) -> Settings:
    """Limits far longer than any test: only the client (or the test) ends a request."""
    settings = settings_for(tmp_path, upstream)
    defaults = settings.defaults.model_copy(
        update={"first_token_timeout_s": 120, "stream_idle_timeout_s": 120, "timeout_s": 120}
    )
    return settings.model_copy(update={"defaults": defaults})


@pytest.fixture
def patient(tmp_path: Path, fault_server: FaultServer) -> Iterator[LiveGateway]:
    gateway = build_runtime(patient_settings(tmp_path, fault_server.base_url), env={})
    with LiveServer(gateway) as running:
        running.keys["alice"], _ = run(gateway.keys.create("alice", "free", "user"))
        yield running


@asynccontextmanager
async def events_of(live: LiveGateway, who: str) -> AsyncIterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {live.keys[who]}"}
    async with connect(live.ws, additional_headers=headers) as ws:
        assert (await _message(ws))["type"] == "ready"
        yield ws


async def _message(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(WAIT_S):
        message: dict[str, Any] = json.loads(await ws.recv())
    return message


async def events_until_end(ws: ClientConnection, request_id: str) -> list[dict[str, Any]]:
    """Every event received until ``request_id`` completes or fails (heartbeats skipped)."""
    received: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT_S):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] != "event":
                continue
            received.append(message["event"])
            event = message["event"]
            if event["request_id"] == request_id and event["type"] in TERMINAL:
                return received


TERMINAL = ("request_completed", "request_failed")


def request_bytes(live: LiveGateway, who: str, rid: str, *, stream: bool, **extra: Any) -> bytes:
    chat = {"model": "gpt", "messages": [{"role": "user", "content": "Hi"}], **extra}
    body = json.dumps({**chat, "stream": stream}).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {live.keys[who]}\r\nx-request-id: {rid}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def open_request(
    live: LiveGateway, who: str, rid: str, *, stream: bool, **extra: Any
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = live.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request_bytes(live, who, rid, stream=stream, **extra))
    await writer.drain()
    return reader, writer


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        await asyncio.sleep(0.01)


async def finish_another_request(
    live: LiveGateway, ws: ClientConnection, fault_server: FaultServer
) -> list[dict[str, Any]]:
    """One more request to its end, and every event the socket got meanwhile.

    Events of one user arrive in order, so an event of an earlier request that came after
    its terminal one would be among these.
    """
    fault_server.script(Fault.ok())
    _, writer = await open_request(live, "alice", "afterwards", stream=False)
    try:
        return await events_until_end(ws, "afterwards")
    finally:
        writer.close()


def _count(live: LiveGateway, status: int) -> float:
    value = live.gateway.metrics.registry.get_sample_value(
        "sincere_requests_total", {"route": "chat", "status": str(status)}
    )
    return value or 0.0


async def test_a_stream_whose_client_leaves_fails_once_and_its_upstream_is_cancelled(
    patient: LiveGateway, fault_server: FaultServer
) -> None:
    fault_server.script(Fault.stall(after_chunks=1))  # one chunk, then silence until closed
    async with events_of(patient, "alice") as ws:
        rid = "leaves-mid-stream"
        reader, writer = await open_request(patient, "alice", rid, stream=True)
        received = b""
        async with asyncio.timeout(WAIT_S):
            while b'"content"' not in received:  # the first chunk reached the client
                received += await reader.read(65536)
        writer.close()
        events = await events_until_end(ws, rid)
        later = await finish_another_request(patient, ws, fault_server)

    mine = [(e["type"], e["data"].get("reason")) for e in events if e["request_id"] == rid]
    assert mine == [("request_started", None), ("request_failed", "client_gone")]
    assert [e for e in later if e["request_id"] == rid] == []
    upstream = fault_server.completions[0].connection
    await until(lambda: upstream in fault_server.client_closed)  # no more tokens are paid for
    await until(lambda: "alice" not in patient.gateway.limiter._active)  # the slot is free


async def test_a_waiting_client_that_leaves_fails_once_and_its_upstream_is_cancelled(
    patient: LiveGateway, fault_server: FaultServer
) -> None:
    fault_server.script(Fault.hang())  # the upstream never answers
    async with events_of(patient, "alice") as ws:
        _, writer = await open_request(patient, "alice", "leaves-while-waiting", stream=False)
        await until(lambda: len(fault_server.completions) == 1)  # the upstream has the request
        writer.close()
        events = await events_until_end(ws, "leaves-while-waiting")
        later = await finish_another_request(patient, ws, fault_server)

    mine = [
        (e["type"], e["data"].get("reason"))
        for e in events
        if e["request_id"] == "leaves-while-waiting"
    ]
    assert mine == [("request_started", None), ("request_failed", "client_gone")]
    assert [e for e in later if e["request_id"] == "leaves-while-waiting"] == []
    upstream = fault_server.completions[0].connection
    await until(lambda: upstream in fault_server.client_closed)
    await until(lambda: "alice" not in patient.gateway.limiter._active)
    assert (_count(patient, 499), _count(patient, 500)) == (1, 0)  # nginx's "client closed"


async def test_the_embedded_model_stops_generating_when_its_client_leaves(
    patient: LiveGateway,
) -> None:
    # Greedy decoding of this prompt runs to 121 tokens when nobody stops it (measured).
    count = [{"role": "user", "content": "Count from 1 to 500, one number per line."}]
    async with events_of(patient, "alice") as ws:
        rid = "leaves-the-embedded-model"
        reader, writer = await open_request(
            patient,
            "alice",
            rid,
            stream=True,
            model="smollm2",
            messages=count,
            max_tokens=500,  # within the free tier's cap of 512
            temperature=0,
        )
        received = b""
        async with asyncio.timeout(WAIT_S * 6):  # a cold model on a busy machine
            while b'"content"' not in received:
                data = await reader.read(65536)
                assert data, f"the gateway closed the response: {received[:300]!r}"
                received += data
        writer.close()
        events = await events_until_end(ws, rid)

    mine = [(e["type"], e["data"].get("reason")) for e in events if e["request_id"] == rid]
    assert mine[0] == ("request_started", None)
    assert mine[-1] == ("request_failed", "client_gone")
    assert [t for t, _ in mine].count("request_failed") == 1
    await asyncio.wrap_future(embedded.WORKER.executor.submit(lambda: None))  # the worker is idle
    key = (embedded.default_model_path(), BUILTIN_DEPLOYMENT.context_window or 0)
    llama = embedded._models[key]  # the gateway's embedded deployment
    # Tokens in the context: the prompt (45) and what was generated before the stop.
    assert llama.n_tokens < 45 + 20


async def test_a_stream_the_response_guard_cuts_ends_once(
    patient: LiveGateway, fault_server: FaultServer
) -> None:
    fault_server.script(Fault.ok(text="Sure. Processing completed with fallback response for: x"))
    async with events_of(patient, "alice") as ws:
        rid = "cut-by-the-guard"
        reader, writer = await open_request(patient, "alice", rid, stream=True)
        async with asyncio.timeout(WAIT_S):
            received = await reader.read()  # the server ends it: in-band error, no [DONE]
        writer.close()
        events = await events_until_end(ws, rid)
        later = await finish_another_request(patient, ws, fault_server)

    assert b"response guard" in received
    assert b"Processing completed" not in received  # held back, never sent
    mine = [e["type"] for e in events if e["request_id"] == rid]
    assert mine[0] == "request_started"
    assert [t for t in mine if t in TERMINAL] == ["request_failed"]
    assert [e for e in later if e["request_id"] == rid] == []
