"""Service history in SQL: every recorded state change, for /status and recovery estimates,
and the lifetimes of the gateway processes that observed them."""

from __future__ import annotations

from sqlalchemy import insert, select, update

from sincere.backends.sql.database import Database
from sincere.backends.sql.schema import gateway_processes, service_transitions
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

    async def begin_observing(self, at: float) -> int:
        """A new lifetime from ``at``: the id its heartbeats name."""
        return await self._db.run(self._begin, at)

    async def still_observing(self, process: int, at: float) -> None:
        """Move the lifetime's end to ``at`` (never back: a late heartbeat changes nothing)."""
        await self._db.run(self._seen, process, at)

    async def observed(self, start: float, end: float) -> list[tuple[float, float]]:
        """The lifetimes that overlap ``[start, end)``, by start."""
        return await self._db.run(self._observed, start, end)

    def _begin(self, at: float) -> int:
        with self._db.engine.begin() as conn:
            row = conn.execute(
                insert(gateway_processes)
                .values(started_at=at, last_seen_at=at)
                .returning(gateway_processes.c.id)
            ).scalar_one()
        return int(row)

    def _seen(self, process: int, at: float) -> None:
        p = gateway_processes.c
        with self._db.engine.begin() as conn:
            conn.execute(
                update(gateway_processes)
                .where(p.id == process, p.last_seen_at < at)
                .values(last_seen_at=at)
            )

    def _observed(self, start: float, end: float) -> list[tuple[float, float]]:
        p = gateway_processes.c
        with self._db.engine.connect() as conn:
            rows = conn.execute(
                select(p.started_at, p.last_seen_at)
                .where(p.last_seen_at >= start, p.started_at < end)
                .order_by(p.started_at, p.id)
            ).all()
        return [(float(a), float(b)) for a, b in rows]

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
