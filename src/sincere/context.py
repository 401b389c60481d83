"""The per-request context: who asks, at which tier, until when, and where events go."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sincere.errors import ErrorContext
from sincere.events import Event, EventEmitter, EventType

if TYPE_CHECKING:  # the ports import this module's Tier (through identity)
    from sincere.ports import EventBus


class Tier(StrEnum):
    FREE = "free"
    STANDARD = "standard"
    ENTERPRISE = "enterprise"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Everything a request carries through the domain. Made only by ``ContextFactory``."""

    user_id: str
    tier: Tier
    request_id: str
    deadline: float  # time.monotonic() by which the request must be finished
    emitter: EventEmitter

    def remaining(self) -> float:
        """Seconds left before the deadline (negative once it has passed)."""
        return self.deadline - time.monotonic()

    def error_context(self, service: str | None = None) -> ErrorContext:
        return ErrorContext(
            user_id=self.user_id,
            request_id=self.request_id,
            service=service,
            tier=str(self.tier),
        )

    async def emit(
        self, type: EventType, message: str, *, service: str | None = None, **data: Any
    ) -> Event:
        return await self.emitter.emit(type, message, service=service, **data)

    def post(
        self, type: EventType, message: str, *, service: str | None = None, **data: Any
    ) -> Event:
        return self.emitter.post(type, message, service=service, **data)


def new_request_id() -> str:
    """A fresh request id: 128 random bits."""
    return f"req_{os.urandom(16).hex()}"


class ContextFactory:
    """Makes a fresh context per request; nothing mutable is shared between two of them."""

    def __init__(self, bus: EventBus, default_timeout_s: float) -> None:
        self._bus = bus
        self._default_timeout_s = default_timeout_s

    def create(
        self,
        user_id: str,
        tier: Tier | str = Tier.FREE,
        *,
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> RequestContext:
        request_id = request_id or new_request_id()
        timeout = self._default_timeout_s if timeout_s is None else timeout_s
        return RequestContext(
            user_id=user_id,
            tier=Tier(tier),
            request_id=request_id,
            deadline=time.monotonic() + timeout,
            emitter=EventEmitter(self._bus, user_id, request_id),
        )
