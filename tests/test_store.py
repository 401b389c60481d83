"""The store on both of its backends: SQLite (default) and PostgreSQL (at scale)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from sincere.backends.sql import (
    SqlKeyStore,
    SqlServiceHistory,
    open_database,
    start_event_stream,
)
from sincere.identity import KeyRole

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sincere.db'}"
        return
    # A schema of its own per test, so runs never see each other's rows.
    schema = f"sincere_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_migrations_create_the_schema_and_are_idempotent(url: str) -> None:
    first = open_database(url)
    second = open_database(url)  # a second process starting on the same database
    with second.engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert version == "0003"  # the flags tables
    first.engine.dispose()
    second.engine.dispose()


async def test_keys_are_shown_once_stored_hashed_and_revocable(url: str) -> None:
    db = open_database(url)
    keys = SqlKeyStore(db)
    key, record = await keys.create("alice", "enterprise", KeyRole.ADMIN)
    assert key.startswith("sk-sincere-")
    assert len(key) > 50
    with db.engine.connect() as conn:
        stored = " ".join(
            str(v) for row in conn.execute(text("SELECT * FROM api_keys")) for v in row
        )
    assert key not in stored  # only the hash is kept
    found = await keys.verify(key)
    assert found is not None
    assert (found.user_id, found.tier, found.role) == ("alice", "enterprise", "admin")
    assert await keys.verify(key + "x") is None
    assert await keys.verify("not-even-shaped-right") is None
    assert await keys.revoke(record.id) is True
    assert await keys.verify(key) is None
    assert await keys.revoke(record.id) is False
    assert [(r.id, r.active) for r in await keys.list()] == [(record.id, False)]
    db.engine.dispose()


async def test_a_key_revoked_by_another_process_is_refused_once_the_cache_expires(url: str) -> None:
    db, other_db = open_database(url), open_database(url)
    clock = Clock()
    keys = SqlKeyStore(db, cache_ttl_s=5.0, clock=clock)
    key, record = await keys.create("alice", "free")
    other_process = SqlKeyStore(other_db)  # another gateway, or `sincere keys revoke`
    assert await keys.verify(key) == record
    assert await other_process.revoke(record.id)
    clock.now += 4.99
    assert await keys.verify(key) == record  # cached: this process has not seen it yet
    clock.now += 0.02
    assert await keys.verify(key) is None  # refused within 5 s of the revocation
    db.engine.dispose()
    other_db.engine.dispose()


async def test_service_history_keeps_transitions_newest_first(url: str) -> None:
    db = open_database(url)
    history = SqlServiceHistory(db)
    now = time.time()
    await history.record("up", "unavailable", "circuit open", now - 5)
    await history.record("up", "ready", "probe succeeded", now)
    await history.record("other", "ready", "fine", now)
    recent = await history.recent("up")
    assert [(t.state, t.message) for t in recent] == [
        ("ready", "probe succeeded"),
        ("unavailable", "circuit open"),
    ]
    db.engine.dispose()


def test_every_start_gets_a_larger_event_stream_epoch(url: str) -> None:
    db = open_database(url)
    epochs = [start_event_stream(db) for _ in range(3)]
    again = open_database(url)  # another process on the same database
    epochs.append(start_event_stream(again))
    assert epochs == sorted(epochs)
    assert len(set(epochs)) == 4
    assert epochs[0] >= 1
    db.engine.dispose()
    again.engine.dispose()
