from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import event

from sincere.backends.memory.events import InProcessEventBus
from sincere.backends.sql import SqlServiceHistory, open_database
from sincere.context import ContextFactory
from sincere.events import EventType
from sincere.health import HealthReport, HealthState, HistoryWriter, InitStatus, ServiceRegistry


async def _ready() -> bool:
    return True


async def _degraded() -> HealthReport:
    return HealthReport(HealthState.DEGRADED, "replica lag 12 s")


async def _down() -> bool:
    raise ConnectionRefusedError("connection refused")


async def _hangs() -> bool:
    await asyncio.sleep(3600)
    return True


async def _types(bus: InProcessEventBus, user: str) -> list[tuple[str | None, EventType]]:
    return [(e.service, e.type) for e in (await bus.replay(user)).events]


async def test_all_ready_is_ready_and_each_service_reports_initializing_then_ready(
    bus: InProcessEventBus, contexts: ContextFactory
) -> None:
    registry = ServiceRegistry()
    registry.register("llm", _ready, critical=True)
    ctx = contexts.create("alice")
    result = await registry.initialize_for_context(ctx, ["llm"])
    assert result.status is InitStatus.READY
    assert await _types(bus, "alice") == [
        ("llm", EventType.SERVICE_INITIALIZING),
        ("llm", EventType.SERVICE_READY),
    ]
    assert all(e.request_id == ctx.request_id for e in (await bus.replay("alice")).events)


async def test_a_non_critical_failure_is_partial(
    bus: InProcessEventBus, contexts: ContextFactory
) -> None:
    registry = ServiceRegistry()
    registry.register("llm", _ready, critical=True)
    registry.register("cache", _down)
    registry.register("warehouse", _degraded)
    result = await registry.initialize_for_context(
        contexts.create("alice"), ["llm", "cache", "warehouse"]
    )
    assert result.status is InitStatus.PARTIAL
    assert result.services["cache"].state is HealthState.UNAVAILABLE
    assert "connection refused" in result.services["cache"].message
    assert result.services["warehouse"].message == "replica lag 12 s"
    events = dict(await _types(bus, "alice"))  # the last event per service
    assert events["cache"] is EventType.SERVICE_UNAVAILABLE
    assert events["warehouse"] is EventType.SERVICE_DEGRADED


async def test_a_critical_failure_fails_and_a_hung_check_is_bounded(
    contexts: ContextFactory,
) -> None:
    registry = ServiceRegistry()
    registry.register("llm", _hangs, critical=True, timeout_s=0.05)
    result = await registry.initialize_for_context(contexts.create("alice"), ["llm"])
    assert result.status is InitStatus.FAILED
    assert "did not finish" in result.services["llm"].message


async def test_transitions_are_recorded_with_their_time(contexts: ContextFactory) -> None:
    registry = ServiceRegistry()
    registry.register("llm", _ready)
    await registry.initialize_for_context(contexts.create("alice"), ["llm"])
    await registry.initialize_for_context(contexts.create("alice"), ["llm"])
    record = registry.record("llm")
    assert record.state is HealthState.READY
    assert [t.state for t in record.transitions] == [HealthState.READY]


async def test_transitions_reach_the_history_in_order_and_reporting_never_waits_on_it(
    tmp_path: Path,
) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'sincere.db'}")
    history = SqlServiceHistory(db)
    writer = HistoryWriter(history)
    registry = ServiceRegistry()
    registry.on_transition(writer)
    registry.register("up", _ready)
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    states = [HealthState.UNAVAILABLE, HealthState.READY, HealthState.DEGRADED, HealthState.READY]
    for state in states:
        registry.report("up", HealthReport(state, f"now {state}"))
    assert statements == []  # reported without a statement: the writer runs later
    await writer.flush()
    event.remove(db.engine, "before_cursor_execute", record)
    recent = await history.recent("up")
    assert [(t.state, t.message) for t in reversed(recent)] == [(s, f"now {s}") for s in states]
    db.engine.dispose()
