"""Two real `sincere serve` processes on one PostgreSQL store: one gateway for keys.

Each process keeps its events, limits and breakers to itself here (no [cluster] redis_url);
tests/pending_fleet_shared.py holds the tests of what the Redis backends share.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults import Fault, FaultServer
from tests.fleet import WAIT_S, Fleet

KEY_CACHE_S = 5.0  # how long a process may answer from its cache of verified keys


@pytest.fixture
def fleet(tmp_path: Path, fault_server: FaultServer) -> Iterator[Fleet]:
    with Fleet(tmp_path, fault_server.base_url) as running:
        yield running


def chat(url: str, key: str, content: str = "Hi") -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "gpt", "messages": [{"role": "user", "content": content}]},
        timeout=WAIT_S,
    )


def test_a_key_created_for_the_fleet_works_on_every_process_and_each_serves_chat(
    fleet: Fleet, fault_server: FaultServer
) -> None:
    key = fleet.create_key("alice")
    for member in fleet.members:
        response = chat(member.url, key, f"from {member.index}")
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"]
        assert response.json()["sincere"]["deployment"] == "up"
    asked = [r.body["messages"][-1]["content"] for r in fault_server.completions if r.body]
    assert asked == ["from 0", "from 1"]


def test_a_key_revoked_once_is_refused_by_every_process_after_their_cache_time(
    fleet: Fleet,
) -> None:
    key = fleet.create_key("alice")
    for member in fleet.members:  # each process now holds the key in its cache
        assert chat(member.url, key).status_code == 200
    fleet.revoke("alice")
    revoked_at = time.monotonic()
    time.sleep(max(0.0, revoked_at + KEY_CACHE_S + 0.2 - time.monotonic()))
    for member in fleet.members:
        response = chat(member.url, key)
        assert response.status_code == 401, response.text


async def test_a_process_killed_mid_stream_breaks_its_stream_and_the_other_serves_on(
    fleet: Fleet, fault_server: FaultServer
) -> None:
    key = fleet.create_key("alice")
    killed, survivor = fleet.members
    fault_server.script(Fault.stall(after_chunks=1))  # the first stream hangs after a chunk
    body = json.dumps(
        {"model": "gpt", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", killed.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    async with asyncio.timeout(WAIT_S):
        while b'"content"' not in received:  # the first chunk is out: the stream is on
            received += await reader.read(65536)

    await asyncio.to_thread(killed.kill)

    async with asyncio.timeout(WAIT_S):
        try:
            while chunk := await reader.read(65536):
                received += chunk
        except ConnectionResetError:
            pass  # broken, as it should be
    writer.close()
    assert b"[DONE]" not in received  # never a false end
    assert not received.endswith(b"0\r\n\r\n")  # and no clean end of the response either
    response = await asyncio.to_thread(chat, survivor.url, key)
    assert response.status_code == 200, response.text
