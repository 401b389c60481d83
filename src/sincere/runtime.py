"""The composition root: the one place that turns ``Settings`` into a running gateway.

The server, the CLI and the tests all build their process here. Providers are made by
kind (a deployment's ``provider``) from a table; tests add their own kinds by name
rather than swapping parts of a built runtime.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from redis.asyncio import Redis
from sqlalchemy.exc import InterfaceError, OperationalError

from sincere.agents.analyst import Analyst
from sincere.agents.data import DataAgent
from sincere.auth import Authenticator
from sincere.backends.memory.breakers import InProcessBreakers
from sincere.backends.memory.events import InProcessEventBus
from sincere.backends.memory.limits import InProcessLimiter
from sincere.backends.redis import connect
from sincere.backends.sql.database import Database, create_store_engine, open_database
from sincere.backends.sql.escalation import SqlEscalationStore
from sincere.backends.sql.flags import SqlFlagStore
from sincere.backends.sql.history import SqlServiceHistory
from sincere.backends.sql.keys import SqlKeyStore
from sincere.backends.sql.streams import start_event_stream
from sincere.backends.sql.telemetry import SqlTelemetryStore
from sincere.config import DeploymentConfig, Settings
from sincere.context import ContextFactory
from sincere.errors import ConfigError
from sincere.health import HistoryWriter, ServiceRegistry
from sincere.llm.breaker import BreakerPolicy
from sincere.llm.cascade import FlagReader, ModelCascade, every_feature_on
from sincere.llm.provider import Provider
from sincere.pipeline import ChatPipeline
from sincere.ports import (
    AdmissionQueue,
    Breakers,
    EscalationStore,
    EventBus,
    FlagStore,
    KeyStore,
    Limiter,
    RequestObserver,
    ServiceHistory,
)
from sincere.redact import forget_secret, remember_secret
from sincere.server.metrics import Metrics, MetricsRecorder
from sincere.telemetry import RecentWindow, TelemetryWriter
from sincere.tiers.escalation import Escalation
from sincere.tiers.flags import Flag
from sincere.tiers.relay import Relay

if TYPE_CHECKING:  # a single process never loads the fleet's backends
    from sincere.backends.redis.trips import RoundTrips

ProviderFactory = Callable[[DeploymentConfig, Mapping[str, str]], Provider]
"""Makes the provider of one deployment, given the environment (for its API key)."""


def _embedded(deployment: DeploymentConfig, _env: Mapping[str, str]) -> Provider:
    from sincere.llm.embedded import EmbeddedProvider

    return EmbeddedProvider(deployment)


def _openai(deployment: DeploymentConfig, env: Mapping[str, str]) -> Provider:
    from sincere.llm.openai_http import OpenAIProvider

    return OpenAIProvider(deployment, deployment.api_key(env))


PROVIDER_KINDS: Mapping[str, ProviderFactory] = {"embedded": _embedded, "openai": _openai}


@dataclass
class Runtime:
    """One process's gateway: its ports, its domain, its pipeline."""

    settings: Settings
    database: Database
    bus: EventBus
    keys: KeyStore
    history: ServiceHistory
    history_writer: HistoryWriter  # records the registry's transitions in ``history``
    limiter: Limiter
    cascade: ModelCascade  # with its breakers and its registry of the deployments' health
    contexts: ContextFactory
    pipeline: ChatPipeline
    auth: Authenticator
    metrics: Metrics
    escalations: EscalationStore  # incidents, tickets, the outbox
    escalation: Escalation  # the pipeline's escalation step; resolves on recovery
    relay: Relay  # delivers the outbox (started by the server's lifespan)
    telemetry: TelemetryWriter  # records every attempt (its writer started by the lifespan)
    data: DataAgent  # usage figures: from the telemetry store, else this process's window
    # The runtime flags (``flags.enabled(Flag.X)``); the server's lifespan keeps them fresh.
    flags: FlagStore
    # The client of the fleet's shared state ([cluster] redis_url); None: one process.
    redis: Redis | None = None
    trips: RoundTrips | None = None  # its round trips, shared by the Redis backends
    # When this process was built: the start of every state it has not seen change.
    started_at: float = field(default_factory=time.time)

    @property
    def analyst(self) -> Analyst:
        """The analyst agent: findings from ``data``, a narrative through ``pipeline``."""
        return Analyst(self.data, self.pipeline, self.contexts, self.settings)

    async def aclose(self) -> None:
        await self.escalation.flush()
        await self.flags.aclose()
        await self.cascade.aclose()
        await self.cascade.queues.aclose()
        await self.cascade.breakers.aclose()
        await self.history_writer.flush()
        await self.telemetry.flush()  # what the writer had not written yet (the CLI's)
        await self.limiter.aclose()
        await self.bus.aclose()
        if self.trips is not None:
            await self.trips.aclose()
        if self.redis is not None:
            await self.redis.aclose()
            forget_secret(_password(self.settings.cluster.redis_url))
        self.database.engine.dispose()


