"""Opening the database, bringing its schema up to date with Alembic, and running statements
off the event loop with bounded waits (an unreachable database is a 503, never a hang)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from sincere.errors import ErrorContext, ServiceUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")

# Every sincere process migrating a PostgreSQL database takes this advisory lock first: the
# first one migrates, the others wait and then find the schema already at its head.
MIGRATION_LOCK = 0x51AC_E5E0

# The longest a statement waits, on PostgreSQL, for each thing that can stall it.
CONNECT_TIMEOUT_S = 2  # a new connection (libpq's smallest; psycopg raises lower ones to 2)
POOL_TIMEOUT_S = 2.0  # a pooled connection, when every one of them is busy
STATEMENT_TIMEOUT_MS = 5_000  # a statement, on the server (locks, a slow plan)
TCP_USER_TIMEOUT_MS = 5_000  # sent data left unacknowledged (a peer gone silent)

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Database:
    engine: Engine
    url: str

    async def run(self, statement: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``statement`` on a worker thread; a database that cannot be reached becomes a
        ``ServiceUnavailable`` of the store (503), with no Retry-After: when it is back is
        not known."""
        try:
            return await asyncio.to_thread(statement, *args, **kwargs)
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            # The driver's message may name hosts or users: it stays in the cause, for the log.
            raise ServiceUnavailable(
                "the store (the database) is unreachable",
                context=ErrorContext(service="store"),
                suggestions=["Retry in a moment; the operator has been told by /health."],
            ) from exc


def open_database(url: str) -> Database:
    """Connect and migrate to the newest schema; safe to call from every process at once."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_store_engine(url)
    upgrade(engine)
    return Database(engine, url)


def create_store_engine(url: str) -> Engine:
    """The engine for ``url``, every wait on a PostgreSQL server bounded."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        engine = create_engine(url)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # Added to the URL's own options (a search_path, say), which connect_args would replace.
    options = f"{parsed.query.get('options', '')} -c statement_timeout={STATEMENT_TIMEOUT_MS}"
    return create_engine(
        parsed.update_query_dict({"options": options.strip()}),
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_S,
            "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        },
        pool_timeout=POOL_TIMEOUT_S,
        pool_pre_ping=True,  # a server restart costs a reconnect, not a failed request
    )


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest migration's revision: the schema every process brings its store to."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise RuntimeError("no migrations found")
    return head


def upgrade(engine: Engine) -> None:
    config = _alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Held by this transaction, on the connection Alembic migrates with, until it
            # commits. A migration may take longer than a request's statement may.
            connection.execute(text("SET LOCAL statement_timeout = 0"))
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    # WAL lets readers (the gateway) and a writer (sincere keys ...) work at the same time.
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
