"""The gateway's parts, assembled once per process from the settings."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from sincere.config import Settings
from sincere.context import ContextFactory
from sincere.errors import AuthenticationFailed, ErrorContext, PermissionDenied
from sincere.events import InProcessEventBus
from sincere.guard.response_guard import ResponseGuard
from sincere.health import Transition
from sincere.llm.cascade import ModelCascade
from sincere.server.metrics import Metrics
from sincere.store import (
    Database,
    KeyRecord,
    KeyStore,
    Role,
    ServiceHistory,
    open_database,
    start_event_stream,
)
from sincere.tiers.limits import TierLimiter


def bearer_key(headers: Mapping[str, str]) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, or None."""
    header = headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None


@dataclass
class Gateway:
    settings: Settings
    bus: InProcessEventBus
    contexts: ContextFactory
    cascade: ModelCascade
    database: Database
    keys: KeyStore
    history: ServiceHistory
    limiter: TierLimiter
    guard: ResponseGuard
    metrics: Metrics
    # When this process assembled its gateway: the start of every state it has not seen change.
    started_at: float = field(default_factory=time.time)

    @classmethod
    def create(cls, settings: Settings, env: Mapping[str, str] | None = None) -> Gateway:
        env = os.environ if env is None else env
        cascade = ModelCascade.from_settings(settings, env)
        database = open_database(settings.database_url())
        history = ServiceHistory(database)
        # A new epoch per process: a client's last_event_id from before a restart is
        # recognised as such (a gap), never mistaken for an id of the new stream.
        bus = InProcessEventBus(
            settings.server.event_history,
            settings.server.event_buffer,
            epoch=start_event_stream(database),
        )

        def persist(service: str, transition: Transition) -> None:
            history.record(service, str(transition.state), transition.message, transition.at)

        cascade.registry.on_transition(persist)
        return cls(
            settings=settings,
            bus=bus,
            contexts=ContextFactory(bus, settings.defaults.timeout_s),
            cascade=cascade,
            database=database,
            keys=KeyStore(database),
            history=history,
            limiter=TierLimiter(settings.tiers),
            guard=cascade.guard,  # one guard: the cascade checks answers, routes streams
            metrics=Metrics(lambda: cascade.breakers),
        )

    async def aclose(self) -> None:
        await self.cascade.aclose()
        self.database.engine.dispose()

    async def authenticate(
        self, key: str | None, request_id: str, *, admin: bool = False
    ) -> KeyRecord:
        """The key's record, or AuthenticationFailed / PermissionDenied."""
        context = ErrorContext(request_id=request_id, service="auth")
        if not key:
            raise AuthenticationFailed(
                "no API key: send it as 'Authorization: Bearer <key>'",
                context=context,
                suggestions=["Create one with: sincere keys create --user U --tier T"],
            )
        record = self.keys.cached(key)
        if record is None and self.keys.well_formed(key):
            # A miss costs a query: on a worker thread, so that a flood of unknown keys, or
            # a slow database, cannot stall every other request on the event loop.
            record = await asyncio.to_thread(self.keys.verify, key)
        if record is None:
            raise AuthenticationFailed(
                "the API key is unknown or revoked",
                context=context,
                suggestions=["Check the key, or create a new one with: sincere keys create"],
            )
        if admin and record.role is not Role.ADMIN:
            raise PermissionDenied(
                "this needs a key with the admin role",
                context=ErrorContext(record.user_id, request_id, "auth", str(record.tier)),
            )
        return record
