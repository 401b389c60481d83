"""The gateway's parts, assembled once per process from the settings."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from sincere.backends.memory.events import InProcessEventBus
from sincere.backends.memory.limits import InProcessLimiter
from sincere.backends.sql import (
    Database,
    SqlKeyStore,
    SqlServiceHistory,
    open_database,
    start_event_stream,
)
from sincere.config import Settings
from sincere.context import ContextFactory
from sincere.errors import AuthenticationFailed, ErrorContext, PermissionDenied
from sincere.guard.response_guard import ResponseGuard
from sincere.health import HistoryWriter
from sincere.identity import KeyRecord, KeyRole
from sincere.llm.cascade import ModelCascade
from sincere.ports import EventBus, KeyStore, Limiter, ServiceHistory
from sincere.server.metrics import Metrics


def bearer_key(headers: Mapping[str, str]) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, or None."""
    header = headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None


@dataclass
class Gateway:
    settings: Settings
    bus: EventBus
    contexts: ContextFactory
    cascade: ModelCascade
    database: Database
    keys: KeyStore
    history: ServiceHistory
    history_writer: HistoryWriter  # records the registry's transitions in ``history``
    limiter: Limiter
    guard: ResponseGuard
    metrics: Metrics
    # When this process assembled its gateway: the start of every state it has not seen change.
    started_at: float = field(default_factory=time.time)

    @classmethod
    def create(cls, settings: Settings, env: Mapping[str, str] | None = None) -> Gateway:
        env = os.environ if env is None else env
        cascade = ModelCascade.from_settings(settings, env)
        database = open_database(settings.database_url())
        history = SqlServiceHistory(database)
        # A new epoch per process: a client's last_event_id from before a restart is
        # recognised as such (a gap), never mistaken for an id of the new stream.
        bus = InProcessEventBus(
            settings.server.event_history,
            settings.server.event_buffer,
            epoch=start_event_stream(database),
        )
        # Queued, then written on a worker thread: a transition never waits on the store.
        history_writer = HistoryWriter(history)
        cascade.registry.on_transition(history_writer)
        return cls(
            settings=settings,
            bus=bus,
            contexts=ContextFactory(bus, settings.defaults.timeout_s),
            cascade=cascade,
            database=database,
            keys=SqlKeyStore(database),
            history=history,
            history_writer=history_writer,
            limiter=InProcessLimiter(settings.tiers),
            guard=cascade.guard,  # one guard: the cascade checks answers, routes streams
            metrics=Metrics(lambda: cascade.breakers),
        )

    async def aclose(self) -> None:
        await self.cascade.aclose()
        await self.history_writer.flush()
        await self.bus.aclose()
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
        record = await self.keys.verify(key)  # cached, or looked up off the event loop
        if record is None:
            raise AuthenticationFailed(
                "the API key is unknown or revoked",
                context=context,
                suggestions=["Check the key, or create a new one with: sincere keys create"],
            )
        if admin and record.role is not KeyRole.ADMIN:
            raise PermissionDenied(
                "this needs a key with the admin role",
                context=ErrorContext(record.user_id, request_id, "auth", str(record.tier)),
            )
        return record
