"""Two real `sincere serve` processes on one Redis and one PostgreSQL: one gateway.

PENDING: these need the Redis backends (sincere.backends.redis.events / limits /
breakers). Once they are merged, rename this file to tests/test_fleet_shared.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.faults import Fault, FaultServer
from tests.fleet import WAIT_S, Fleet, Member

VISIBLE_WITHIN_S = 1.0  # a breaker that opened in one process, as every other sees it


def shared(tmp_path: Path, fault_server: FaultServer, extra: str = "", **kw: Any) -> Fleet:
    """A fleet on the shared backends: the same Redis (its own key prefix) and PostgreSQL."""
    return Fleet(tmp_path, fault_server.base_url, redis=True, extra=extra, **kw)


@pytest.fixture
def fleet(tmp_path: Path, fault_server: FaultServer) -> Iterator[Fleet]:
    with shared(tmp_path, fault_server) as running:
        yield running


def body(content: str = "Hi", *, stream: bool = False) -> dict[str, Any]:
    return {"model": "gpt", "messages": [{"role": "user", "content": content}], "stream": stream}


def chat(member: Member, key: str, rid: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} | ({"x-request-id": rid} if rid else {})
    return httpx.post(member.v1 + "/chat/completions", headers=headers, json=body(), timeout=WAIT_S)


async def socket(member: Member, key: str, last_event_id: int | None = None) -> ClientConnection:
    """A user's /v1/events socket on ``member``, past its ``ready`` message."""
    query = "" if last_event_id is None else f"?last_event_id={last_event_id}"
    ws = await connect(member.ws + query, additional_headers={"Authorization": f"Bearer {key}"})
    assert json.loads(await ws.recv())["type"] == "ready"
    return ws


async def events(ws: ClientConnection) -> AsyncIterator[dict[str, Any]]:
    """The socket's events (heartbeats and other messages skipped), each within WAIT_S."""
    while True:
        async with asyncio.timeout(WAIT_S):
            message = json.loads(await ws.recv())
        if message["type"] == "event":
            yield message["event"]


async def until_terminal(ws: ClientConnection, rid: str) -> list[dict[str, Any]]:
    """The socket's events up to and including request ``rid``'s terminal event."""
    seen = []
    async for event in events(ws):
        seen.append(event)
        if event["request_id"] == rid and event["type"] in ("request_completed", "request_failed"):
            return seen
    raise AssertionError("the socket closed first")


async def test_the_events_of_a_request_on_one_process_reach_a_socket_on_the_other(
    fleet: Fleet,
) -> None:
    a, b = fleet.members
    alice, bob = fleet.create_key("alice"), fleet.create_key("bob")
    alices_socket = await socket(b, alice)
    bobs_socket = await socket(a, bob)
    try:
        assert (await asyncio.to_thread(chat, a, alice, "alice-on-a")).status_code == 200
        seen = await until_terminal(alices_socket, "alice-on-a")
        assert next(e["type"] for e in seen if e["request_id"] == "alice-on-a") == "request_started"
        assert seen[-1]["type"] == "request_completed"
        assert {e["user_id"] for e in seen} == {"alice"}
        ids = [e["id"] for e in seen]
        assert ids == sorted(set(ids))  # one order, no repeats

        assert (await asyncio.to_thread(chat, b, bob, "bob-on-b")).status_code == 200
        bobs = await until_terminal(bobs_socket, "bob-on-b")
        assert {e["user_id"] for e in bobs} == {"bob"}  # never an event of another user
        assert {e["request_id"] for e in bobs if e["request_id"]} == {"bob-on-b"}
    finally:
        await alices_socket.close()
        await bobs_socket.close()


