"""The /status JSON: every component's state now, since when, and its recorded transitions.

Deployments: their breaker and their registry's last observation, and the partial-outage
rule on their recorded attempts (``sincere.availability``). The shared parts (the store,
Redis): a probe now, dated by the status watch. Each with its last recorded transitions.
Read at request time; the public page (``status_routes``) builds on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection

from sincere.availability import AttemptCounts, partial_outage
from sincere.config import StatusConfig
from sincere.errors import DataUnavailable
from sincere.health import ServiceRecord
from sincere.llm.breaker import BreakerState
from sincere.ports import BreakerView, RecordedTransition
from sincere.redact import REDACTED, redact
from sincere.runtime import Runtime
from sincere.server.probes import Probe, probe_redis, probe_store
from sincere.server.status_watch import REDIS, SERVICES, STORE, Observed, StatusWatch

log = logging.getLogger("sincere.server")

_COMPONENT = {
    BreakerState.CLOSED: "operational",
    BreakerState.HALF_OPEN: "degraded_performance",
    BreakerState.OPEN: "major_outage",
}
# The service registry records health states; /status speaks the Statuspage vocabulary.
_RECORDED = {
    "ready": "operational",
    "degraded": "degraded_performance",
    "unavailable": "major_outage",
}


async def status_body(
    gw: Runtime, seen: StatusWatch, detailed: bool, now: float | None = None
) -> dict[str, Any]:
    """The /status JSON: every component's state now and its last recorded transitions."""
    now = time.time() if now is None else now
    breakers = gw.cascade.breakers
    store, redis = await probe_shared(gw, seen)
    shared = [STORE] if redis is None else [STORE, REDIS]
    history = await _recorded_history(gw, [*breakers.names(), *shared])
    recent = await _recent_counts(gw, now)
    registry = gw.cascade.registry
    services = [
        _service(
            name,
            breakers.view(name),
            registry.record(name),
            history[name],
            recent,
            gw,
            now,
            detailed,
        )
        for name in breakers.names()
    ]
    backends = [_backend("store", _store_kind(gw), store, seen, history[STORE], detailed)]
    if redis is not None and gw.redis is not None:
        backends.append(_backend("redis", "redis", redis, seen, history[REDIS], detailed))
        if detailed:
            backends[-1]["url"] = _redis_url(gw.redis)
    return {
        "status": indicator([s["state"] for s in services], [b["state"] for b in backends]),
        "generated_at": _iso(now),
        "services": services,
        "backends": backends,
    }


async def probe_shared(gw: Runtime, seen: StatusWatch) -> tuple[Probe, Probe | None]:
    """The store's and Redis's probes, each also a measurement for the status watch."""
    store, redis = await asyncio.gather(probe_store(gw), probe_redis(gw))
    seen.observe(STORE, store)
    if redis is not None:
        seen.observe(REDIS, redis)
    return store, redis


def _backend(
    name: str,
    kind: str,
    probe: Probe,
    seen: StatusWatch,
    recent: list[RecordedTransition],
    detailed: bool,
) -> dict[str, Any]:
    """A shared part as a status page component: its state as measured now, since when this
    process has measured it so (the status watch), and its recorded transitions."""
    observed = seen.current(SERVICES[name])
    state = "operational" if probe.ok else "major_outage"
    backend: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "state": state,
        "checked_at": _iso(probe.at),
    }
    since, basis = _backend_since(observed, probe, seen)
    backend["since"] = _iso(since)
    backend["since_basis"] = basis
    if probe.ms is not None:
        backend["latency_ms"] = probe.ms
    if probe.output is not None:
        backend["error"] = probe.detail if detailed and probe.detail else probe.output
    backend["recent_transitions"] = _transitions(recent, detailed)
    return backend


def _backend_since(observed: Observed | None, probe: Probe, seen: StatusWatch) -> tuple[float, str]:
    """When this process first measured the part in its present state (``transition``), or
    its start when the first measurement of its lifetime found it so (``process_start``)."""
    if observed is None or observed.state != ("ready" if probe.ok else "unavailable"):
        return probe.at, "transition"  # a measurement newer than the watch's
    if observed.first:
        return seen.observing_since, "process_start"
    return observed.since, "transition"


async def _recorded_history(gw: Runtime, names: list[str]) -> dict[str, list[RecordedTransition]]:
    """The last ten recorded transitions of each service, or a 503 when the store is silent."""

    async def read() -> dict[str, list[RecordedTransition]]:
        await gw.history_writer.flush()  # transitions still queued are part of the history
        return {name: await gw.history.recent(name, 10) for name in names}

    try:
        return await asyncio.wait_for(read(), gw.settings.defaults.connect_timeout_s)
    except Exception as exc:  # a status page must not guess its history
        log.warning("reading the service history failed", exc_info=True)
        raise DataUnavailable(
            f"the recorded service history could not be read ({type(exc).__name__})"
        ) from exc


