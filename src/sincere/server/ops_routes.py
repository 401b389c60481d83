"""Operator routes: /health, /livez, /readyz and /metrics (the status page's are in
status_routes).

Every value they show is read at request time from the process: breaker states and their
schedules, a measured store round trip and, in a fleet, a measured Redis PING. Nothing is
estimated, and no deployment's URL or key (nor the Redis password) is ever part of an answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from sincere import __version__
from sincere.identity import KeyRecord
from sincere.llm.breaker import BreakerState
from sincere.ports import Breakers, BreakerView
from sincere.redact import redact
from sincere.runtime import Runtime
from sincere.server import status_watch
from sincere.server.http_errors import bearer_key, request_id
from sincere.server.probes import Probe, probe_store
from sincere.server.status_body import breaker_since, probe_shared
from sincere.server.status_watch import StatusWatch

router = APIRouter(tags=["operations"])

_HEALTH = {BreakerState.CLOSED: "pass", BreakerState.HALF_OPEN: "warn", BreakerState.OPEN: "fail"}

_HEALTH_JSON = "application/health+json"
_PROBLEM: dict[str, Any] = {"application/problem+json": {}}
_UNHEALTHY: dict[int | str, dict[str, Any]] = {
    503: {"description": "The process cannot serve (status fail)", "content": {_HEALTH_JSON: {}}}
}


class HealthJSON(JSONResponse):
    media_type = _HEALTH_JSON


class PrometheusText(Response):
    media_type = CONTENT_TYPE_LATEST


async def gateway(request: Request) -> Runtime:
    """The process's runtime (async: FastAPI runs a plain function on a thread)."""
    rt: Runtime = request.app.state.runtime
    return rt


async def watch(request: Request) -> StatusWatch:
    """The process's status watch (it records the store's and Redis's transitions)."""
    return status_watch.of(request.app)


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
    store = await probe_store(gw)
    reasons = [] if store.ok else [f"store: {store.output}"]
    if not _can_serve(gw.cascade.breakers):
        reasons.append("no deployment's circuit is closed")
    if reasons:
        return HealthJSON({"status": "fail", "output": "; ".join(reasons)}, 503)
    return HealthJSON({"status": "pass"})


@router.get("/health", response_class=HealthJSON, responses=_UNHEALTHY)
async def health(
    gw: Runtime = Depends(gateway),  # noqa: B008
    seen: StatusWatch = Depends(watch),  # noqa: B008
) -> Response:
    """Health per draft-inadarei-api-health-check: one check per circuit, one for the store
    and, in a fleet, one for Redis (down: warn, since requests are still served)."""
    breakers = gw.cascade.breakers
    store, redis = await probe_shared(gw, seen)
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


def _can_serve(breakers: Breakers) -> bool:
    """Some circuit lets a user's request in now: a closed one (probes are not requests)."""
    return any(breakers.view(n).state is BreakerState.CLOSED for n in breakers.names())


def _circuit_check(breaker: BreakerView, started_at: float) -> dict[str, Any]:
    """A breaker as a health check; ``time`` is when it entered its present state."""
    state = breaker.state
    last = breaker.transitions[-1] if breaker.transitions else None
    check: dict[str, Any] = {
        "componentType": "llm-deployment",
        "status": _HEALTH[state],
        "observedValue": str(state),
        "time": _iso(breaker_since(breaker) or started_at),
    }
    if last is not None and state is not BreakerState.CLOSED:
        output = redact(last.reason)
        if state is BreakerState.HALF_OPEN:
            output += "; a probe is testing it now"
        elif (wait := breaker.seconds_until_probe()) is not None:
            output += f"; next probe in {wait:.1f} s"
        check["output"] = output
    return check


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


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