def build_cascade(
    settings: Settings,
    env: Mapping[str, str] | None = None,
    *,
    provider_kinds: Mapping[str, ProviderFactory] | None = None,
    breakers: Breakers | None = None,
    redis: Redis | None = None,
    trips: RoundTrips | None = None,
    flags: FlagReader | None = None,
    queues: AdmissionQueue | None = None,
) -> ModelCascade:
    """The domain alone: each deployment's provider (made by its kind), the registry of
    their health, and a breaker per deployment (``breakers``: one on a test's clock; else
    shared in ``redis`` when there is one, else in memory); ``flags`` says which of the
    features it may use (default: every one); ``queues``: the deployments' admission
    queues (default: on ``redis`` when there is one, else in memory)."""
    env = os.environ if env is None else env
    kinds = {**PROVIDER_KINDS, **(provider_kinds or {})}
    for d in settings.deployments:
        if d.provider not in kinds:
            known = ", ".join(sorted(kinds))
            raise ConfigError(
                f"{settings.source or 'the configuration'}: deployment {d.name!r}: provider "
                f"{d.provider!r} is not a kind sincere knows (use one of {known})"
            )
    providers = {d.name: kinds[d.provider](d, env) for d in settings.deployments}
    registry = ServiceRegistry()
    for name, provider in providers.items():
        registry.register(name, provider.start, timeout_s=settings.defaults.timeout_s)
    if breakers is None:
        policy = BreakerPolicy.of(settings.defaults)
        if redis is None:
            breakers = InProcessBreakers(providers, policy)
        else:  # imported here: a single process never loads the fleet's backends
            from sincere.backends.redis.breakers import RedisBreakers

            prefix = settings.cluster.key_prefix
            breakers = RedisBreakers(redis, list(providers), policy, prefix=prefix, trips=trips)
    if queues is None and redis is not None:
        from sincere.backends.redis.queue import RedisAdmissionQueues

        read = flags or every_feature_on
        queues = RedisAdmissionQueues(
            redis,
            settings,
            prefix=settings.cluster.key_prefix,
            queueing=lambda: read(Flag.QUEUEING),
        )
    return ModelCascade(settings, providers, registry, breakers, queues, flags=flags)


