"""WS /v1/events as a client sees it: a real gateway, a real WebSocket client, real requests."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sincere.backends.sql import SqlKeyStore, open_database
from sincere.events import EPOCH_SPAN
from sincere.runtime import build_runtime
from sincere.server import websocket as events_route
from tests.faults import Fault, FaultServer
from tests.live import LiveGateway, LiveServer, run, settings_for

WAIT_S = 10  # bound on every wait for a message that should come


@asynccontextmanager
async def _socket(
    live: LiveGateway, who: str | None = "alice", query: str = "", **kwargs: Any
) -> AsyncIterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {live.keys[who]}"} if who else {}
    async with connect(live.ws + query, additional_headers=headers, **kwargs) as ws:
        yield ws


async def _receive(ws: ClientConnection, timeout_s: float = WAIT_S) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        message: dict[str, Any] = json.loads(await ws.recv())
    return message


async def _ready(ws: ClientConnection) -> dict[str, Any]:
    message = await _receive(ws)
    assert message["type"] == "ready"
    return message


async def _events_until(
    ws: ClientConnection, request_id: str, timeout_s: float = WAIT_S
) -> list[dict[str, Any]]:
    """Every event received until the given request completes or fails (heartbeats skipped)."""
    received: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] != "event":
                continue
            event = message["event"]
            received.append(event)
            if event["request_id"] == request_id and event["type"] in (
                "request_completed",
                "request_failed",
            ):
                return received


async def _chat(live: LiveGateway, who: str = "alice", model: str = "gpt") -> str:
    """One chat completion; its request id."""
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(
            live.v1 + "/chat/completions",
            headers={"Authorization": f"Bearer {live.keys[who]}"},
            json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
        )
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


async def _read_all(ws: ClientConnection, into: list[dict[str, Any]]) -> None:
    """Collect messages until the connection closes (or a wait runs out)."""
    while True:
        into.append(await _receive(ws))


def _start(live: LiveGateway) -> int:
    """The id this process's event stream counts from (its first event is one more)."""
    return live.gateway.bus.epoch * EPOCH_SPAN


def _of(events: list[dict[str, Any]], request_id: str) -> list[str]:
    return [e["type"] for e in events if e["request_id"] == request_id]


