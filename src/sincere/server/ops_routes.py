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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.responses import JSONResponse, Response

from sincere import __version__
from sincere.errors import DataUnavailable
from sincere.health import HealthState
from sincere.llm.breaker import BreakerState, CircuitBreaker
from sincere.redact import redact
from sincere.server.gateway import Gateway, bearer_key
from sincere.server.http_errors import request_id
from sincere.server.openai_routes import gateway
from sincere.store import KeyRecord
from sincere.store.history import RecordedTransition

log = logging.getLogger("sincere.server")
router = APIRouter(tags=["operations"])

# When this process loaded its routes: the start of a breaker's state until its first transition.
_STARTED_AT = time.time()

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

_SEVERITY = ["operational", "degraded_performance", "major_outage"]

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


async def admin(request: Request, gw: Gateway = Depends(gateway)) -> KeyRecord:  # noqa: B008
    """The caller's key record, which must carry the admin role."""
    return await gw.authenticate(bearer_key(request.headers), request_id(request), admin=True)


@router.get("/livez", response_class=HealthJSON)
async def livez() -> Response:
    """Liveness: answering at all is the whole test, so a stuck provider never restarts us."""
    return HealthJSON({"status": "pass"})


@router.get("/readyz", response_class=HealthJSON, responses=_UNHEALTHY)
async def readyz(gw: Gateway = Depends(gateway)) -> Response:  # noqa: B008
    """Readiness: the store answers and at least one deployment's circuit lets requests in."""
    store = await _probe_store(gw)
    reasons = [] if store.ok else [f"store: {store.output}"]
    if not _can_serve(gw.cascade.breakers):
        reasons.append("every deployment's circuit is open")
    if reasons:
        return HealthJSON({"status": "fail", "output": "; ".join(reasons)}, 503)
    return HealthJSON({"status": "pass"})


@router.get("/health", response_class=HealthJSON, responses=_UNHEALTHY)
async def health(gw: Gateway = Depends(gateway)) -> Response:  # noqa: B008
    """Health per draft-inadarei-api-health-check: one check per circuit, one for the store."""
    breakers = gw.cascade.breakers
    store = await _probe_store(gw)
    checks: dict[str, list[dict[str, Any]]] = {
        f"{name}:circuit": [_circuit_check(breaker)] for name, breaker in breakers.items()
    }
    checks["store:responseTime"] = [_store_check(store)]
    if not store.ok or not _can_serve(breakers):
        overall = "fail"
    elif any(b.state is not BreakerState.CLOSED for b in breakers.values()):
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
    responses={503: {"description": "The recorded history is unavailable", "content": _PROBLEM}},
)
async def status(gw: Gateway = Depends(gateway)) -> dict[str, Any]:  # noqa: B008
    """The status page: each deployment's state now and its recorded transitions."""
    breakers = gw.cascade.breakers
    history = await _recorded_history(gw, list(breakers))
    registry = gw.cascade.registry
    services = [
        _service(name, b, registry.record(name).state, history[name])
        for name, b in breakers.items()
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
    gw: Gateway = Depends(gateway),  # noqa: B008
    _admin: KeyRecord = Depends(admin),  # noqa: B008
) -> Response:
    """Prometheus exposition of this process's registry; operators only."""
    return PrometheusText(generate_latest(gw.metrics.registry))


def _can_serve(breakers: Mapping[str, CircuitBreaker]) -> bool:
    return any(b.state is not BreakerState.OPEN for b in breakers.values())


async def _probe_store(gw: Gateway) -> StoreProbe:
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


def _select_one(gw: Gateway) -> None:
    with gw.database.engine.connect() as conn:
        conn.execute(text("SELECT 1")).scalar_one()


def _circuit_check(breaker: CircuitBreaker) -> dict[str, Any]:
    """A breaker as a health check; ``time`` is when it entered its present state."""
    last = breaker.transitions[-1] if breaker.transitions else None
    check: dict[str, Any] = {
        "componentType": "llm-deployment",
        "status": _HEALTH[breaker.state],
        "observedValue": str(breaker.state),
        "time": _iso(last.at if last else _STARTED_AT),
    }
    if last is not None and breaker.state is not BreakerState.CLOSED:
        output = redact(last.reason)
        if (wait := breaker.seconds_until_probe()) is not None:
            output += f"; next probe in {wait:.1f} s"
        check["output"] = output
    return check


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


async def _recorded_history(gw: Gateway, names: list[str]) -> dict[str, list[RecordedTransition]]:
    """The last ten recorded transitions of each service, or a 503 when the store is silent."""

    def read() -> dict[str, list[RecordedTransition]]:
        return {name: gw.history.recent(name, 10) for name in names}

    try:
        return await asyncio.wait_for(
            asyncio.to_thread(read), gw.settings.defaults.connect_timeout_s
        )
    except Exception as exc:  # a status page must not guess its history
        log.warning("reading the service history failed", exc_info=True)
        raise DataUnavailable(
            f"the recorded service history could not be read ({type(exc).__name__})"
        ) from exc


def _service(
    name: str, breaker: CircuitBreaker, observed: HealthState, recent: list[RecordedTransition]
) -> dict[str, Any]:
    # The breaker knows whether requests may go; the registry also knows the last check (a
    # model that failed to load, say, before the breaker has seen enough failures to open).
    state = max(
        _COMPONENT[breaker.state], _RECORDED.get(str(observed), "operational"), key=_SEVERITY.index
    )
    service: dict[str, Any] = {
        "name": name,
        "kind": "llm-deployment",
        "state": state,
        "since": _iso(recent[0].at) if recent else None,
    }
    if breaker.state is BreakerState.OPEN:
        service["next_probe_in_s"] = round(breaker.seconds_until_probe() or 0.0, 3)
    service["recent_transitions"] = [
        {"state": _RECORDED.get(t.state, t.state), "message": redact(t.message), "at": _iso(t.at)}
        for t in recent
    ]
    return service


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
