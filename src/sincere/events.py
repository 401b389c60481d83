"""Typed events about the services a user's request depends on: the vocabulary of every bus.

Each user has their own ordered stream: ids increase by one per user, a bounded history
is kept for replay from a last-seen id, and a subscriber only ever sees its own user's events.
A bus has an epoch (the gateway takes a new one from the store at every start): its ids lie
above ``epoch * EPOCH_SPAN``, so no id of an earlier process is ever given again. The bus
itself is a port (``sincere.ports.EventBus``); the in-process one is in ``sincere.backends``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the port is typed in terms of this vocabulary
    from sincere.ports import EventBus

EPOCH_SPAN = 2**32
"""Ids per user and epoch: epoch ``e`` numbers its events from ``e * EPOCH_SPAN + 1``.

Epochs up to 2**21 keep every id exact in a JavaScript number (below 2**53)."""

GAP_DROPPED = "older events were dropped from the retained history"
GAP_BEFORE = "after_id is from before this stream began (the gateway restarted)"
GAP_BEYOND = "after_id is beyond this stream's last event id"


class EventType(StrEnum):
    SERVICE_INITIALIZING = "service_initializing"
    SERVICE_READY = "service_ready"
    SERVICE_DEGRADED = "service_degraded"
    SERVICE_UNAVAILABLE = "service_unavailable"
    SERVICE_RECOVERED = "service_recovered"
    REQUEST_STARTED = "request_started"
    REQUEST_COMPLETED = "request_completed"
    REQUEST_FAILED = "request_failed"
    # A request waits for a deployment at capacity: its place (again at every change), then
    # the wait it had once it is let through.
    REQUEST_QUEUED = "request_queued"
    REQUEST_DEQUEUED = "request_dequeued"
    # An agent's run (the analyst): started, each tool (a data query) as it really runs,
    # then completed or failed. Never a tool event for a tool that did not start.
    AGENT_STARTED = "agent_started"
    TOOL_EXECUTING = "tool_executing"
    TOOL_COMPLETED = "tool_completed"
    AGENT_COMPLETED = "agent_completed"
    AGENT_FAILED = "agent_failed"


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    type: EventType
    user_id: str
    request_id: str | None
    service: str | None
    timestamp: float
    message: str
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": str(self.type),
            "user_id": self.user_id,
            "request_id": self.request_id,
            "service": self.service,
            "timestamp": datetime.fromtimestamp(self.timestamp, UTC).isoformat(),
            "message": self.message,
            "data": dict(self.data),
        }


@dataclass(frozen=True, slots=True)
class Replay:
    """Retained events after a last-seen id; ``gap`` when some after it cannot be served."""

    events: tuple[Event, ...]
    gap: bool
    reason: str | None = None  # why, when there is a gap


class SlowConsumer(Exception):
    """A subscription the bus ended: its subscriber fell further behind than its buffer
    allows, or the stream it read was lost (the message says which)."""


OVERFLOWED = "event buffer overflow"
STREAM_LOST = "event stream lost by Redis"


@dataclass(frozen=True, slots=True)
class EventEmitter:
    """Publishes events for one request of one user: the only way domain code emits."""

    bus: EventBus
    user_id: str
    request_id: str

    async def emit(
        self,
        type: EventType,
        message: str,
        *,
        service: str | None = None,
        **data: Any,
    ) -> Event:
        return await self.bus.publish(
            self.user_id,
            type,
            message,
            request_id=self.request_id,
            service=service,
            data=data,
        )

    def post(
        self,
        type: EventType,
        message: str,
        *,
        service: str | None = None,
        **data: Any,
    ) -> Event:
        """``emit`` without waiting for the bus: in order with every other event."""
        return self.bus.post(
            self.user_id,
            type,
            message,
            request_id=self.request_id,
            service=service,
            data=data,
        )
