"""Operator routes: /health, /livez, /readyz, /status (HTML for browsers, the Statuspage
API v2 under /api/v2, an Atom feed of incidents) and /metrics.

Every value they show is read at request time from the process: breaker states and their
schedules, each deployment's last observed health, transitions recorded in the store, a
measured store round trip and, in a fleet, a measured Redis PING. Nothing is estimated, and
no deployment's URL or key (nor the Redis password) is ever part of an answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from redis.exceptions import RedisError
from sqlalchemy import text
from starlette.responses import HTMLResponse, JSONResponse, Response

from sincere import __version__
from sincere.errors import DataUnavailable
from sincere.health import ServiceRecord
from sincere.identity import KeyRecord, KeyRole
from sincere.llm.breaker import BreakerState
from sincere.ports import Breakers, BreakerView, RecordedTransition
from sincere.redact import REDACTED, redact
from sincere.runtime import Runtime
from sincere.server import status_page
from sincere.server.http_errors import bearer_key, request_id
from sincere.tiers.incidents import Incident

log = logging.getLogger("sincere.server")
router = APIRouter(tags=["operations"])

_HEALTH = {BreakerState.CLOSED: "pass", BreakerState.HALF_OPEN: "warn", BreakerState.OPEN: "fail"}
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

_HEALTH_JSON = "application/health+json"
_PROBLEM: dict[str, Any] = {"application/problem+json": {}}
_UNHEALTHY: dict[int | str, dict[str, Any]] = {
    503: {"description": "The process cannot serve (status fail)", "content": {_HEALTH_JSON: {}}}
}


class HealthJSON(JSONResponse):
    media_type = _HEALTH_JSON


class PrometheusText(Response):
    media_type = CONTENT_TYPE_LATEST


class AtomXML(Response):
    media_type = "application/atom+xml"


@dataclass(frozen=True, slots=True)
class Probe:
    """One timed round trip to a shared part (the store's SELECT 1, Redis's PING)."""

    ok: bool
    at: float
    ms: float | None = None  # the measured round trip, only when it answered
    output: str | None = None  # public: what failed, never a host, user or password
    detail: str | None = None  # for operators: the driver's message, secrets redacted


async def gateway(request: Request) -> Runtime:
    """The process's runtime (async: FastAPI runs a plain function on a thread)."""
    rt: Runtime = request.app.state.runtime
    return rt


async def admin(request: Request, gw: Runtime = Depends(gateway)) -> KeyRecord:  # noqa: B008
    """The caller's key record, which must carry the admin role."""
    return await gw.auth.key(bearer_key(request.headers), request_id(request), admin=True)


@router.get("/livez", response_class=HealthJSON)
async def livez() -> Response:
    """Liveness: answering at all is the whole test, so a stuck provider never restarts us."""
    return HealthJSON({"status": "pass"})


@router.get("/readyz", response_class=HealthJSON, responses=_UNHEALTHY)
async def readyz(gw: Runtime = Depends(gateway)) -> Response:  # noqa: B008
    """Readiness: the store answers and at least one deployment's circuit lets requests in."""
    # Redis is not asked: it is the same for every process, so a Redis outage would take
    # every process out of a load balancer at once, while each still serves (see README).
    store = await _probe_store(gw)
    reasons = [] if store.ok else [f"store: {store.output}"]
    if not _can_serve(gw.cascade.breakers):
        reasons.append("no deployment's circuit is closed")
    if reasons:
        return HealthJSON({"status": "fail", "output": "; ".join(reasons)}, 503)
    return HealthJSON({"status": "pass"})


