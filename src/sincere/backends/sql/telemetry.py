"""Telemetry in SQL: attempts written in batches, read back for the data agent.

A batch is one transaction; a row already written (its ``(request_id, attempt)``) is
skipped, so a batch written again after an interrupted write counts nothing twice. Every
statement runs on a worker thread (``Database.run``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from sincere.backends.sql.database import Database
from sincere.backends.sql.schema import telemetry_attempts as t
from sincere.telemetry import AttemptRow

PRUNE_BATCH = 10_000  # rows deleted per statement, so a prune never holds the table long


class SqlTelemetryStore:
    """``ports.TelemetryStore`` on the store (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.source = "sql:" + db.engine.dialect.name

    async def write(self, rows: Sequence[AttemptRow]) -> None:
        if rows:
            await self._db.run(self._write, list(rows))

    async def prune(self, before: float) -> int:
        """Delete the rows older than ``before``; how many."""
        return await self._db.run(self._prune, before)

    async def newest(self) -> float | None:
        """The start time of the newest recorded request (None: nothing recorded)."""
        return await self._db.run(self._newest)

    async def rows(self, start: float, end: float, user_id: str | None = None) -> list[AttemptRow]:
        """The rows of requests started in ``[start, end)``, of one user or all."""
        return await self._db.run(self._rows, start, end, user_id)

    def _write(self, rows: list[AttemptRow]) -> None:
        values = [_values(r) for r in rows]
        with self._db.engine.begin() as conn:
            conn.execute(_insert_new(conn), values)

    def _prune(self, before: float) -> int:
        removed = 0
        while True:
            with self._db.engine.begin() as conn:
                oldest = select(t.c.id).where(t.c.at < before).limit(PRUNE_BATCH)
                count = conn.execute(delete(t).where(t.c.id.in_(oldest))).rowcount
            removed += count
            if count < PRUNE_BATCH:
                return removed

    def _newest(self) -> float | None:
        with self._db.engine.connect() as conn:
            value = conn.execute(select(func.max(t.c.at))).scalar()
        return None if value is None else float(value)

    def _rows(self, start: float, end: float, user_id: str | None) -> list[AttemptRow]:
        query = select(*_COLUMNS).where(t.c.at >= start, t.c.at < end)
        if user_id is not None:
            query = query.where(t.c.user_id == user_id)
        with self._db.engine.connect() as conn:
            return [AttemptRow(*row) for row in conn.execute(query)]


_FIELDS = AttemptRow.__dataclass_fields__
# AttemptRow's fields, in order, as columns ("index" is the column "attempt").
_COLUMNS = [t.c["attempt" if name == "index" else name] for name in _FIELDS]


def _values(row: AttemptRow) -> dict[str, Any]:
    return {("attempt" if name == "index" else name): getattr(row, name) for name in _FIELDS}


def _insert_new(conn: Connection) -> Any:
    """INSERT that skips rows already written (the same request and attempt)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(t).on_conflict_do_nothing(index_elements=["request_id", "attempt"])
    if conn.dialect.name == "sqlite":
        return sqlite.insert(t).on_conflict_do_nothing(index_elements=["request_id", "attempt"])
    return insert(t)  # pragma: no cover - the two stores sincere supports are above
