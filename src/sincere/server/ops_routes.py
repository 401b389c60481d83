"""Operator routes: /health, /livez, /readyz, /status and /metrics.

Every value they show is read at request time from the process: breaker states and their
schedules, each deployment's last observed health, transitions recorded in the store, a
measured store round trip. Nothing is estimated, and no deployment's URL or key is ever
part of an answer.
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
from sqlalchemy import text
from starlette.responses import JSONResponse, Response

from sincere import __version__
from sincere.errors import DataUnavailable
from sincere.health import ServiceRecord
from sincere.identity import KeyRecord, KeyRole
from sincere.llm.breaker import BreakerState
from sincere.ports import Breakers, BreakerView, RecordedTransition
from sincere.redact import redact
from sincere.runtime import Runtime
from sincere.server.http_errors import bearer_key, request_id

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


@dataclass(frozen=True, slots=True)
class StoreProbe:
    ok: bool
    at: float
    ms: float | None = None  # the measured round trip, only when it answered
    output: str | None = None


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
    store = await _probe_store(gw)
    reasons = [] if store.ok else [f"store: {store.output}"]
    if not _can_serve(gw.cascade.breakers):
        reasons.append("no deployment's circuit is closed")
    if reasons:
        return HealthJSON({"status": "fail", "output": "; ".join(reasons)}, 503)
    return HealthJSON({"status": "pass"})


@router.get("/health", response_class=HealthJSON, responses=_UNHEALTHY)
async def health(gw: Runtime = Depends(gateway)) -> Response:  # noqa: B008
    """Health per draft-inadarei-api-health-check: one check per circuit, one for the store."""
    breakers = gw.cascade.breakers
    store = await _probe_store(gw)
    checks: dict[str, list[dict[str, Any]]] = {
        f"{name}:circuit": [_circuit_check(breakers.view(name), gw.started_at)]
        for name in breakers.names()
    }
    checks["store:responseTime"] = [_store_check(store)]
    if not store.ok or not _can_serve(breakers):
        overall = "fail"
    elif any(breakers.view(n).state is not BreakerState.CLOSED for n in breakers.names()):
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
    responses={
        401: {"description": "An unknown or revoked API key was sent", "content": _PROBLEM},
        503: {"description": "The recorded history is unavailable", "content": _PROBLEM},
    },
)
async def status(request: Request, gw: Runtime = Depends(gateway)) -> dict[str, Any]:  # noqa: B008
    """The status page: each deployment's state now, since when, and its recorded transitions.

    Public: states and times. With an admin key, the reasons and messages too: they may
    quote a provider's words, which are for operators.
    """
    detailed = await _is_admin(request, gw)
    breakers = gw.cascade.breakers
    history = await _recorded_history(gw, list(breakers.names()))
    registry = gw.cascade.registry
    services = [
        _service(
            name, breakers.view(name), registry.record(name), history[name], gw.started_at, detailed
        )
        for name in breakers.names()
    ]
    return {
        "status": _indicator([s["state"] for s in services]),
        "generated_at": _iso(time.time()),
        "services": services,
    }


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


async def _probe_store(gw: Runtime) -> StoreProbe:
    """Time a ``SELECT 1`` off the event loop, bounded by the connect timeout."""
    limit = gw.settings.defaults.connect_timeout_s
    at, started = time.time(), time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.to_thread(_select_one, gw), limit)
    except TimeoutError:
        return StoreProbe(False, at, output=f"no answer to SELECT 1 within {limit:g} s")
    except Exception as exc:  # any failure means the store cannot serve
        # The driver's message may name hosts or users: it goes to the log, not to the public.
        log.warning("store check failed", exc_info=True)
        return StoreProbe(False, at, output=f"SELECT 1 failed: {type(exc).__name__}")
    return StoreProbe(True, at, ms=round((time.perf_counter() - started) * 1000, 3))


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


def _store_check(store: StoreProbe) -> dict[str, Any]:
    check: dict[str, Any] = {
        "componentType": "datastore",
        "status": "pass" if store.ok else "fail",
        "time": _iso(store.at),
    }
    if store.ms is not None:
        check |= {"observedValue": store.ms, "observedUnit": "ms"}
    if store.output is not None:
        check["output"] = store.output
    return check


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


def _indicator(states: list[str]) -> str:
    """Statuspage's overall indicator from the component states."""
    outages = states.count("major_outage")
    if states and outages == len(states):
        return "critical"
    if outages:
        return "major"
    if "degraded_performance" in states:
        return "minor"
    return "none"


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
