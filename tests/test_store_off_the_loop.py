"""Store I/O never runs on the event loop's thread: checked by the thread that runs each
SQL statement, never by a clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, event

from sincere.backends.sql import SqlKeyStore, open_database
from sincere.backends.sql.keys import KEY_PREFIX
from sincere.errors import ServiceError
from sincere.health import HealthState
from sincere.llm.request import ChatRequest, Message
from sincere.runtime import build_runtime
from tests.faults import Fault, FaultServer
from tests.live import settings_for


@contextmanager
def statements(engine: Engine) -> Iterator[list[tuple[int, str]]]:
    """Every statement run on ``engine`` meanwhile, with the thread that ran it."""
    seen: list[tuple[int, str]] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        seen.append((threading.get_ident(), statement))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_a_breaker_transition_is_recorded_off_the_event_loop(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.status(503)
    gateway = build_runtime(settings_for(tmp_path, fault_server.base_url), env={})
    loop_thread = threading.get_ident()  # the test runs on the loop's thread
    request = ChatRequest(model="gpt", messages=(Message(role="user", content="hi"),))
    with statements(gateway.database.engine) as seen:
        try:
            for _ in range(10):  # until the failures open the circuit
                ctx = gateway.contexts.create("alice", "free")
                with pytest.raises(ServiceError):
                    await gateway.cascade.complete(ctx, request)
                if gateway.cascade.registry.record("up").state is HealthState.UNAVAILABLE:
                    break
        finally:
            await gateway.aclose()  # writes what is still queued
    inserts = [thread for thread, sql in seen if sql.startswith("INSERT INTO service_transitions")]
    assert inserts, "the transition was not recorded"
    assert loop_thread not in inserts


async def test_a_key_cache_miss_is_looked_up_off_the_event_loop(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'sincere.db'}")
    keys = SqlKeyStore(db)
    key, record = await keys.create("dave", "free")
    with statements(db.engine) as seen:
        assert await keys.verify(key) == record  # not cached yet: looked up
        assert await keys.verify(KEY_PREFIX + "unknown" * 6) is None  # never cached
        lookups = list(seen)
        assert await keys.verify(key) == record  # cached: answered without a statement
    db.engine.dispose()
    assert len(lookups) == 2
    assert seen == lookups
    assert threading.get_ident() not in {thread for thread, _ in lookups}