def build_runtime(
    settings: Settings,
    env: Mapping[str, str] | None = None,
    *,
    provider_kinds: Mapping[str, ProviderFactory] | None = None,
    breakers: Breakers | None = None,
    observers: Sequence[RequestObserver] = (),
    escalation_enabled: Callable[[], bool] | None = None,
) -> Runtime:
    """Everything the process needs, from its settings (and ``env`` for API keys).

    ``provider_kinds`` adds provider kinds by name (tests use it for their own providers);
    ``observers`` hear about every finished request after the metrics, escalation and
    telemetry do;
    ``escalation_enabled`` is asked on every failed request (None: the ``escalation``
    flag).

    With ``[cluster] redis_url`` the events, limits and breakers live in Redis (one client,
    connected on first use), shared by every process with the same URL and key prefix;
    without it they live in this process.
    """
    url = settings.cluster.redis_url
    redis: Redis | None = None
    trips: RoundTrips | None = None
    if url is not None:
        from sincere.backends.redis.trips import RoundTrips

        redis = connect(url)
        remember_secret(_password(url))  # no error, event or status page may show it
        # One pipeline per round trip for the events, the limits and the breakers'
        # successes: a request's start is one round trip, its end another.
        trips = RoundTrips(redis)
    database = open_database(settings.database_url())  # startup: migrations, synchronously
    flags = SqlFlagStore(database)
    flags.load()  # startup, synchronously; then kept fresh by the server (Runtime.flags)
    bus: EventBus
    limiter: Limiter
    queues: AdmissionQueue | None = None  # in memory, made with the cascade
    if redis is None:
        # A new epoch per process: a client's last_event_id from before a restart is
        # recognised as such (a gap), never mistaken for an id of the new stream.
        bus = InProcessEventBus(
            settings.server.event_history,
            settings.server.event_buffer,
            epoch=start_event_stream(database),
        )
        limiter = InProcessLimiter(settings.tiers)
    else:  # imported here: a single process never loads the fleet's backends
        from sincere.backends.redis.events import RedisEventBus
        from sincere.backends.redis.limits import RedisLimiter
        from sincere.backends.redis.queue import RedisAdmissionQueues

        assert trips is not None
        prefix = settings.cluster.key_prefix
        shared_limits = RedisLimiter(redis, settings.tiers, prefix=prefix, trips=trips)
        limiter = shared_limits
        # A deployment's capacity is the fleet's: its queue on Redis (while Redis is
        # unreachable, each process queues for its share of the live processes').
        queues = RedisAdmissionQueues(
            redis,
            settings,
            prefix=prefix,
            queueing=lambda: flags.enabled(Flag.QUEUEING),
            live_processes=lambda: shared_limits.live_processes,
        )
        bus = RedisEventBus(
            redis,
            history=settings.server.event_history,
            buffer=settings.server.event_buffer,
            prefix=prefix,
            trips=trips,
        )
    try:
        cascade = build_cascade(
            settings,
            env,
            provider_kinds=provider_kinds,
            breakers=breakers,
            redis=redis,
            trips=trips,
            flags=flags.enabled,
            queues=queues,
        )
    except BaseException:
        database.engine.dispose()
        raise
    history = SqlServiceHistory(database)
    # Queued, then written on a worker thread: a transition never waits on the store.
    history_writer = HistoryWriter(history)
    cascade.registry.on_transition(history_writer)
    contexts = ContextFactory(bus, settings.defaults.timeout_s)
    metrics = Metrics(cascade.breakers, cascade.queues)
    recorder = MetricsRecorder(metrics)
    cascade.observe_probes(recorder)  # a probe's cost is counted like any attempt's
    keys = SqlKeyStore(database)
    escalations = SqlEscalationStore(database)
    relay = Relay(escalations, settings.escalation, os.environ if env is None else env)
    # Every attempt, recorded off the request path in batches (the data agent's source).
    t = settings.telemetry
    telemetry_store = SqlTelemetryStore(database)
    telemetry = TelemetryWriter(
        telemetry_store,
        RecentWindow(t.recent_window_s),
        flush_s=t.flush_s,
        retention_s=t.retention_days * 86_400,
        enabled=lambda: t.enabled,
    )
    escalation = Escalation(
        settings,
        escalations,
        enabled=escalation_enabled or (lambda: flags.enabled(Flag.ESCALATION)),
        wake=relay.wake,
    )
    # A deployment back to ready (its breaker closed, here) resolves its incidents.
    cascade.registry.on_transition(escalation.on_transition)
    return Runtime(
        settings=settings,
        database=database,
        bus=bus,
        keys=keys,
        history=history,
        history_writer=history_writer,
        limiter=limiter,
        cascade=cascade,
        contexts=contexts,
        pipeline=ChatPipeline(
            cascade, limiter, contexts, [recorder, escalation, telemetry, *observers]
        ),
        auth=Authenticator(keys),
        metrics=metrics,
        escalations=escalations,
        escalation=escalation,
        telemetry=telemetry,
        data=DataAgent(telemetry_store, telemetry.window, settings.usage),
        relay=relay,
        flags=flags,
        redis=redis,
        trips=trips,
    )


def _password(url: str | None) -> str | None:
    return urlsplit(url).password if url else None


def open_key_store(settings: Settings) -> KeyStore:
    """The key store alone, for commands that manage keys without running the gateway."""
    return SqlKeyStore(open_database(settings.database_url()))


def open_escalation_store(settings: Settings) -> EscalationStore:
    """Incidents, tickets and deliveries alone, for the operator's commands."""
    return SqlEscalationStore(open_database(settings.database_url()))


def open_flag_store(settings: Settings) -> FlagStore:
    """The flag store alone, for commands that read and set flags without running the
    gateway (nothing to refresh: each command reads the store)."""
    return SqlFlagStore(open_database(settings.database_url()))


def open_data_agent(settings: Settings) -> DataAgent:
    """The data agent alone, for ``sincere usage``: the store is its only source (the CLI
    serves no traffic, so it has no recent window of its own). A store that cannot be
    reached now is still handed over: the agent's own question then fails as it would in
    the server (``DataUnavailable``, saying why), rather than here with a driver's error."""
    url = settings.database_url()
    try:
        database = open_database(url)
    except (OperationalError, InterfaceError):
        database = Database(create_store_engine(url), url)
    return DataAgent(SqlTelemetryStore(database), None, settings.usage)