async def test_a_user_sees_their_request_start_and_complete(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok(text="Hello there.")
    deliveries = live.gateway.metrics.registry.get_sample_value("sincere_event_deliveries_total")
    async with _socket(live) as ws:
        ready = await _ready(ws)
        assert ready["user_id"] == "alice"
        assert ready["last_event_id"] == _start(live)  # no event yet in this stream
        rid = await _chat(live)
        events = await _events_until(ws, rid)
    assert _of(events, rid) == ["request_started", "request_completed"]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert {e["user_id"] for e in events} == {"alice"}
    assert events[-1]["data"]["deployment"] == "up"
    after = live.gateway.metrics.registry.get_sample_value("sincere_event_deliveries_total")
    assert after == (deliveries or 0) + len(events)


async def test_users_never_see_each_others_events(live: LiveGateway) -> None:
    async with _socket(live, "alice") as alice, _socket(live, "bob") as bob:
        await _ready(alice)
        await _ready(bob)
        alice_rid = await _chat(live, "alice")  # its events are published before it returns
        bob_rid = await _chat(live, "bob")
        bob_saw = await _events_until(bob, bob_rid)
        alice_saw = await _events_until(alice, alice_rid)
    assert _of(bob_saw, bob_rid) == ["request_started", "request_completed"]
    assert {e["user_id"] for e in bob_saw} == {"bob"}
    assert not _of(bob_saw, alice_rid)
    assert {e["user_id"] for e in alice_saw} == {"alice"}
    assert not _of(alice_saw, bob_rid)


async def test_a_browser_authenticates_with_its_first_message(live: LiveGateway) -> None:
    async with _socket(live, who=None) as ws:
        await ws.send(json.dumps({"type": "auth", "key": live.keys["bob"]}))
        ready = await _ready(ws)
    assert ready["user_id"] == "bob"


@pytest.mark.parametrize("how", ["header", "message"])
async def test_a_bad_key_is_closed_with_4401_without_echoing_it(
    live: LiveGateway, how: str
) -> None:
    bad = "sk-not-a-real-key-0123456789"
    headers = {"Authorization": f"Bearer {bad}"} if how == "header" else {}
    async with connect(live.ws, additional_headers=headers) as ws:
        if how == "message":
            await ws.send(json.dumps({"type": "auth", "key": bad}))
        with pytest.raises(ConnectionClosed):
            await _receive(ws)
    assert ws.close_code == events_route.CLOSE_UNAUTHORIZED
    assert ws.close_reason is not None
    assert "unknown or revoked" in ws.close_reason
    assert bad not in ws.close_reason
    assert "0123456789" not in ws.close_reason


async def test_a_silent_client_is_told_how_to_authenticate(
    live: LiveGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_route, "AUTH_TIMEOUT_S", 0.2)
    async with connect(live.ws) as ws:
        with pytest.raises(ConnectionClosed):
            await _receive(ws)
    assert ws.close_code == events_route.CLOSE_UNAUTHORIZED
    assert ws.close_reason is not None
    assert "Authorization: Bearer" in ws.close_reason
    assert '"type": "auth"' in ws.close_reason


async def test_a_reconnecting_client_gets_exactly_what_it_missed(live: LiveGateway) -> None:
    async with _socket(live) as ws:
        await _ready(ws)
        first = await _chat(live)
        seen = await _events_until(ws, first)
    last_seen = seen[-1]["id"]
    missed = await _chat(live)  # while disconnected
    async with _socket(live, query=f"?last_event_id={last_seen}") as ws:
        ready = await _ready(ws)
        replayed = await _events_until(ws, missed)
        live_rid = await _chat(live)  # replay then live, on the same socket
        after = await _events_until(ws, live_rid)
    assert ready["last_event_id"] == last_seen + 2
    assert [e["id"] for e in replayed] == [last_seen + 1, last_seen + 2]
    assert _of(replayed, missed) == ["request_started", "request_completed"]
    assert [e["id"] for e in after] == [last_seen + 3, last_seen + 4]
    assert _of(after, live_rid) == ["request_started", "request_completed"]


@pytest.fixture
def tuned(
    tmp_path: Path, fault_server: FaultServer, request: pytest.FixtureRequest
) -> Iterator[LiveGateway]:
    """A live gateway with settings changed by indirect parametrization: {section: {k: v}}."""
    settings = settings_for(tmp_path, fault_server.base_url)
    changes = {
        section: getattr(settings, section).model_copy(update=values)
        for section, values in request.param.items()
    }
    gateway = build_runtime(settings.model_copy(update=changes), env={})
    with LiveServer(gateway) as running:
        running.keys["alice"], _ = run(gateway.keys.create("alice", "enterprise", "user"))
        yield running


async def test_a_client_that_vanishes_is_let_go_without_a_traceback(
    live: LiveGateway, caplog: pytest.LogCaptureFixture
) -> None:
    server_log = logging.getLogger("uvicorn.error")  # uvicorn's loggers do not propagate
    server_log.addHandler(caplog.handler)
    try:
        async with _socket(live) as ws:
            await _ready(ws)
            ws.transport.abort()  # a TCP reset: no close frame
        rid = await _chat(live)  # events for a socket that is gone
        async with _socket(live, query="?last_event_id=0") as ws:
            await _ready(ws)
            await _events_until(ws, rid)
    finally:
        server_log.removeHandler(caplog.handler)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_an_id_beyond_the_stream_replays_it_all_as_a_gap(live: LiveGateway) -> None:
    rid = await _chat(live)  # events 1 and 2 of this process's stream
    start = _start(live)
    async with _socket(live, query=f"?last_event_id={start + 50}") as ws:
        ready = await _ready(ws)
        gap = await _receive(ws)
        replayed = await _events_until(ws, rid)
    assert ready["last_event_id"] == start + 2
    assert (gap["type"], gap["after_id"], gap["oldest_available_id"]) == (
        "gap",
        start + 50,
        start + 1,
    )
    assert gap["reason"] == "after_id is beyond this stream's last event id"
    assert [e["id"] for e in replayed] == [start + 1, start + 2]


async def test_a_client_resuming_across_a_restart_gets_a_gap_and_every_new_event(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    settings = settings_for(tmp_path, fault_server.base_url)
    first = build_runtime(settings, env={})
    with LiveServer(first) as running:
        key, _ = await first.keys.create("alice", "enterprise", "user")
        running.keys["alice"] = key
        async with _socket(running) as ws:
            await _ready(ws)
            seen = await _events_until(ws, await _chat(running))
    last_seen = seen[-1]["id"]
    second = build_runtime(settings, env={})  # the same store: the gateway restarted
    with LiveServer(second) as running:
        running.keys["alice"] = key
        rids = [await _chat(running) for _ in range(3)]  # more events than were seen before
        async with _socket(running, query=f"?last_event_id={last_seen}") as ws:
            await _ready(ws)
            gap = await _receive(ws)
            replayed = await _events_until(ws, rids[-1])
    new_ids = [e.id for e in (await second.bus.replay("alice")).events]
    assert len(new_ids) == 6
    assert min(new_ids) > last_seen  # no id of the first process is given again
    assert (gap["type"], gap["after_id"], gap["oldest_available_id"]) == (
        "gap",
        last_seen,
        new_ids[0],
    )
    assert "gateway restarted" in gap["reason"]
    assert [e["id"] for e in replayed] == new_ids  # none of the new events skipped


# A cold llama.cpp start on a busy machine can be slower than the fault tests' 2 s limits.
SLOW_MODEL_OK = {"defaults": {"first_token_timeout_s": 60, "stream_idle_timeout_s": 30}}


@pytest.mark.parametrize("tuned", [SLOW_MODEL_OK], indirect=True)
async def test_the_embedded_model_load_is_announced_after_the_request_starts(
    tuned: LiveGateway,
) -> None:
    async with _socket(tuned) as ws:
        await _ready(ws)
        rid = await _chat(tuned, model="smollm2")  # bounded by the gateway's 60 s deadline
        events = await _events_until(ws, rid)
    mine = [e for e in events if e["request_id"] == rid]
    steps = [(e["type"], e["service"]) for e in mine]
    # The gateway is new, so its embedded provider is too: it loads (or finds the
    # process's cached weights) on this first use, and says so.
    assert steps == [
        ("request_started", "model_cascade"),
        ("service_initializing", "embedded"),
        ("service_ready", "embedded"),
        ("request_completed", "model_cascade"),
    ]
    assert [e["id"] for e in mine] == sorted(e["id"] for e in mine)


@pytest.mark.parametrize("tuned", [{"server": {"heartbeat_s": 0.2}}], indirect=True)
async def test_an_idle_socket_gets_heartbeats(tuned: LiveGateway) -> None:
    async with _socket(tuned) as ws:
        await _ready(ws)
        beats = [await _receive(ws), await _receive(ws)]
    assert [b["type"] for b in beats] == ["heartbeat", "heartbeat"]
    assert all(datetime.fromisoformat(b["at"]).tzinfo is not None for b in beats)


@pytest.mark.parametrize("tuned", [{"server": {"event_history": 2}}], indirect=True)
async def test_lost_history_is_announced_as_a_gap(tuned: LiveGateway) -> None:
    for _ in range(2):
        await _chat(tuned)  # events 1-4; only 3 and 4 are kept
    start = _start(tuned)
    async with _socket(tuned, query=f"?last_event_id={start + 1}") as ws:
        await _ready(ws)
        gap = await _receive(ws)
        first = await _receive(ws)
    assert gap["type"] == "gap"
    assert (gap["after_id"], gap["oldest_available_id"]) == (start + 1, start + 3)
    assert gap["reason"] == "older events were dropped from the retained history"
    assert first["event"]["id"] == start + 3


@pytest.mark.parametrize("tuned", [{"server": {"event_buffer": 2}}], indirect=True)
async def test_a_slow_consumer_is_closed_with_1013_and_can_resume_without_loss(
    tuned: LiveGateway,
) -> None:
    received: list[dict[str, Any]] = []
    async with _socket(tuned, max_queue=1) as ws:  # the client reads nothing meanwhile
        await _ready(ws)
        for _ in range(3):  # each request publishes two events; they all succeed
            await asyncio.gather(*(_chat(tuned) for _ in range(16)))
        with pytest.raises(ConnectionClosed):
            await _read_all(ws, received)
    assert ws.close_code == events_route.CLOSE_TRY_AGAIN_LATER
    assert ws.close_reason is not None
    start = _start(tuned)
    delivered = received[-1]["event"]["id"] if received else start
    assert ws.close_reason == f"event buffer overflow; reconnect with last_event_id={delivered}"
    async with _socket(tuned, query=f"?last_event_id={delivered}") as ws:
        ready = await _ready(ws)
        rest = [await _receive(ws) for _ in range(ready["last_event_id"] - delivered)]
    last = start + 3 * 16 * 2
    assert ready["last_event_id"] == last
    assert [m["event"]["id"] for m in rest] == list(range(delivered + 1, last + 1))


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "", "%C2%B2"])
async def test_a_malformed_last_event_id_is_closed_with_4400_saying_what_it_must_be(
    live: LiveGateway, value: str
) -> None:
    async with _socket(live, query=f"?last_event_id={value}") as ws:
        with pytest.raises(ConnectionClosed):
            await _receive(ws)
    assert ws.close_code == events_route.CLOSE_BAD_REQUEST
    assert ws.close_reason is not None
    assert "last_event_id" in ws.close_reason
    assert "whole number" in ws.close_reason


