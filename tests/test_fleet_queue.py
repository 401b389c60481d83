"""A deployment's capacity across a fleet: two real gateway processes on one Redis queue in
front of the fault server, which serves one request at a time (``max_concurrency = 1``)."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from pathlib import Path
from typing import Any

import httpx

from tests.faults import Fault, FaultServer
from tests.fleet import WAIT_S, Fleet

ANSWER_S = 0.5


def _body(who: str) -> dict[str, Any]:
    return {"model": "gpt", "messages": [{"role": "user", "content": f"from {who}"}]}


async def _waiting(client: httpx.AsyncClient, url: str, admin: str) -> int:
    metrics = await client.get(f"{url}/metrics", headers={"authorization": f"Bearer {admin}"})
    found = re.search(r'sincere_queue_waiting\{deployment="up"\} (\d+)', metrics.text)
    return int(found[1]) if found else -1


async def test_two_processes_serve_one_deployment_one_request_at_a_time_enterprise_first(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok(delay_s=ANSWER_S)
    extra = "max_concurrency = 1\n"
    with Fleet(tmp_path, fault_server.base_url, redis=True, extra=extra) as fleet:
        keys = {"busy": "standard", "f1": "free", "f2": "free", "e": "enterprise"}
        key = {who: fleet.create_key(who, tier) for who, tier in keys.items()}
        admin = fleet.create_key("ops", "enterprise", "admin")
        one, two = fleet.members
        async with httpx.AsyncClient(timeout=WAIT_S) as client:

            async def post(member: Any, who: str) -> httpx.Response:
                return await client.post(
                    f"{member.v1}/chat/completions",
                    json=_body(who),
                    headers={"authorization": f"Bearer {key[who]}"},
                )

            async def until_waiting(member: Any, count: int) -> None:
                deadline = time.monotonic() + WAIT_S
                while await _waiting(client, member.url, admin) != count:
                    assert time.monotonic() < deadline, f"never {count} waiting"
                    await asyncio.sleep(0.02)

            busy = asyncio.create_task(post(one, "busy"))
            deadline = time.monotonic() + WAIT_S
            while not fault_server.requests:  # the slot is taken upstream
                assert time.monotonic() < deadline, "the busy request never went upstream"
                await asyncio.sleep(0.01)
            f1 = asyncio.create_task(post(one, "f1"))
            await until_waiting(one, 1)
            f2 = asyncio.create_task(post(one, "f2"))
            await until_waiting(one, 2)
            enterprise = asyncio.create_task(post(two, "e"))  # the other process
            await until_waiting(two, 3)
            responses = await asyncio.gather(busy, f1, f2, enterprise)

    assert [r.status_code for r in responses] == [200, 200, 200, 200]
    served = [r for r in fault_server.requests if r.body]
    assert [r.body["messages"][-1]["content"] for r in served] == [  # type: ignore[index]
        "from busy",
        "from e",
        "from f1",
        "from f2",
    ]
    # One at a time upstream: each request arrived after the one before was answered.
    gaps = [b.at - a.at for a, b in itertools.pairwise(served)]
    assert min(gaps) >= ANSWER_S * 0.9, gaps
    waits = [float(r.headers["x-sincere-queue-wait-ms"]) for r in responses]
    assert waits[0] == 0.0
    assert waits[3] > 0.0  # the enterprise request waited for the busy one, in another process