@router.get("/health", response_class=HealthJSON, responses=_UNHEALTHY)
async def health(gw: Runtime = Depends(gateway)) -> Response:  # noqa: B008
    """Health per draft-inadarei-api-health-check: one check per circuit, one for the store
    and, in a fleet, one for Redis (down: warn, since requests are still served)."""
    breakers = gw.cascade.breakers
    store, redis = await asyncio.gather(_probe_store(gw), _probe_redis(gw))
    checks: dict[str, list[dict[str, Any]]] = {
        f"{name}:circuit": [_circuit_check(breakers.view(name), gw.started_at)]
        for name in breakers.names()
    }
    checks["store:responseTime"] = [_probe_check(store)]
    if redis is not None:
        checks["redis:responseTime"] = [_probe_check(redis)]
    if not store.ok or not _can_serve(breakers):
        overall = "fail"
    elif (redis is not None and not redis.ok) or any(
        breakers.view(n).state is not BreakerState.CLOSED for n in breakers.names()
    ):
        overall = "warn"
    else:
        overall = "pass"
    body = {
        "status": overall,
        "version": __version__,
        "serviceId": "sincere",
        "description": "sincere LLM gateway",
        "checks": checks,
    }
    return HealthJSON(body, 503 if overall == "fail" else 200)


@router.get(
    "/status",
    response_model=dict[str, Any],
    responses={
        200: {"content": {"text/html": {}}},
        401: {"description": "An unknown or revoked API key was sent", "content": _PROBLEM},
        503: {"description": "The recorded history is unavailable", "content": _PROBLEM},
    },
)
async def status(request: Request, gw: Runtime = Depends(gateway)) -> Response | dict[str, Any]:  # noqa: B008
    """The status page: each deployment's state now, since when, and its recorded transitions.

    JSON unless the client prefers HTML (a browser): then the page, with 90 daily uptime bars
    per component and the incidents, needing no key and no JavaScript. Public: states and
    times. With an admin key, the JSON has the reasons and messages too: they may quote a
    provider's words, which are for operators.
    """
    if _prefers_html(request.headers.get("accept", "")):
        view = await _public_page(request, gw)
        markup = status_page.html(
            view.url, view.body["status"], view.components, view.incidents, view.now
        )
        return HTMLResponse(markup, headers={"Cache-Control": "no-cache"})
    return await _status_body(gw, await _is_admin(request, gw))


async def _status_body(gw: Runtime, detailed: bool) -> dict[str, Any]:
    """The /status JSON: every component's state now and its last recorded transitions."""
    breakers = gw.cascade.breakers
    history = await _recorded_history(gw, list(breakers.names()))
    registry = gw.cascade.registry
    services = [
        _service(
            name, breakers.view(name), registry.record(name), history[name], gw.started_at, detailed
        )
        for name in breakers.names()
    ]
    store, redis = await asyncio.gather(_probe_store(gw), _probe_redis(gw))
    backends = [_backend("store", _store_kind(gw), store, detailed)]
    if redis is not None and gw.redis is not None:
        backends.append(_backend("redis", "redis", redis, detailed))
        if detailed:
            backends[-1]["url"] = _redis_url(gw.redis)
    return {
        "status": _indicator([s["state"] for s in services], [b["state"] for b in backends]),
        "generated_at": _iso(time.time()),
        "services": services,
        "backends": backends,
    }


@dataclass(frozen=True, slots=True)
class PublicPage:
    """What the public status page shows, read once per request."""

    url: str  # the page's base URL, ending in /
    now: float
    body: dict[str, Any]  # the public /status JSON
    components: list[status_page.Component]
    incidents: list[dict[str, Any]]  # Statuspage-shaped, newest first


async def _public_page(request: Request, gw: Runtime) -> PublicPage:
    """The public view (no key is read): states now, 90 days of recorded transitions, and
    the escalation store's incidents."""
    body = await _status_body(gw, detailed=False)
    now = time.time()
    names = [s["name"] for s in body["services"]]
    history = await _history_between(gw, names, now - 90 * status_page.DAY_S, now)
    comps = status_page.components(body, history, now, gw.started_at)
    url = str(request.base_url)
    by_name = {c.name: c for c in comps}
    incidents = [
        status_page.incident_json(i, url + "status", by_name, now)
        for i in await _escalated_incidents(gw)
    ]
    return PublicPage(url, now, body, comps, incidents)