async def _recent_counts(gw: Runtime, now: float) -> dict[str, AttemptCounts]:
    """Each deployment's attempts over the last ``[status] partial_window_s``, recorded in
    the store (every process's), or a 503 when the store is silent."""
    if not gw.settings.telemetry.enabled:
        return {}  # nothing is recorded: the partial-outage rule has no samples
    start = now - gw.settings.status.partial_window_s
    try:
        counts = await asyncio.wait_for(
            gw.telemetry.store.attempt_counts(start, now, by_day=False),
            gw.settings.defaults.connect_timeout_s,
        )
    except Exception as exc:  # a state must not be guessed
        log.warning("reading the recent attempts failed", exc_info=True)
        raise DataUnavailable(
            f"the recorded attempts could not be read ({type(exc).__name__})"
        ) from exc
    return {c.deployment: c for c in counts}


def _service(
    name: str,
    breaker: BreakerView,
    record: ServiceRecord,
    recent: list[RecordedTransition],
    attempts: dict[str, AttemptCounts],
    gw: Runtime,
    now: float,
    detailed: bool,
) -> dict[str, Any]:
    state, since = _state_now(breaker, record)
    service: dict[str, Any] = {
        "name": name,
        "kind": "llm-deployment",
        "state": state,
        # When it entered this state, as this process saw it; a state that has held since
        # the process started (the store's history may end in another one) says so.
        "since": _iso(since or gw.started_at),
        "since_basis": "transition" if since is not None else "process_start",
    }
    if breaker.state is BreakerState.OPEN:
        service["next_probe_in_s"] = round(breaker.seconds_until_probe() or 0.0, 3)
    counts = attempts.get(name)
    if counts is not None:
        service["recent_attempts"] = {
            "window_s": gw.settings.status.partial_window_s,
            "attempts": counts.attempts,
            "failed": counts.failed,
        }
    # The rule judges a closed circuit only: an open or half-open one has said more.
    if breaker.state is BreakerState.CLOSED and state != "major_outage":
        _judge_partial(service, counts, gw.settings.status, now)
    service["recent_transitions"] = _transitions(recent, detailed)
    return service


def _judge_partial(
    service: dict[str, Any], counts: AttemptCounts | None, rule: StatusConfig, now: float
) -> None:
    """Make ``service`` a partial outage when its recent attempts meet the rule (the
    ``[status]`` settings; see ``sincere.availability.partial_outage``)."""
    partial = partial_outage(
        counts, rule.partial_window_s, rule.partial_failure_share, rule.partial_min_attempts
    )
    if partial is None:
        return
    service["state"] = "partial_outage"
    service["since"] = _iso(now - rule.partial_window_s)  # the start of what was measured
    service["since_basis"] = "failure_share"
    service["partial_outage"] = {
        "window_s": partial.window_s,
        "attempts": partial.attempts,
        "failed": partial.failed,
        "min_share": rule.partial_failure_share,
        "min_attempts": rule.partial_min_attempts,
        "description": partial.describe(),
    }


def _transitions(recent: list[RecordedTransition], detailed: bool) -> list[dict[str, Any]]:
    return [
        {"state": _RECORDED.get(t.state, t.state), "at": _iso(t.at)}
        | ({"message": redact(t.message)} if detailed else {})
        for t in recent
    ]


def _state_now(breaker: BreakerView, record: ServiceRecord) -> tuple[str, float | None]:
    """The deployment's component state now, and when it entered it (None: before this
    process started).

    A breaker that is not closed decides (open, or half-open while a probe tests it). A closed
    one leaves it to the registry's last observation, which also knows a failed health check
    (a model that did not load, say, before the breaker has seen enough failures to open).
    """
    observed = breaker.state
    if observed is not BreakerState.CLOSED:
        return _COMPONENT[observed], breaker_since(breaker)
    state = _RECORDED.get(str(record.state), "operational")
    since: float | None = None
    for transition in reversed(record.transitions):  # newest first
        if _RECORDED.get(str(transition.state), "operational") != state:
            break
        since = transition.at
    else:  # every transition of this process led into this state, or there was none
        if state == "operational":
            since = None  # operational (unknown counts so) from the start, as far as we know
    return state, since


def indicator(services: list[str], backends: list[str]) -> str:
    """Statuspage's overall indicator from the component states: critical when no
    deployment can serve; an outage of one component (a shared part's included: the
    requests go on) is major; a partial outage (some requests fail) or degraded
    performance is minor."""
    if services and services.count("major_outage") == len(services):
        return "critical"
    states = services + backends
    outages = states.count("major_outage")
    if outages:
        return "major"
    if "partial_outage" in states or "degraded_performance" in states:
        return "minor"
    return "none"


def _store_kind(gw: Runtime) -> str:
    """The store's engine (sqlite, postgresql): public, it names no host."""
    return str(gw.database.engine.dialect.name)


def _redis_url(redis: Redis) -> str:
    """Where the client connects, as a URL whose password is replaced (the user name stays:
    it says which account)."""
    kwargs = redis.connection_pool.connection_kwargs
    db = kwargs.get("db", 0)
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={db}"
    user = kwargs.get("username") or ""
    login = f"{user}:{REDACTED}@" if kwargs.get("password") else (f"{user}@" if user else "")
    tls = issubclass(redis.connection_pool.connection_class, SSLConnection)
    scheme = "rediss" if tls else "redis"
    return f"{scheme}://{login}{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


def breaker_since(breaker: BreakerView) -> float | None:
    """When the breaker's state began; None when closed since this process began."""
    return breaker.transitions[-1].at if breaker.transitions else None


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
