"""Runtime flags as operators use them: stored in SQLite or PostgreSQL, read by every process
within its refresh, switched with an admin key over HTTP or with ``sincere flags``, and
every change recorded with who made it and when."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select, text

from sincere.backends.sql import open_database
from sincere.backends.sql.flags import SqlFlagStore
from sincere.backends.sql.schema import flag_changes
from sincere.errors import ServiceUnavailable
from sincere.tiers.flags import FLAG_DESCRIPTIONS, Flag
from tests.conftest import closing
from tests.live import LiveGateway, run
from tests.redis_cut import RedisCut

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
HANG_GUARD_S = 30.0  # only a guard against a hang; no assertion is about time


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A schema of its own on the test server, dropped afterwards."""
    schema = f"sincere_flags_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sincere.db'}"
    schema: str = request.getfixturevalue("pg_schema")
    return f"{POSTGRES}?options=-csearch_path%3D{schema}"


def _store(url: str, refresh_s: float | None = None) -> SqlFlagStore:
    db = open_database(url)
    store = SqlFlagStore(db) if refresh_s is None else SqlFlagStore(db, refresh_s)
    closing(_Disposing(store))
    return store


class _Disposing:
    """Stops a store's refresh and lets go of its engine when the test ends."""

    def __init__(self, store: SqlFlagStore) -> None:
        self.store = store

    async def aclose(self) -> None:
        await self.store.aclose()
        self.store._db.engine.dispose()


async def _until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition`` holds (polled); only a hang fails it."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


