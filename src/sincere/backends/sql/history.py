"""Service history in SQL: every recorded state change, for /status and recovery estimates."""

from __future__ import annotations

from sqlalchemy import insert, select

from sincere.backends.sql.database import Database
from sincere.backends.sql.schema import service_transitions
from sincere.ports import RecordedTransition


class SqlServiceHistory:
    """``ports.ServiceHistory`` on the store; each statement runs on a worker thread."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, service: str, state: str, message: str, at: float) -> None:
        await self._db.run(self._insert, service, state, message, at)

    async def recent(self, service: str, limit: int = 20) -> list[RecordedTransition]:
        """The newest transitions of one service, newest first."""
        return await self._db.run(self._select, service, limit)

    async def between(self, service: str, start: float, end: float) -> list[RecordedTransition]:
        """The transitions in ``[start, end)``, oldest first, led by the last one before
        ``start`` (the state the range began in), when there is one."""
        return await self._db.run(self._select_between, service, start, end)

    def _insert(self, service: str, state: str, message: str, at: float) -> None:
        with self._db.engine.begin() as conn:
            conn.execute(
                insert(service_transitions).values(
                    service=service, state=state, message=message, at=at
                )
            )

    def _select(self, service: str, limit: int) -> list[RecordedTransition]:
        with self._db.engine.connect() as conn:
            rows = conn.execute(
                select(service_transitions)
                .where(service_transitions.c.service == service)
                .order_by(service_transitions.c.at.desc(), service_transitions.c.id.desc())
                .limit(limit)
            ).all()
        return [RecordedTransition(r.service, r.state, r.message, r.at) for r in rows]

    def _select_between(self, service: str, start: float, end: float) -> list[RecordedTransition]:
        t = service_transitions.c
        with self._db.engine.connect() as conn:
            before = conn.execute(
                select(service_transitions)
                .where(t.service == service, t.at < start)
                .order_by(t.at.desc(), t.id.desc())
                .limit(1)
            ).all()
            within = conn.execute(
                select(service_transitions)
                .where(t.service == service, t.at >= start, t.at < end)
                .order_by(t.at, t.id)
            ).all()
        return [RecordedTransition(r.service, r.state, r.message, r.at) for r in [*before, *within]]
