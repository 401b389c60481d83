"""The admission queue through a real gateway, with the fault server as a deployment that
serves one request at a time and takes 1 s per answer (issue 12's proof, part 1)."""

from __future__ import annotations

import asyncio
import math
import re
import time
from pathlib import Path
from typing import Any

import httpx

from sincere.events import EventType
from sincere.runtime import build_runtime
from sincere.tiers.flags import Flag
from sincere.tiers.queue import DeploymentQueue
from sincere.tiers.service_times import MIN_SAMPLES
from tests.faults import Fault, FaultServer
from tests.live import LiveGateway, LiveServer, run, settings_for

HANG_GUARD_S = 60  # only a broken queue takes this long
ANSWER_S = 1.0  # the deployment's service time


def _body(who: str, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": "gpt",
        "messages": [{"role": "user", "content": f"from {who}"}],
        "stream": stream,
    }


def _headers(live: LiveGateway, who: str) -> dict[str, str]:
    return {"authorization": f"Bearer {live.keys[who]}"}


async def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.005)


def _poster(client: httpx.AsyncClient, live: LiveGateway) -> Any:
    """``post(who)``: a plain chat request of user ``who``."""

    async def post(who: str) -> httpx.Response:
        return await client.post(
            f"{live.v1}/chat/completions", json=_body(who), headers=_headers(live, who)
        )

    return post


def _queue(live: LiveGateway) -> DeploymentQueue:
    return live.gateway.cascade.queues.queues["up"]


async def _streamed(client: httpx.AsyncClient, live: LiveGateway, who: str) -> list[str]:
    """The lines of a streamed answer, comments included."""
    async with client.stream(
        "POST",
        f"{live.v1}/chat/completions",
        json=_body(who, stream=True),
        headers=_headers(live, who),
    ) as response:
        assert response.status_code == 200
        return [line async for line in response.aiter_lines() if line]


def _positions(events: Any) -> list[int]:
    return [e.data["position"] for e in events if e.type is EventType.REQUEST_QUEUED]