def _changes(url: str) -> list[tuple[str, bool, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(flag_changes).order_by(flag_changes.c.id)).all()
    finally:
        engine.dispose()
    return [(r.name, r.enabled, r.changed_by) for r in rows]


# The store


async def test_every_flag_is_on_until_set_and_each_change_is_recorded_with_who_and_when(
    store_url: str,
) -> None:
    store = _store(store_url)
    states = await store.states()
    assert [s.flag for s in states] == list(Flag)
    assert all(s.enabled and s.changed_by is None and s.changed_at is None for s in states)
    assert all(store.enabled(flag) for flag in Flag)

    before = time.time()
    changed = await store.set(Flag.STREAM_CONTINUATION, False, "key:key_0a1b2c")
    assert store.enabled(Flag.STREAM_CONTINUATION) is False  # in force here at once
    await store.set(Flag.STREAM_CONTINUATION, True, "cli:ops")
    await store.set(Flag.STREAM_CONTINUATION, False, "cli:ops")
    await store.set(Flag.DETAILED_EVENTS, False, "cli:ops")

    now = {s.flag: s for s in await store.states()}
    assert now[Flag.STREAM_CONTINUATION].enabled is False
    assert now[Flag.STREAM_CONTINUATION].changed_by == "cli:ops"
    assert now[Flag.DETAILED_EVENTS].enabled is False
    assert now[Flag.QUEUEING].enabled is True
    assert now[Flag.QUEUEING].changed_by is None
    at = now[Flag.DETAILED_EVENTS].changed_at
    assert at is not None
    assert before <= changed.changed_at <= at <= time.time()  # recorded, in order
    assert _changes(store_url) == [
        ("stream_continuation", False, "key:key_0a1b2c"),
        ("stream_continuation", True, "cli:ops"),
        ("stream_continuation", False, "cli:ops"),
        ("detailed_events", False, "cli:ops"),
    ]


async def test_a_change_made_by_another_process_is_in_force_here_after_its_refresh(
    store_url: str,
) -> None:
    here = _store(store_url)  # the default refresh, as a gateway runs it
    here.load()
    here.start()
    there = _store(store_url)  # another gateway, or `sincere flags set`
    await there.set(Flag.SHADOW_PROBE, False, "cli:ops")
    assert here.enabled(Flag.SHADOW_PROBE) is True  # not yet read here
    await _until(lambda: not here.enabled(Flag.SHADOW_PROBE))
    await there.set(Flag.SHADOW_PROBE, True, "cli:ops")
    await _until(lambda: here.enabled(Flag.SHADOW_PROBE))


async def test_an_unreachable_store_leaves_the_last_values_in_force(pg_schema: str) -> None:
    cut = await RedisCut(port=5432).start()  # a TCP proxy to PostgreSQL that a test can cut
    closing(cut)
    url = f"postgresql+psycopg://postgres@127.0.0.1:{cut.port}/test?options=-csearch_path%3D{pg_schema}"
    store = await asyncio.to_thread(_store, url)  # the proxy serves on this loop meanwhile
    await store.set(Flag.ESCALATION, False, "cli:ops")
    cut.cut()
    await store.refresh()  # fails quietly: nothing to raise into a request
    assert store.enabled(Flag.ESCALATION) is False
    assert store.enabled(Flag.QUEUEING) is True
    with pytest.raises(ServiceUnavailable) as unreachable:  # a change cannot be recorded
        await store.set(Flag.QUEUEING, False, "cli:ops")
    assert unreachable.value.context.service == "store"
    assert store.enabled(Flag.QUEUEING) is True
    cut.restore()
    assert [s.enabled for s in await store.states()] == [f is not Flag.ESCALATION for f in Flag]


# The admin API


def _flags(live: LiveGateway, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {live.keys[key]}"} if key else {}
    return httpx.get(live.url + "/admin/flags", headers=headers, timeout=10)


def _put(live: LiveGateway, name: str, body: object, key: str | None = "admin") -> httpx.Response:
    headers = {"Authorization": f"Bearer {live.keys[key]}"} if key else {}
    return httpx.put(live.url + f"/admin/flags/{name}", json=body, headers=headers, timeout=10)


@pytest.mark.parametrize(("key", "expected"), [(None, 401), ("alice", 403)])
def test_the_flags_api_needs_an_admin_key(
    live: LiveGateway, key: str | None, expected: int
) -> None:
    for response in (_flags(live, key), _put(live, "queueing", {"enabled": False}, key)):
        assert response.status_code == expected
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == expected
        assert problem["request_id"] == response.headers["x-request-id"]
    assert all(live.gateway.flags.enabled(flag) for flag in Flag)  # nothing changed


def test_an_admin_lists_every_flag_with_its_value_description_and_last_change(
    live: LiveGateway,
) -> None:
    response = _flags(live, "admin")
    assert response.status_code == 200
    assert response.json() == {
        "flags": [
            {
                "name": str(flag),
                "enabled": True,
                "description": FLAG_DESCRIPTIONS[flag],
                "changed_by": None,
                "changed_at": None,
            }
            for flag in Flag
        ]
    }


def test_an_admin_turns_a_flag_off_recorded_with_the_key_id(live: LiveGateway) -> None:
    gateway = live.gateway
    [admin] = [k for k in run(gateway.keys.list()) if k.user_id == "admin"]
    response = _put(live, "detailed_events", {"enabled": False})
    assert response.status_code == 200
    listed = {f["name"]: f for f in response.json()["flags"]}
    assert listed["detailed_events"]["enabled"] is False
    assert listed["detailed_events"]["changed_by"] == f"key:{admin.id}"
    assert listed["detailed_events"]["changed_at"].endswith("+00:00")
    assert listed["queueing"]["enabled"] is True
    assert gateway.flags.enabled(Flag.DETAILED_EVENTS) is False  # this process: at once
    assert _flags(live, "admin").json() == response.json()
    assert _changes(gateway.database.url) == [("detailed_events", False, f"key:{admin.id}")]


def test_an_unknown_flag_or_a_bad_body_is_refused_naming_what_is_allowed(
    live: LiveGateway,
) -> None:
    unknown = _put(live, "mock_responses", {"enabled": True})
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert all(str(flag) in unknown.json()["detail"] for flag in Flag)
    for body in ({"enabled": "no"}, {}, {"enabled": False, "by": "someone else"}):
        bad = _put(live, "queueing", body)
        assert bad.status_code == 400, body
    assert _changes(live.gateway.database.url) == []


def test_a_change_made_elsewhere_reaches_a_running_gateway(live: LiveGateway) -> None:
    # The server's lifespan keeps the flags fresh: a change made by another process (here a
    # second store on the same database, as `sincere flags set` is) is read within its
    # refresh, with no request needed to notice it.
    other = SqlFlagStore(open_database(live.gateway.database.url))
    try:
        run(other.set(Flag.STREAM_CONTINUATION, False, "cli:ops"))
    finally:
        other._db.engine.dispose()
    deadline = time.monotonic() + HANG_GUARD_S
    while live.gateway.flags.enabled(Flag.STREAM_CONTINUATION):
        assert time.monotonic() < deadline, "the gateway never read the change"
        time.sleep(0.02)


def test_the_openapi_schema_publishes_the_flags_api(live: LiveGateway) -> None:
    paths = httpx.get(live.url + "/openapi.json", timeout=10).json()["paths"]
    assert {"401", "403"} <= set(paths["/admin/flags"]["get"]["responses"])
    assert {"401", "403", "404"} <= set(paths["/admin/flags/{name}"]["put"]["responses"])
    assert "requestBody" in paths["/admin/flags/{name}"]["put"]


# The command line


def _sincere(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"SINCERE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(
        [sys.executable, "-m", "sincere.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_flags_list_and_set_from_the_command_line(tmp_path: Path) -> None:
    listed = _sincere("flags", "list", tmp_path=tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, *rows = [line.split("\t") for line in listed.stdout.splitlines()]  # piped: TSV
    assert header == ["name", "state", "description", "changed by", "changed at"]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (str(flag), "on", FLAG_DESCRIPTIONS[flag], "-") for flag in Flag
    ]

    switched = _sincere("flags", "set", "SHADOW_PROBE", "off", tmp_path=tmp_path)
    assert switched.returncode == 0, switched.stderr
    assert "shadow_probe is off" in switched.stderr
    rows = [
        line.split("\t")
        for line in _sincere("flags", "list", tmp_path=tmp_path).stdout.splitlines()
    ]
    shadow = next(r for r in rows if r[0] == "shadow_probe")
    assert shadow[1] == "off"
    assert shadow[3].startswith("cli:")
    assert shadow[4].endswith("UTC")
    [change] = _changes(f"sqlite:///{tmp_path / 'sincere.db'}")
    assert change[:2] == ("shadow_probe", False)
    assert change[2] == shadow[3]


def test_an_unknown_flag_or_state_is_a_usage_error_naming_the_choices(tmp_path: Path) -> None:
    unknown = _sincere("flags", "set", "mock_responses", "on", tmp_path=tmp_path)
    assert unknown.returncode == 2  # a usage error, as for every other command
    assert all(str(flag) in unknown.stderr for flag in Flag)
    bad_state = _sincere("flags", "set", "queueing", "maybe", tmp_path=tmp_path)
    assert bad_state.returncode == 2
    assert "on" in bad_state.stderr
    assert "off" in bad_state.stderr
    helped = _sincere("flags", "set", "--help", tmp_path=tmp_path)
    assert helped.returncode == 0
    assert "within 5 s" in helped.stdout
    assert "stream_" in helped.stdout  # the choices (rich may wrap a name)