async def test_thirty_requests_of_a_ten_per_minute_user_over_two_processes_admit_exactly_ten(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    limits = "[tiers.free]\nrequests_per_minute = 10\nconcurrent_requests = 30\n"
    with shared(tmp_path, fault_server, limits) as fleet:
        key = fleet.create_key("alice", tier="free")
        started = time.monotonic()
        async with httpx.AsyncClient(
            headers={"Authorization": f"Bearer {key}"}, timeout=WAIT_S
        ) as client:
            responses = await asyncio.gather(
                *(
                    client.post(fleet.members[i % 2].v1 + "/chat/completions", json=body())
                    for i in range(30)
                )
            )
        elapsed = time.monotonic() - started
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 10 + [429] * 20
    for refused in (r for r in responses if r.status_code == 429):
        # The oldest admitted request leaves the one-minute window within 60 s of now.
        retry_after = int(refused.headers["retry-after"])
        assert 60 - elapsed - 1 <= retry_after <= 60
    assert len(fault_server.completions) == 10


def test_a_breaker_opened_through_one_process_refuses_on_the_other_within_a_second(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    breaker = "breaker_consecutive_failures = 2\nbreaker_open_s = 60"
    fault_server.default = Fault.status(503)
    with shared(tmp_path, fault_server, defaults=breaker) as fleet:
        a, b = fleet.members
        key = fleet.create_key("alice")
        for _ in range(2):
            assert chat(a, key).status_code == 503
        opened = time.monotonic()
        upstream_calls = len(fault_server.completions)
        time.sleep(max(0.0, opened + VISIBLE_WITHIN_S - time.monotonic()))
        refused = chat(b, key)
        assert refused.status_code == 503
        assert len(fault_server.completions) == upstream_calls  # B did not ask 'up'
        assert int(refused.headers["retry-after"]) >= 1  # the fleet's next probe
        [check] = httpx.get(b.url + "/health", timeout=WAIT_S).json()["checks"]["up:circuit"]
        assert check["observedValue"] == "open"


async def test_a_process_killed_mid_stream_breaks_its_stream_and_its_events_are_kept(
    fleet: Fleet, fault_server: FaultServer
) -> None:
    killed, survivor = fleet.members
    key = fleet.create_key("alice")
    fault_server.script(Fault.stall(after_chunks=1))  # the stream hangs after a chunk
    ws = await socket(killed, key)
    seen: list[dict[str, Any]] = []
    payload = json.dumps(body(stream=True)).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", killed.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nx-request-id: doomed\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    received = b""
    async with asyncio.timeout(WAIT_S):
        while b'"content"' not in received:  # the first chunk is out: the stream is on
            received += await reader.read(65536)
    async for event in events(ws):  # the request's events so far, as the user saw them
        seen.append(event)
        if event["type"] == "request_started":
            break

    await asyncio.to_thread(killed.kill)

    async with asyncio.timeout(WAIT_S):
        try:
            while chunk := await reader.read(65536):
                received += chunk
        except ConnectionResetError:
            pass
    writer.close()
    assert b"[DONE]" not in received  # a broken connection, never a false end
    assert not received.endswith(b"0\r\n\r\n")

    # The user reconnects to the survivor: every event emitted before the kill is there.
    again = await socket(survivor, key, last_event_id=0)
    try:
        replayed: list[dict[str, Any]] = []
        async with asyncio.timeout(WAIT_S):
            async for event in events(again):
                replayed.append(event)
                if event["id"] >= seen[-1]["id"]:
                    break
    finally:
        await again.close()
    assert [e["id"] for e in seen] == [e["id"] for e in replayed if e["id"] <= seen[-1]["id"]]
    assert (await asyncio.to_thread(chat, survivor, key)).status_code == 200  # it serves on


async def test_serve_with_two_workers_and_a_redis_url_runs_as_one_gateway(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    with shared(tmp_path, fault_server, size=1, workers=2) as fleet:
        [member] = fleet.members
        key = fleet.create_key("alice")
        for _ in range(4):  # the kernel spreads them over the workers
            assert chat(member, key).status_code == 200
        assert "configuration error" not in member.output()
        assert "its own event bus" not in member.output()  # the old warning is gone