@router.get("/api/v2/status.json", tags=["status page"])
async def statuspage_status(request: Request, gw: Runtime = Depends(gateway)) -> dict[str, Any]:  # noqa: B008
    """Statuspage's public ``status.json``: the page and its overall indicator."""
    view = await _public_page(request, gw)
    return {
        "page": status_page.page(view.url, view.now),
        "status": status_page.status(view.body["status"]),
    }


@router.get("/api/v2/components.json", tags=["status page"])
async def statuspage_components(request: Request, gw: Runtime = Depends(gateway)) -> dict[str, Any]:  # noqa: B008
    """Statuspage's public ``components.json``: every deployment, the store and Redis."""
    view = await _public_page(request, gw)
    return {
        "page": status_page.page(view.url, view.now),
        "components": [status_page.component_json(c, view.now) for c in view.components],
    }


@router.get("/api/v2/incidents.json", tags=["status page"])
async def statuspage_incidents(request: Request, gw: Runtime = Depends(gateway)) -> dict[str, Any]:  # noqa: B008
    """Statuspage's public ``incidents.json``: the escalation store's incidents, newest first."""
    view = await _public_page(request, gw)
    return {"page": status_page.page(view.url, view.now), "incidents": view.incidents}


@router.get("/api/v2/incidents/unresolved.json", tags=["status page"])
async def statuspage_unresolved(request: Request, gw: Runtime = Depends(gateway)) -> dict[str, Any]:  # noqa: B008
    """Statuspage's public ``incidents/unresolved.json``."""
    view = await _public_page(request, gw)
    unresolved = [i for i in view.incidents if i["status"] != "resolved"]
    return {"page": status_page.page(view.url, view.now), "incidents": unresolved}


@router.get("/api/v2/summary.json", tags=["status page"])
async def statuspage_summary(request: Request, gw: Runtime = Depends(gateway)) -> dict[str, Any]:  # noqa: B008
    """Statuspage's public ``summary.json``: page, status, components, unresolved incidents."""
    view = await _public_page(request, gw)
    return {
        "page": status_page.page(view.url, view.now),
        "status": status_page.status(view.body["status"]),
        "components": [status_page.component_json(c, view.now) for c in view.components],
        "incidents": [i for i in view.incidents if i["status"] != "resolved"],
        "scheduled_maintenances": [],
    }


@router.get("/status/feed.atom", tags=["status page"], response_class=AtomXML)
@router.get("/history.atom", tags=["status page"], response_class=AtomXML)
async def status_feed(request: Request, gw: Runtime = Depends(gateway)) -> Response:  # noqa: B008
    """An Atom feed of the incidents, newest first (``/history.atom`` as on Statuspage)."""
    view = await _public_page(request, gw)
    return AtomXML(status_page.atom(view.url, view.incidents, view.now))


def _prefers_html(accept: str) -> bool:
    """Whether the client prefers ``text/html`` (a browser) to JSON: only an explicit
    ``text/html`` counts, so an API client sending nothing or ``*/*`` keeps the JSON."""
    html_q = json_q = 0.0
    for item in accept.split(","):
        kind, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        kind = kind.lower()
        if kind == "text/html":
            html_q = max(html_q, q)
        elif kind in ("application/json", "application/*", "*/*"):
            json_q = max(json_q, q)
    return html_q > 0 and html_q >= json_q


@router.get(
    "/metrics",
    response_class=PrometheusText,
    responses={
        401: {"description": "Missing, unknown or revoked API key", "content": _PROBLEM},
        403: {"description": "The key does not have the admin role", "content": _PROBLEM},
    },
)
async def metrics(
    gw: Runtime = Depends(gateway),  # noqa: B008
    _admin: KeyRecord = Depends(admin),  # noqa: B008
) -> Response:
    """Prometheus exposition of this process's registry; operators only."""
    return PrometheusText(generate_latest(gw.metrics.registry))