@pytest.mark.parametrize("revoker", ["gateway", "another process"])
async def test_a_revoked_keys_socket_is_closed_with_4401_and_gets_nothing_after(
    live: LiveGateway, revoker: str, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = live.gateway
    socket_key, record = await gateway.keys.create("carol", "enterprise")
    live.keys["carol"], _ = await gateway.keys.create("carol", "enterprise")  # keeps working
    server_log = logging.getLogger("uvicorn.error")  # uvicorn's loggers do not propagate
    server_log.addHandler(caplog.handler)
    received: list[dict[str, Any]] = []
    try:
        async with connect(
            live.ws, additional_headers={"Authorization": f"Bearer {socket_key}"}
        ) as ws:
            await _ready(ws)
            await _events_until(ws, await _chat(live, "carol"))  # the socket streams
            if revoker == "gateway":
                assert await gateway.keys.revoke(record.id)
            else:  # `sincere keys revoke`: the gateway learns it when its key cache expires
                other_process = SqlKeyStore(open_database(gateway.settings.database_url()))
                assert await other_process.revoke(record.id)
            reader = asyncio.create_task(_read_all(ws, received))
            async with asyncio.timeout(60):  # generous: the key is re-checked every second
                while not reader.done():
                    await _chat(live, "carol")  # carol's events keep coming
                    await asyncio.sleep(0.1)
            with pytest.raises(ConnectionClosed):
                await reader
        await _chat(live, "carol")  # and go on after the close
    finally:
        server_log.removeHandler(caplog.handler)
    assert ws.close_code == events_route.CLOSE_UNAUTHORIZED
    assert ws.close_reason == "the API key was revoked"
    ids = [m["event"]["id"] for m in received if m["type"] == "event"]
    stream = [e.id for e in (await gateway.bus.replay("carol")).events]
    assert ids == stream[stream.index(ids[0]) : stream.index(ids[-1]) + 1] if ids else True
    assert stream[-1] > (ids[-1] if ids else 0)  # events published after the close: not sent
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
