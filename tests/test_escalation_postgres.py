"""Escalation on PostgreSQL as a fleet uses it: processes failing at once open one incident,
and relays claiming at once never take the same delivery."""

from __future__ import annotations

import asyncio
import time

from sincere.backends.sql import open_database
from sincere.backends.sql.escalation import SqlEscalationStore
from sincere.tiers.incidents import DeliveryAttempt, Destination, Failure

TARGETS = (Destination("webhook:http://127.0.0.1/hooks", "webhook"),)
AT_ONCE = 16


def _failure(n: int) -> Failure:
    return Failure(
        request_id=f"req_{n}",
        user_id="bob",
        tier="enterprise",
        deployment="up",
        failure_class="service_unavailable",
        status=503,
        message="every route failed",
        contact=None,
        at=time.time(),
    )


async def test_failures_at_once_on_several_connections_open_one_incident(
    fresh_schema: str,
) -> None:
    # Separate engines: separate connection pools, as separate processes have.
    stores = [SqlEscalationStore(open_database(fresh_schema)) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(stores[n % len(stores)].escalate(_failure(n), TARGETS) for n in range(AT_ONCE))
        )
        assert len({r.incident.id for r in results}) == 1
        assert sum(r.opened for r in results) == 1
        assert len({r.ticket.id for r in results}) == AT_ONCE
        (incident,) = await stores[0].incidents()
        assert incident.ticket_count == AT_ONCE
        detail = await stores[0].incident(incident.id)
        assert detail is not None
        kinds = [d.event_type for d in detail.deliveries]
        assert kinds.count("incident.opened") == 1

        # Relays claiming at once: each due delivery goes to exactly one of them.
        claims = await asyncio.gather(*(s.claim(time.time(), 30.0, 10) for s in stores))
        claimed = [d.id for batch in claims for d in batch]
        assert len(claimed) == len(set(claimed))
        # Only the trigger is due: an update waits for the trigger of its destination.
        assert [d.event_type for batch in claims for d in batch] == ["incident.opened"]

        (trigger,) = [d for batch in claims for d in batch]
        await stores[0].record_attempt(
            DeliveryAttempt(trigger.id, time.time(), 204, 1.0, None), (5.0,)
        )
        later = await asyncio.gather(*(s.claim(time.time(), 30.0, 10) for s in stores))
        assert [d.event_type for batch in later for d in batch] == ["incident.updated"]

        resolved = await stores[1].resolve("up", time.time(), TARGETS)
        assert [i.id for i in resolved] == [incident.id]
        assert await stores[2].resolve("up", time.time(), TARGETS) == []  # once
        again = await stores[3].escalate(_failure(AT_ONCE), TARGETS)
        assert again.opened
        assert again.incident.id != incident.id
    finally:
        for store in stores:
            store._db.engine.dispose()