async def _is_admin(request: Request, gw: Runtime) -> bool:
    """Whether the caller sent an admin key; no key is the public view, a bad one a 401."""
    key = bearer_key(request.headers)
    if key is None:
        return False
    record = await gw.auth.key(key, request_id(request))
    return record.role is KeyRole.ADMIN


def _can_serve(breakers: Breakers) -> bool:
    """Some circuit lets a user's request in now: a closed one (probes are not requests)."""
    return any(breakers.view(n).state is BreakerState.CLOSED for n in breakers.names())


async def _probe_store(gw: Runtime) -> Probe:
    """Time a ``SELECT 1`` off the event loop, bounded by the connect timeout."""
    limit = gw.settings.defaults.connect_timeout_s
    at, started = time.time(), time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.to_thread(_select_one, gw), limit)
    except TimeoutError:
        return Probe(False, at, output=f"no answer to SELECT 1 within {limit:g} s")
    except Exception as exc:  # any failure means the store cannot serve
        # The driver's message may name hosts or users: it goes to the log, not to the public.
        log.warning("store check failed", exc_info=True)
        return Probe(False, at, output=f"SELECT 1 failed: {type(exc).__name__}", detail=_said(exc))
    return Probe(True, at, ms=round((time.perf_counter() - started) * 1000, 3))


async def _probe_redis(gw: Runtime) -> Probe | None:
    """Time a ``PING`` to the fleet's Redis (None: there is none). The client's own socket
    timeouts bound it; the connect timeout is the backstop."""
    if gw.redis is None:
        return None
    limit = gw.settings.defaults.connect_timeout_s
    at, started = time.time(), time.perf_counter()
    try:
        await asyncio.wait_for(gw.redis.ping(), limit)
    except TimeoutError:
        return Probe(False, at, output=f"no answer to PING within {limit:g} s")
    except (RedisError, OSError) as exc:  # Redis cannot serve: it refused, closed, erred
        log.warning("redis check failed: %s", _said(exc))
        return Probe(False, at, output=f"PING failed: {type(exc).__name__}", detail=_said(exc))
    return Probe(True, at, ms=round((time.perf_counter() - started) * 1000, 3))


def _said(exc: BaseException) -> str:
    """An exception's type and message with every known secret and credential removed
    (the Redis password is one: the composition root remembers it)."""
    return redact(f"{type(exc).__name__}: {exc}")


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


def _store_kind(gw: Runtime) -> str:
    """The store's engine (sqlite, postgresql): public, it names no host."""
    return str(gw.database.engine.dialect.name)


def _select_one(gw: Runtime) -> None:
    with gw.database.engine.connect() as conn:
        conn.execute(text("SELECT 1")).scalar_one()


def _circuit_check(breaker: BreakerView, started_at: float) -> dict[str, Any]:
    """A breaker as a health check; ``time`` is when it entered its present state."""
    state = breaker.state
    last = breaker.transitions[-1] if breaker.transitions else None
    check: dict[str, Any] = {
        "componentType": "llm-deployment",
        "status": _HEALTH[state],
        "observedValue": str(state),
        "time": _iso(_breaker_since(breaker) or started_at),
    }
    if last is not None and state is not BreakerState.CLOSED:
        output = redact(last.reason)
        if state is BreakerState.HALF_OPEN:
            output += "; a probe is testing it now"
        elif (wait := breaker.seconds_until_probe()) is not None:
            output += f"; next probe in {wait:.1f} s"
        check["output"] = output
    return check


def _breaker_since(breaker: BreakerView) -> float | None:
    """When the breaker's state began; None when closed since this process began."""
    return breaker.transitions[-1].at if breaker.transitions else None