async def test_enterprise_goes_next_free_users_see_their_real_places_and_a_late_one_gets_a_503(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok(delay_s=ANSWER_S)
    settings = settings_for(
        tmp_path,
        fault_server.base_url,
        "max_concurrency = 1\n[tiers.free]\nmax_queue_wait_s = 4.5\n",
    )
    gateway = build_runtime(settings, env={})
    users = {"warm": "standard", "std": "standard", "e": "enterprise"}
    users |= {f"f{i}": "free" for i in range(1, 5)}
    with LiveServer(gateway) as live:
        for name, tier in users.items():
            live.keys[name], _ = run(gateway.keys.create(name, tier, "user"))
        async with httpx.AsyncClient(timeout=HANG_GUARD_S) as client:
            post = _poster(client, live)

            for _ in range(MIN_SAMPLES):  # service times measured: waits can be estimated
                assert (await post("warm")).status_code == 200
            queue = _queue(live)
            running = asyncio.create_task(post("std"))
            await _until(lambda: queue.serving == 1, "the standard request holds the slot")
            f1 = asyncio.create_task(_streamed(client, live, "f1"))
            await _until(lambda: queue.queued == 1, "f1 queued")
            f2 = asyncio.create_task(_streamed(client, live, "f2"))
            await _until(lambda: queue.queued == 2, "f2 queued")
            f3 = asyncio.create_task(post("f3"))
            await _until(lambda: queue.queued == 3, "f3 queued")
            enterprise = asyncio.create_task(post("e"))
            await _until(lambda: queue.queued == 4, "the enterprise request queued")
            f4 = asyncio.create_task(post("f4"))
            await _until(lambda: queue.queued == 5, "f4 queued")
            late = await f4
            answered = await asyncio.gather(running, enterprise, f3)
            f1_lines, f2_lines = await f1, await f2

    # The enterprise request was served next, then the free ones in their order.
    served = [r.body["messages"][-1]["content"] for r in fault_server.requests if r.body]
    assert served[MIN_SAMPLES:] == ["from std", "from e", "from f1", "from f2", "from f3"]
    for response in answered:
        assert response.status_code == 200
        assert float(response.headers["x-sincere-queue-wait-ms"]) >= 0
        assert response.json()["sincere"]["queue_wait_ms"] == float(
            response.headers["x-sincere-queue-wait-ms"]
        )
    assert float(answered[1].headers["x-sincere-queue-wait-ms"]) > 0  # the enterprise one waited

    # Each free user's stream: its real places, which went up by one when the enterprise
    # request entered ahead of it and only down after that; then the time it waited.
    replay = {who: run(gateway.bus.replay(who)).events for who in ("f1", "f2", "f3")}
    assert _positions(replay["f1"]) == [1, 2, 1]
    assert _positions(replay["f2"]) == [2, 3, 2, 1]
    assert _positions(replay["f3"]) == [3, 4, 3, 2, 1]
    for who, events in replay.items():
        kinds = [e.type for e in events]
        assert kinds[0] is EventType.REQUEST_STARTED
        assert kinds[-2:] == [EventType.REQUEST_DEQUEUED, EventType.REQUEST_COMPLETED], who
        queued = [e.data for e in events if e.type is EventType.REQUEST_QUEUED]
        assert all(q["tier"] == "free" and q["ahead"] == q["position"] - 1 for q in queued)
        assert all(q["estimate_known"] for q in queued)  # five service times were measured
        assert all(q["estimated_wait_ms_p90"] >= q["estimated_wait_ms_p50"] for q in queued)
        dequeued = next(e for e in events if e.type is EventType.REQUEST_DEQUEUED)
        assert dequeued.data["waited_ms"] > 0

    # A streaming client reads the same places as SSE comments before its first token.
    comments = [line for line in f1_lines if line.startswith(":")]
    assert [re.search(r"position=(\d+)", c)[1] for c in comments[:-1]] == ["1", "2", "1"]  # type: ignore[index]
    assert comments[-1].startswith(": sincere dequeued")
    first_data = next(i for i, line in enumerate(f1_lines) if line.startswith("data:"))
    assert first_data > f1_lines.index(comments[-1])
    assert f2_lines[-1] == "data: [DONE]"

    # The late free user waited its tier's 4.5 s and was told where it stood.
    assert late.status_code == 503
    error = late.json()["error"]
    assert error["code"] == "queue_timeout"
    assert error["request_id"] == late.headers["x-request-id"]
    assert error["queue_position"] == 1
    assert error["queue_waited_ms"] >= 4500
    assert error["estimate_known"] is True
    # Retry-After from the measured service times: what is left of the running answer.
    assert 0 < error["retry_after"] <= ANSWER_S * 1.5
    assert late.headers["retry-after"] == str(math.ceil(error["retry_after"]))
    assert [a["outcome"] for a in error["attempts"]] == ["queue_timeout"]
    f4_events = run(gateway.bus.replay("f4")).events
    assert f4_events[-1].type is EventType.REQUEST_FAILED
    assert f4_events[-1].data["error_type"] == "queue_timeout"


async def test_a_client_that_leaves_while_queued_gives_its_place_to_the_next_at_once(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok(delay_s=3.0)
    settings = settings_for(tmp_path, fault_server.base_url, "max_concurrency = 1\n")
    gateway = build_runtime(settings, env={})
    with LiveServer(gateway) as live:
        for name in ("busy", "leaver", "next"):
            live.keys[name], _ = run(gateway.keys.create(name, "standard", "user"))
        async with httpx.AsyncClient(timeout=HANG_GUARD_S) as client:
            post = _poster(client, live)

            queue = _queue(live)
            busy = asyncio.create_task(post("busy"))
            await _until(lambda: queue.serving == 1, "the slot is held")
            leaver = asyncio.create_task(post("leaver"))
            await _until(lambda: queue.queued == 1, "the leaver queued")
            after = asyncio.create_task(post("next"))
            await _until(lambda: queue.queued == 2, "the next one queued")
            leaver.cancel()  # the client closes its connection
            await _until(lambda: queue.queued == 1, "the leaver left the queue")
            assert queue.serving == 1  # still the busy request: nobody jumped the slot
            assert (await busy).status_code == 200
            assert (await after).status_code == 200

    leaver_events = run(gateway.bus.replay("leaver")).events
    assert [e.type for e in leaver_events] == [
        EventType.REQUEST_STARTED,
        EventType.REQUEST_QUEUED,
        EventType.REQUEST_FAILED,
    ]
    assert leaver_events[-1].data["reason"] == "client_gone"
    # The next request moved up to first place when the leaver went, then was served.
    assert _positions(run(gateway.bus.replay("next")).events) == [2, 1]
    served = [r.body["messages"][-1]["content"] for r in fault_server.requests if r.body]
    assert served == ["from busy", "from next"]


async def test_with_the_queueing_flag_off_a_full_deployment_answers_429_at_once(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok(delay_s=2.0)
    settings = settings_for(tmp_path, fault_server.base_url, "max_concurrency = 1\n")
    gateway = build_runtime(settings, env={})
    run(gateway.flags.set(Flag.QUEUEING, False, "test"))
    with LiveServer(gateway) as live:
        for name in ("busy", "refused"):
            live.keys[name], _ = run(gateway.keys.create(name, "enterprise", "user"))
        async with httpx.AsyncClient(timeout=HANG_GUARD_S) as client:
            post = _poster(client, live)

            queue = _queue(live)
            busy = asyncio.create_task(post("busy"))
            await _until(lambda: queue.serving == 1, "the slot is held")
            refused = await post("refused")
            assert queue.queued == 0  # nobody waits
            assert (await busy).status_code == 200

    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert [a["outcome"] for a in error["attempts"]] == ["at_capacity"]
    assert "queueing is turned off" in error["message"]
    assert error["estimate_known"] is False  # nothing measured yet: no Retry-After invented
    assert "retry-after" not in refused.headers
    served = [r.body["messages"][-1]["content"] for r in fault_server.requests if r.body]
    assert served == ["from busy"]


async def test_a_request_that_waited_and_then_failed_says_the_place_it_had(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    # The first answer takes a second; the one that waited for it gets a 500.
    fault_server.script(Fault.ok(delay_s=ANSWER_S), Fault.status(500))
    settings = settings_for(tmp_path, fault_server.base_url, "max_concurrency = 1\n")
    gateway = build_runtime(settings, env={})
    with LiveServer(gateway) as live:
        for name in ("busy", "later"):
            live.keys[name], _ = run(gateway.keys.create(name, "free", "user"))
        async with httpx.AsyncClient(timeout=HANG_GUARD_S) as client:
            post = _poster(client, live)

            queue = _queue(live)
            busy = asyncio.create_task(post("busy"))
            await _until(lambda: queue.serving == 1, "the slot is held")
            failed = await post("later")
            assert (await busy).status_code == 200

    error = failed.json()["error"]
    assert failed.status_code == 503, error
    assert [a["outcome"] for a in error["attempts"]] == ["upstream_error"]
    assert error["queue_position"] == 1
    assert error["queue_waited_ms"] > 0
    assert error["status_url"] == f"{live.url}/status"  # where to follow the outage
