"""What escalation is made of: incidents, tickets, deliveries and their attempts, and the
notifications an incident's events become (Standard Webhooks and PagerDuty Events v2).

No I/O here: the store writes these (``ports.EscalationStore``), the relay sends them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sincere.config import EscalationConfig

# The newest tickets a notification lists; ``ticket_count`` is always the whole count.
TICKETS_PER_NOTIFICATION = 50


class IncidentEvent(StrEnum):
    """The Standard Webhooks event types of an incident."""

    OPENED = "incident.opened"
    UPDATED = "incident.updated"  # more requests failed the same way (new tickets)
    RESOLVED = "incident.resolved"


class IncidentState(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


def dedup_key(deployment: str, failure_class: str) -> str:
    """One open incident per deployment and failure class (PagerDuty's ``dedup_key``)."""
    return f"sincere/{deployment}/{failure_class}"[:255]


def new_incident_id() -> str:
    return "inc_" + secrets.token_hex(8)


def new_ticket_id() -> str:
    return "tkt_" + secrets.token_hex(8)


def new_message_id() -> str:
    """A webhook-id: the receiver's idempotency key, the same on every retry."""
    return "msg_" + secrets.token_urlsafe(18)


def iso(at: float | None) -> str | None:
    return (
        None if at is None else datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    )


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed request of an escalating tier, as escalation records it."""

    request_id: str
    user_id: str
    tier: str
    deployment: str  # the first route tried (or the model's first deployment)
    failure_class: str  # the error's error_type
    status: int  # the HTTP status the caller received
    message: str
    contact: str | None
    at: float  # unix time


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    dedup_key: str
    deployment: str
    failure_class: str
    state: IncidentState
    opened_at: float
    updated_at: float
    resolved_at: float | None
    ticket_count: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dedup_key": self.dedup_key,
            "deployment": self.deployment,
            "failure_class": self.failure_class,
            "state": str(self.state),
            "opened_at": iso(self.opened_at),
            "updated_at": iso(self.updated_at),
            "resolved_at": iso(self.resolved_at),
            "ticket_count": self.ticket_count,
        }


@dataclass(frozen=True, slots=True)
class Ticket:
    id: str
    incident_id: str
    request_id: str
    user_id: str
    tier: str
    error_type: str
    status: int
    message: str
    contact: str | None
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "created_at": iso(self.created_at)}

    def summary(self) -> dict[str, Any]:
        """What a notification says of a ticket (no message: it is the caller's to read)."""
        return {
            "id": self.id,
            "request_id": self.request_id,
            "user_id": self.user_id,
            "tier": self.tier,
            "error_type": self.error_type,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class Escalated:
    """What one failed request left: its ticket, and the incident it opened or joined."""

    incident: Incident
    ticket: Ticket
    opened: bool

    @property
    def reference(self) -> str:
        """What a customer quotes to a human: both ids, each one real."""
        return f"{self.incident.id}/{self.ticket.id}"


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    delivery_id: str
    at: float  # unix time it started
    status: int | None  # the receiver's HTTP status; None: no answer
    latency_ms: float
    error: str | None  # a class of failure (http_503, timeout, …), never a URL or secret

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": iso(self.at), "ok": self.ok}


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification to one destination: a row of the outbox."""

    id: str  # msg_…
    incident_id: str
    event_type: IncidentEvent
    destination: str
    payload: str  # the JSON body as written (PagerDuty's routing key is added when sent)
    created_at: float
    next_attempt_at: float
    attempts: int
    delivered_at: float | None
    dead: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "incident_id": self.incident_id,
            "event_type": str(self.event_type),
            "destination": self.destination,
            "created_at": iso(self.created_at),
            "next_attempt_at": iso(self.next_attempt_at),
            "attempts": self.attempts,
            "delivered_at": iso(self.delivered_at),
            "dead": self.dead,
        }


@dataclass(frozen=True, slots=True)
class IncidentDetail:
    incident: Incident
    tickets: tuple[Ticket, ...]
    deliveries: tuple[Delivery, ...]
    attempts: Mapping[str, tuple[DeliveryAttempt, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.incident.to_dict(),
            "tickets": [t.to_dict() for t in self.tickets],
            "deliveries": [
                {**d.to_dict(), "attempt_log": [a.to_dict() for a in self.attempts.get(d.id, ())]}
                for d in self.deliveries
            ],
        }


# ─── destinations and what they are sent ─────────────────────────────────────────────

PAGERDUTY = "pagerduty"


@dataclass(frozen=True, slots=True)
class Destination:
    """Where an incident's events go. ``name`` is what the outbox stores: no secret, and
    no query string (which could hold one)."""

    name: str
    kind: str  # "webhook" | "pagerduty"


def webhook_name(url: str) -> str:
    parts = urlsplit(url)
    return "webhook:" + urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def destinations(config: EscalationConfig) -> tuple[Destination, ...]:
    found = [Destination(webhook_name(w.url), "webhook") for w in config.webhooks]
    if config.pagerduty is not None:
        found.append(Destination(PAGERDUTY, PAGERDUTY))
    return tuple(found)


def webhook_body(
    event: IncidentEvent, incident: Incident, tickets: Sequence[Ticket], at: float
) -> dict[str, Any]:
    """Standard Webhooks' recommended shape: ``{type, timestamp, data}``."""
    newest = sorted(tickets, key=lambda t: t.created_at, reverse=True)[:TICKETS_PER_NOTIFICATION]
    return {
        "type": str(event),
        "timestamp": iso(at),
        "data": {**incident.to_dict(), "tickets": [t.summary() for t in newest]},
    }


def pagerduty_body(event: IncidentEvent, incident: Incident, at: float) -> dict[str, Any] | None:
    """An Events API v2 event without its routing key (added when sent, from the
    environment); None for ``incident.updated``: PagerDuty keeps one alert per dedup key,
    and a new ticket changes nothing there."""
    if event is IncidentEvent.RESOLVED:
        return {"event_action": "resolve", "dedup_key": incident.dedup_key}
    if event is IncidentEvent.UPDATED:
        return None
    return {
        "event_action": "trigger",
        "dedup_key": incident.dedup_key,
        "payload": {
            "summary": (
                f"sincere: {incident.deployment} failing requests ({incident.failure_class})"
            ),
            "source": incident.deployment,
            "severity": "critical",
            "timestamp": iso(at),
            "component": incident.deployment,
            "group": "sincere",
            "class": incident.failure_class,
            "custom_details": {"incident_id": incident.id},
        },
    }


def notifications(
    event: IncidentEvent,
    incident: Incident,
    tickets: Sequence[Ticket],
    targets: Sequence[Destination],
    at: float,
) -> list[tuple[Destination, str]]:
    """The body each destination gets for one event of an incident, as JSON text."""
    out: list[tuple[Destination, str]] = []
    for target in targets:
        body = (
            pagerduty_body(event, incident, at)
            if target.kind == PAGERDUTY
            else webhook_body(event, incident, tickets, at)
        )
        if body is not None:
            out.append((target, json.dumps(body, separators=(",", ":"))))
    return out