def _probe_check(probe: Probe) -> dict[str, Any]:
    check: dict[str, Any] = {
        "componentType": "datastore",
        "status": "pass" if probe.ok else "fail",
        "time": _iso(probe.at),
    }
    if probe.ms is not None:
        check |= {"observedValue": probe.ms, "observedUnit": "ms"}
    if probe.output is not None:
        check["output"] = probe.output
    return check


def _backend(name: str, kind: str, probe: Probe, detailed: bool) -> dict[str, Any]:
    """A shared part as a status page component: its state as measured now."""
    backend: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "state": "operational" if probe.ok else "major_outage",
        "checked_at": _iso(probe.at),
    }
    if probe.ms is not None:
        backend["latency_ms"] = probe.ms
    if probe.output is not None:
        backend["error"] = probe.detail if detailed and probe.detail else probe.output
    return backend


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


async def _history_between(
    gw: Runtime, names: list[str], start: float, end: float
) -> dict[str, list[RecordedTransition]]:
    """Each service's transitions in ``[start, end)`` (led by the one before), or a 503."""

    async def read() -> dict[str, list[RecordedTransition]]:
        await gw.history_writer.flush()
        return {name: await gw.history.between(name, start, end) for name in names}

    try:
        return await asyncio.wait_for(read(), gw.settings.defaults.connect_timeout_s)
    except Exception as exc:  # uptime must not be guessed
        log.warning("reading the service history failed", exc_info=True)
        raise DataUnavailable(
            f"the recorded service history could not be read ({type(exc).__name__})"
        ) from exc


async def _escalated_incidents(gw: Runtime) -> list[Incident]:
    """The escalation store's incidents, newest first, or a 503 when it cannot be read."""
    try:
        return await asyncio.wait_for(
            gw.escalations.incidents(50), gw.settings.defaults.connect_timeout_s
        )
    except Exception as exc:  # an empty list would claim there were none
        log.warning("reading the incidents failed", exc_info=True)
        raise DataUnavailable(
            f"the recorded incidents could not be read ({type(exc).__name__})"
        ) from exc


def _service(
    name: str,
    breaker: BreakerView,
    record: ServiceRecord,
    recent: list[RecordedTransition],
    started_at: float,
    detailed: bool,
) -> dict[str, Any]:
    state, since = _state_now(breaker, record)
    service: dict[str, Any] = {
        "name": name,
        "kind": "llm-deployment",
        "state": state,
        # When it entered this state, as this process saw it; a state that has held since
        # the process started (the store's history may end in another one) says so.
        "since": _iso(since or started_at),
        "since_basis": "transition" if since is not None else "process_start",
    }
    if breaker.state is BreakerState.OPEN:
        service["next_probe_in_s"] = round(breaker.seconds_until_probe() or 0.0, 3)
    service["recent_transitions"] = [
        {"state": _RECORDED.get(t.state, t.state), "at": _iso(t.at)}
        | ({"message": redact(t.message)} if detailed else {})
        for t in recent
    ]
    return service


def _state_now(breaker: BreakerView, record: ServiceRecord) -> tuple[str, float | None]:
    """The deployment's component state now, and when it entered it (None: before this
    process started).

    A breaker that is not closed decides (open, or half-open while a probe tests it). A closed
    one leaves it to the registry's last observation, which also knows a failed health check
    (a model that did not load, say, before the breaker has seen enough failures to open).
    """
    observed = breaker.state
    if observed is not BreakerState.CLOSED:
        return _COMPONENT[observed], _breaker_since(breaker)
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


def _indicator(services: list[str], backends: list[str]) -> str:
    """Statuspage's overall indicator from the component states: critical when no
    deployment can serve; an outage of a shared part (the requests go on) is major."""
    if services and services.count("major_outage") == len(services):
        return "critical"
    states = services + backends
    outages = states.count("major_outage")
    if outages:
        return "major"
    if "degraded_performance" in states:
        return "minor"
    return "none"


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
