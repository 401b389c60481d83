"""Escalation in SQL: incidents, tickets and the outbox, each change in one transaction.

Race-free across a fleet on PostgreSQL: an open incident holds its dedup key in the
unique column ``open_key`` (NULL once resolved), and a new one is inserted with
``ON CONFLICT DO NOTHING``, so processes failing at once find the same incident. Relays
claim due deliveries with one ``UPDATE … WHERE seq IN (SELECT … FOR UPDATE SKIP LOCKED)``.
Every transaction writes first: on SQLite it then holds the write lock from its start,
and never fails upgrading a read to a write.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, exists, false, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from sincere.backends.sql.database import Database
from sincere.backends.sql.schema import deliveries, delivery_attempts, incidents, tickets
from sincere.tiers.incidents import (
    TICKETS_PER_NOTIFICATION,
    Delivery,
    DeliveryAttempt,
    Destination,
    Escalated,
    Failure,
    Incident,
    IncidentDetail,
    IncidentEvent,
    IncidentState,
    Ticket,
    dedup_key,
    new_incident_id,
    new_message_id,
    new_ticket_id,
    notifications,
)

# A failure that finds its incident resolved between the insert and the read tries again.
ESCALATE_TRIES = 3


class SqlEscalationStore:
    """``ports.EscalationStore`` on the store; each method runs on a worker thread."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def escalate(self, failure: Failure, targets: Sequence[Destination]) -> Escalated:
        return await self._db.run(self._escalate, failure, tuple(targets))

    async def resolve(
        self, deployment: str, at: float, targets: Sequence[Destination]
    ) -> list[Incident]:
        return await self._db.run(self._resolve, deployment, at, tuple(targets))

    async def open_deployments(self) -> set[str]:
        return await self._db.run(self._open_deployments)

    async def claim(self, now: float, lease_s: float, limit: int) -> list[Delivery]:
        return await self._db.run(self._claim, now, lease_s, limit)

    async def record_attempt(self, attempt: DeliveryAttempt, schedule: Sequence[float]) -> None:
        await self._db.run(self._record_attempt, attempt, tuple(schedule))

    async def replay(self, delivery_id: str, at: float) -> bool:
        return await self._db.run(self._replay, delivery_id, at)

    async def incidents(self, limit: int = 50) -> list[Incident]:
        return await self._db.run(self._incidents, limit)

    async def incident(self, incident_id: str) -> IncidentDetail | None:
        return await self._db.run(self._incident, incident_id)

    async def tickets(self, limit: int = 50) -> list[Ticket]:
        return await self._db.run(self._tickets, limit)

    async def ticket(self, ticket_id: str) -> Ticket | None:
        return await self._db.run(self._ticket, ticket_id)

    # ─── the statements, each run on a worker thread ─────────────────────────────────

    def _escalate(self, f: Failure, targets: tuple[Destination, ...]) -> Escalated:
        key = dedup_key(f.deployment, f.failure_class)
        for _ in range(ESCALATE_TRIES):
            with self._db.engine.begin() as conn:
                opened = _insert_ignoring_conflict(conn)(
                    id=new_incident_id(),
                    dedup_key=key,
                    open_key=key,
                    deployment=f.deployment,
                    failure_class=f.failure_class,
                    state=str(IncidentState.OPEN),
                    opened_at=f.at,
                    updated_at=f.at,
                    resolved_at=None,
                    ticket_count=0,
                )
                counted = conn.execute(
                    update(incidents)
                    .where(incidents.c.open_key == key)
                    .values(ticket_count=incidents.c.ticket_count + 1, updated_at=f.at)
                )
                if counted.rowcount != 1:  # resolved since the insert found it open
                    continue
                row = conn.execute(select(incidents).where(incidents.c.open_key == key)).one()
                incident = _incident(row)
                ticket = Ticket(
                    id=new_ticket_id(),
                    incident_id=incident.id,
                    request_id=f.request_id,
                    user_id=f.user_id,
                    tier=f.tier,
                    error_type=f.failure_class,
                    status=f.status,
                    message=f.message,
                    contact=f.contact,
                    created_at=f.at,
                )
                conn.execute(insert(tickets).values(**_ticket_values(ticket)))
                event = IncidentEvent.OPENED if opened else IncidentEvent.UPDATED
                self._notify(conn, event, incident, targets, f.at)
                return Escalated(incident, ticket, opened)
        raise RuntimeError(f"no open incident for {key} after {ESCALATE_TRIES} tries")

    def _resolve(
        self, deployment: str, at: float, targets: tuple[Destination, ...]
    ) -> list[Incident]:
        resolved: list[Incident] = []
        with self._db.engine.begin() as conn:
            rows = conn.execute(
                update(incidents)
                .where(incidents.c.deployment == deployment, incidents.c.open_key.is_not(None))
                .values(
                    open_key=None,
                    state=str(IncidentState.RESOLVED),
                    resolved_at=at,
                    updated_at=at,
                )
                .returning(*incidents.c)
            ).all()
            for row in rows:
                incident = _incident(row)
                self._notify(conn, IncidentEvent.RESOLVED, incident, targets, at)
                resolved.append(incident)
        return resolved

    def _notify(
        self,
        conn: Connection,
        event: IncidentEvent,
        incident: Incident,
        targets: tuple[Destination, ...],
        at: float,
    ) -> None:
        """The outbox rows of one event, in the caller's transaction. A new ticket rewrites
        an ``incident.updated`` that no relay has taken yet rather than adding another:
        a thousand failed requests are one update, not a thousand."""
        recent = conn.execute(
            select(tickets)
            .where(tickets.c.incident_id == incident.id)
            .order_by(tickets.c.created_at.desc())
            .limit(TICKETS_PER_NOTIFICATION)
        ).all()
        bodies = notifications(event, incident, [_ticket(r) for r in recent], targets, at)
        for target, body in bodies:
            if event is IncidentEvent.UPDATED:
                pending = conn.execute(
                    update(deliveries)
                    .where(
                        deliveries.c.incident_id == incident.id,
                        deliveries.c.destination == target.name,
                        deliveries.c.event_type == str(event),
                        deliveries.c.delivered_at.is_(None),
                        deliveries.c.dead == false(),
                        deliveries.c.attempts == 0,
                        or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until < at),
                    )
                    .values(payload=body)
                )
                if pending.rowcount:
                    continue
            conn.execute(
                insert(deliveries).values(
                    id=new_message_id(),
                    incident_id=incident.id,
                    event_type=str(event),
                    destination=target.name,
                    payload=body,
                    created_at=at,
                    next_attempt_at=at,
                    claimed_until=None,
                    attempts=0,
                    delivered_at=None,
                    dead=False,
                )
            )

    def _open_deployments(self) -> set[str]:
        with self._db.engine.connect() as conn:
            rows = conn.execute(
                select(incidents.c.deployment).where(incidents.c.open_key.is_not(None))
            ).all()
        return {r.deployment for r in rows}

    def _claim(self, now: float, lease_s: float, limit: int) -> list[Delivery]:
        earlier = deliveries.alias("earlier")
        due = (
            select(deliveries.c.seq)
            .where(
                deliveries.c.delivered_at.is_(None),
                deliveries.c.dead == false(),
                deliveries.c.next_attempt_at <= now,
                or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until <= now),
                ~exists().where(
                    earlier.c.incident_id == deliveries.c.incident_id,
                    earlier.c.destination == deliveries.c.destination,
                    earlier.c.seq < deliveries.c.seq,
                    earlier.c.delivered_at.is_(None),
                    earlier.c.dead == false(),
                ),
            )
            .order_by(deliveries.c.seq)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self._db.engine.begin() as conn:
            rows = conn.execute(
                update(deliveries)
                .where(deliveries.c.seq.in_(due.scalar_subquery()))
                .values(claimed_until=now + lease_s)
                .returning(*deliveries.c)
            ).all()
        return sorted((_delivery(r) for r in rows), key=lambda d: d.created_at)

    def _record_attempt(self, attempt: DeliveryAttempt, schedule: tuple[float, ...]) -> None:
        with self._db.engine.begin() as conn:
            conn.execute(
                insert(delivery_attempts).values(
                    delivery_id=attempt.delivery_id,
                    at=attempt.at,
                    status=attempt.status,
                    latency_ms=attempt.latency_ms,
                    error=attempt.error,
                )
            )
            done = conn.execute(
                select(deliveries.c.attempts).where(deliveries.c.id == attempt.delivery_id)
            ).scalar_one_or_none()
            if done is None:
                return
            made = done + 1
            values: dict[str, Any] = {"attempts": made, "claimed_until": None}
            if attempt.ok:
                values["delivered_at"] = attempt.at
            elif made > len(schedule):
                values["dead"] = True
            else:
                values["next_attempt_at"] = attempt.at + schedule[made - 1]
            conn.execute(
                update(deliveries).where(deliveries.c.id == attempt.delivery_id).values(**values)
            )

    def _replay(self, delivery_id: str, at: float) -> bool:
        with self._db.engine.begin() as conn:
            result = conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id)
                .values(
                    dead=False,
                    delivered_at=None,
                    attempts=0,
                    next_attempt_at=at,
                    claimed_until=None,
                )
            )
        return result.rowcount == 1

    def _incidents(self, limit: int) -> builtins.list[Incident]:
        with self._db.engine.connect() as conn:
            rows = conn.execute(
                select(incidents).order_by(incidents.c.opened_at.desc()).limit(limit)
            ).all()
        return [_incident(r) for r in rows]

    def _incident(self, incident_id: str) -> IncidentDetail | None:
        with self._db.engine.connect() as conn:
            row = conn.execute(select(incidents).where(incidents.c.id == incident_id)).one_or_none()
            if row is None:
                return None
            ticket_rows = conn.execute(
                select(tickets)
                .where(tickets.c.incident_id == incident_id)
                .order_by(tickets.c.created_at)
            ).all()
            delivery_rows = conn.execute(
                select(deliveries)
                .where(deliveries.c.incident_id == incident_id)
                .order_by(deliveries.c.seq)
            ).all()
            ids = [r.id for r in delivery_rows]
            attempt_rows = conn.execute(
                select(delivery_attempts)
                .where(delivery_attempts.c.delivery_id.in_(ids))
                .order_by(delivery_attempts.c.id)
            ).all()
        attempts: dict[str, list[DeliveryAttempt]] = {}
        for r in attempt_rows:
            attempts.setdefault(r.delivery_id, []).append(_attempt(r))
        return IncidentDetail(
            _incident(row),
            tuple(_ticket(r) for r in ticket_rows),
            tuple(_delivery(r) for r in delivery_rows),
            {k: tuple(v) for k, v in attempts.items()},
        )

    def _tickets(self, limit: int) -> builtins.list[Ticket]:
        with self._db.engine.connect() as conn:
            rows = conn.execute(
                select(tickets).order_by(tickets.c.created_at.desc()).limit(limit)
            ).all()
        return [_ticket(r) for r in rows]

    def _ticket(self, ticket_id: str) -> Ticket | None:
        with self._db.engine.connect() as conn:
            row = conn.execute(select(tickets).where(tickets.c.id == ticket_id)).one_or_none()
        return None if row is None else _ticket(row)


