"""What a ``kill -9`` can cost telemetry: only the attempts of the last ``flush_s``.

A real ``sincere serve`` on PostgreSQL answers a steady stream of requests and is killed
without warning. Every request answered more than ``flush_s`` (plus a second for the write
itself and a loaded machine) before the kill must be in the store.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from sincere.backends.sql.database import Database, create_store_engine
from sincere.backends.sql.telemetry import SqlTelemetryStore
from tests.faults import Fault, FaultServer
from tests.fleet import WAIT_S, Fleet

FLUSH_S = 0.5
SLACK_S = 1.0  # the batch's own write, on a shared machine
ANSWERS_BEFORE_KILL = 200


async def test_a_kill_9_loses_at_most_the_attempts_of_the_last_flush_interval(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok(delay_s=0.01)
    extra = f"[telemetry]\nflush_s = {FLUSH_S}\n"
    with Fleet(tmp_path, fault_server.base_url, size=1, extra=extra) as fleet:
        key = fleet.create_key("alice", "enterprise")
        (member,) = fleet.members
        answered: list[tuple[float, str]] = []  # (when the answer arrived, its request id)
        async with httpx.AsyncClient(timeout=WAIT_S) as client:
            for _ in range(ANSWERS_BEFORE_KILL):
                response = await client.post(
                    f"{member.v1}/chat/completions",
                    json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": f"Bearer {key}"},
                )
                assert response.status_code == 200
                answered.append((time.monotonic(), response.headers["x-request-id"]))
        member.kill()  # no drain, no final flush
        killed = time.monotonic()
        engine = create_store_engine(fleet.database_url)
        try:
            store = SqlTelemetryStore(Database(engine, fleet.database_url))
            recorded = {r.request_id for r in await store.rows(0, 4e9) if r.final}
        finally:
            engine.dispose()
    bound = killed - (FLUSH_S + SLACK_S)
    must_be_there = [rid for at, rid in answered if at < bound]
    assert must_be_there, "the run was too short to test the bound"
    assert [rid for rid in must_be_there if rid not in recorded] == []
    # Nothing else is invented: every recorded request is one that was sent.
    assert recorded <= {rid for _, rid in answered}
