"""Telemetry: every attempt of every request recorded, unknown as NULL, written in batches
off the request path, each row once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from sincere.backends.sql.database import Database, create_store_engine, open_database
from sincere.backends.sql.telemetry import SqlTelemetryStore
from sincere.config import load_settings
from sincere.runtime import build_runtime
from sincere.telemetry import AttemptRow, RecentWindow, TelemetryWriter
from tests.clocks import ManualClock
from tests.faults import Fault, FaultServer
from tests.live import LiveServer, fallback_config, run
from tests.test_usage import _row

HANG_GUARD_S = 30
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/test"  # nothing listens there


async def test_a_batch_written_twice_counts_once_and_old_rows_are_pruned(tmp_path: Path) -> None:
    store = SqlTelemetryStore(open_database(f"sqlite:///{tmp_path / 't.db'}"))
    rows = [_row("req_a", 1000.0), _row("req_b", 2000.0, tokens_in=None, cost_usd=None)]
    await store.write(rows)
    await store.write(rows)  # an interrupted write, done again
    read = await store.rows(0, 3000)
    assert sorted(r.request_id for r in read) == ["req_a", "req_b"]
    unknown = next(r for r in read if r.request_id == "req_b")
    assert unknown.tokens_in is None  # unknown stays unknown
    assert unknown.cost_usd is None
    assert await store.newest() == 2000.0
    assert await store.prune(1500.0) == 1
    assert [r.request_id for r in await store.rows(0, 3000)] == ["req_b"]


async def test_the_writer_keeps_rows_while_the_store_is_down_and_writes_them_after(
    tmp_path: Path,
) -> None:
    down = SqlTelemetryStore(Database(create_store_engine(UNREACHABLE), UNREACHABLE))
    clock = ManualClock()
    writer = TelemetryWriter(
        down, RecentWindow(900, clock.time), flush_s=1, retention_s=86400, clock=clock.time
    )
    writer._queued.append(_row("req_a", clock.time()))
    await writer.flush()
    assert writer.pending == 1  # kept for the store
    up = SqlTelemetryStore(open_database(f"sqlite:///{tmp_path / 't.db'}"))
    writer._store = up
    await writer.flush()
    assert writer.pending == 0
    assert [r.request_id for r in await up.rows(0, clock.time() + 1)] == ["req_a"]


async def test_every_attempt_of_a_failed_over_request_is_recorded_with_what_is_known(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    """'gpt' on 'up' fails (503); its fallback 'backup' on 'spare' answers with usage."""
    spare_server = FaultServer()
    with spare_server:
        fault_server.default = Fault.status(503)
        spare_server.default = Fault.ok("An answer.")
        config = fallback_config(
            tmp_path,
            fault_server.base_url,
            spare_server.base_url,
            extra="[telemetry]\nflush_s = 0.05\n",
        )
        settings = load_settings(config, env={"SINCERE_DATA_DIR": str(tmp_path / "data")})
        gateway = build_runtime(settings, env={})
        with LiveServer(gateway) as live:
            key, _ = run(gateway.keys.create("alice", "standard", "user"))
            async with httpx.AsyncClient(timeout=HANG_GUARD_S) as client:
                answered = await client.post(
                    f"{live.v1}/chat/completions",
                    json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": f"Bearer {key}"},
                )
            assert answered.status_code == 200
            rid = answered.headers["x-request-id"]
            store = SqlTelemetryStore(gateway.database)
            rows: list[AttemptRow] = []
            for _ in range(HANG_GUARD_S * 20):
                rows = [r for r in run(store.rows(0, 4e9)) if r.request_id == rid]
                if rows:
                    break
                await asyncio.sleep(0.05)
    rows.sort(key=lambda r: r.index)
    assert [(r.deployment, r.outcome, r.final) for r in rows] == [
        ("up", "service_unavailable", False),
        ("spare", "ok", True),
    ]
    failed, won = rows
    assert failed.status_code == 503
    assert failed.tokens_in is None  # nothing was reported for it
    assert failed.request_latency_s is None  # only the deciding row carries the request's
    usage = answered.json()["usage"]
    assert (won.tokens_in, won.tokens_out) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert won.cost_usd is None  # 'spare' has no prices configured: cost unknown, not 0
    assert won.request_outcome == "answered"
    assert won.user_id == "alice"
    assert won.tier == "standard"
    assert won.request_latency_s is not None
    assert won.ttft_s is not None
    assert won.request_cost_usd is None  # one attempt's cost is unknown: the request's too
    assert won.request_rows == 2
