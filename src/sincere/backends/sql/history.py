"""Service history: every recorded state change, kept for /status and recovery estimates."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select

from sincere.store.database import Database
from sincere.store.schema import service_transitions


@dataclass(frozen=True, slots=True)
class RecordedTransition:
    service: str
    state: str
    message: str
    at: float


class ServiceHistory:
    def __init__(self, db: Database) -> None:
        self._db = db

    def record(self, service: str, state: str, message: str, at: float) -> None:
        with self._db.engine.begin() as conn:
            conn.execute(
                insert(service_transitions).values(
                    service=service, state=state, message=message, at=at
                )
            )

    def recent(self, service: str, limit: int = 20) -> list[RecordedTransition]:
        """The newest transitions of one service, newest first."""
        with self._db.engine.connect() as conn:
            rows = conn.execute(
                select(service_transitions)
                .where(service_transitions.c.service == service)
                .order_by(service_transitions.c.at.desc(), service_transitions.c.id.desc())
                .limit(limit)
            ).all()
        return [RecordedTransition(r.service, r.state, r.message, r.at) for r in rows]
