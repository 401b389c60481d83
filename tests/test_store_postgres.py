"""The store on PostgreSQL as a fleet uses it: migrations run once however many processes
start together, and an unreachable server fails a key lookup cleanly, never by hanging."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sincere.auth import Authenticator
from sincere.backends.sql import Database, SqlKeyStore, open_database
from sincere.backends.sql.database import head_revision
from sincere.backends.sql.keys import KEY_PREFIX
from sincere.backends.sql.schema import metadata
from sincere.errors import ServiceUnavailable
from sincere.runtime import build_runtime
from tests.faults import FaultServer
from tests.live import LiveServer, settings_for
from tests.redis_cut import RedisCut

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
STARTING_TOGETHER = 6


# Each "process" imports everything, says so, then opens the database when told to.
_PROCESS = """
import sys
from sincere.backends.sql import open_database
print("ready", flush=True)
sys.stdin.readline()
open_database(sys.argv[1]).engine.dispose()
"""


def test_processes_starting_together_migrate_the_schema_once(fresh_schema: str) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS, fresh_schema],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(STARTING_TOGETHER)
    ]
    for p in processes:
        assert p.stdout is not None
        assert p.stdout.readline() == "ready\n"
    for p in processes:  # as close to the same moment as the machine allows
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    failures = [p.communicate()[1] for p in processes if p.wait() != 0]
    assert failures == []
    db = open_database(fresh_schema)
    with db.engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        tables = conn.execute(
            text(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            )
        ).scalar_one()
    assert versions == [head_revision()]
    assert tables == len(metadata.tables) + 1  # and alembic_version
    db.engine.dispose()


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word: a hung PostgreSQL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def _unmigrated(url: str) -> Database:
    """The store's engine for ``url`` without connecting (the server is gone after start)."""
    from sincere.backends.sql.database import create_store_engine

    return Database(create_store_engine(url), url)


async def _verify_fails_with_503(port: int) -> ServiceUnavailable:
    db = _unmigrated(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test")
    keys = SqlKeyStore(db)
    with pytest.raises(ServiceUnavailable) as info:
        await Authenticator(keys).key(KEY_PREFIX + "a" * 43, "req_1")
    db.engine.dispose()
    return info.value


async def test_a_key_lookup_with_postgresql_down_is_a_503_from_the_store() -> None:
    error = await _verify_fails_with_503(_unused_port())
    assert error.status == 503
    assert error.context.service == "store"
    assert error.context.request_id == "req_1"
    assert error.retry_after is None  # when the database is back is not known
    assert error.retry_after_header() is None
    assert "127.0.0.1" not in error.message  # the message names no address or credential
    assert error.message == "the store (the database) is unreachable"


async def test_a_key_lookup_with_a_postgresql_that_never_answers_is_a_503_not_a_hang(
    silent_server: int,
) -> None:
    # psycopg's connect_timeout bounds the wait for the server's greeting: the lookup ends.
    error = await _verify_fails_with_503(silent_server)
    assert error.context.service == "store"
    assert error.retry_after is None


async def test_an_event_socket_whose_key_the_store_cannot_check_is_told_to_come_back(
    tmp_path: Path, fresh_schema: str, fault_server: FaultServer
) -> None:
    # The store is no verdict on the key: the socket closes with 1013 (try again later),
    # not 4401 (a bad key) nor an internal error.
    proxy = await RedisCut(port=5432).start()  # a TCP proxy to PostgreSQL, cut at will
    url = fresh_schema.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    settings = settings_for(tmp_path, fault_server.base_url, f'\n[store]\nurl = "{url}"\n')
    # Synchronous (it migrates): off this loop, which carries the proxy's traffic.
    runtime = await asyncio.to_thread(build_runtime, settings, env={})
    try:
        key, _ = await runtime.keys.create("alice", "free")
        with LiveServer(runtime) as live:
            proxy.cut()
            headers = {"Authorization": f"Bearer {key}"}
            async with connect(live.ws, additional_headers=headers) as ws:
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1013
            assert ws.close_reason == "the store (the database) is unreachable; reconnect later"
    finally:
        await asyncio.to_thread(runtime.database.engine.dispose)
        await proxy.aclose()