def _insert_ignoring_conflict(conn: Connection) -> Callable[..., bool]:
    """An insert of an incident that does nothing when an open one has its key: True when
    the row was inserted (this failure opened the incident)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite

    def run(**values: Any) -> bool:
        statement = (
            dialect.insert(incidents)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[incidents.c.open_key])
            .returning(incidents.c.id)  # a row only when inserted (rowcount is unreliable)
        )
        return conn.execute(statement).scalar_one_or_none() is not None

    return run


def _incident(row: Any) -> Incident:
    return Incident(
        id=row.id,
        dedup_key=row.dedup_key,
        deployment=row.deployment,
        failure_class=row.failure_class,
        state=IncidentState(row.state),
        opened_at=row.opened_at,
        updated_at=row.updated_at,
        resolved_at=row.resolved_at,
        ticket_count=row.ticket_count,
    )


def _ticket_values(t: Ticket) -> dict[str, Any]:
    return {
        "id": t.id,
        "incident_id": t.incident_id,
        "request_id": t.request_id,
        "user_id": t.user_id,
        "tier": t.tier,
        "error_type": t.error_type,
        "status": t.status,
        "message": t.message,
        "contact": t.contact,
        "created_at": t.created_at,
    }


def _ticket(row: Any) -> Ticket:
    return Ticket(
        id=row.id,
        incident_id=row.incident_id,
        request_id=row.request_id,
        user_id=row.user_id,
        tier=row.tier,
        error_type=row.error_type,
        status=row.status,
        message=row.message,
        contact=row.contact,
        created_at=row.created_at,
    )


def _delivery(row: Any) -> Delivery:
    return Delivery(
        id=row.id,
        incident_id=row.incident_id,
        event_type=IncidentEvent(row.event_type),
        destination=row.destination,
        payload=row.payload,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        attempts=row.attempts,
        delivered_at=row.delivered_at,
        dead=bool(row.dead),
    )


def _attempt(row: Any) -> DeliveryAttempt:
    return DeliveryAttempt(
        delivery_id=row.delivery_id,
        at=row.at,
        status=row.status,
        latency_ms=row.latency_ms,
        error=row.error,
    )
