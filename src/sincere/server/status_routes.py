"""The status page's routes: /status (JSON for API clients, HTML for browsers), Atlassian
Statuspage's public API v2 under /api/v2 and the Atom feed of incidents.

The public page (HTML, /api/v2, the feed: no key) is computed at most once per
``[status] cache_ttl_s`` for every reader (``status_cache``, single flight), and says how
old it is: its ``generated_at`` / ``updated_at`` is when it was computed, and
``Cache-Control: max-age`` what is left of its time. /status's JSON is read per request
(with an admin key it says more).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, Response

from sincere.identity import KeyRole
from sincere.runtime import Runtime
from sincere.server import status_incidents, status_page, status_view, status_watch
from sincere.server.http_errors import bearer_key, request_id
from sincere.server.ops_routes import gateway, watch
from sincere.server.status_body import status_body
from sincere.server.status_cache import Fresh, SharedValue
from sincere.server.status_counts import DayCounts, final_after_s
from sincere.server.status_view import PublicPage
from sincere.server.status_watch import StatusWatch

router = APIRouter(tags=["status page"])
_PROBLEM: dict[str, Any] = {"application/problem+json": {}}


class AtomXML(Response):
    media_type = "application/atom+xml"


@router.get(
    "/status",
    response_model=dict[str, Any],
    responses={
        200: {"content": {"text/html": {}}},
        401: {"description": "An unknown or revoked API key was sent", "content": _PROBLEM},
        503: {"description": "The recorded history is unavailable", "content": _PROBLEM},
    },
)
async def status(
    request: Request,
    gw: Runtime = Depends(gateway),  # noqa: B008
    seen: StatusWatch = Depends(watch),  # noqa: B008
) -> Response | dict[str, Any]:
    """The status page: each component's state now, since when, and its recorded transitions.

    JSON unless the client prefers HTML (a browser): then the page, with 90 daily uptime bars
    per component and the incidents, needing no key and no JavaScript (computed once per
    ``[status] cache_ttl_s`` for every reader). Public: states and times. With an admin key,
    the JSON has the reasons and messages too: they may quote a provider's words, which are
    for operators.
    """
    if _prefers_html(request.headers.get("accept", "")):
        fresh = await _public_page(request, gw)
        view = fresh.value
        url = str(request.base_url)
        markup = status_page.html(
            url,
            view.body["status"],
            view.components,
            status_incidents.linked(view.incidents, url),
            view.now,
        )
        return HTMLResponse(markup, headers=_cached(fresh))
    return await status_body(gw, seen, await _is_admin(request, gw))


async def _public_page(request: Request, gw: Runtime) -> Fresh[PublicPage]:
    """The public view (no key is read), computed at most once per ``[status]
    cache_ttl_s`` however many readers ask at once."""
    seen = status_watch.of(request.app)

    async def compute() -> PublicPage:
        now = time.time()
        body = await status_body(gw, seen, detailed=False, now=now)
        return await status_view.compute(gw, seen, _day_counts(request.app, gw), body, now)

    return await _page_cache(request.app, gw).get(compute)


def _day_counts(app: Starlette, gw: Runtime) -> DayCounts:
    days: DayCounts | None = getattr(app.state, "status_day_counts", None)
    if days is None:
        days = DayCounts(gw.telemetry.store, final_after_s(gw.settings))
        app.state.status_day_counts = days
    return days


def _page_cache(app: Starlette, gw: Runtime) -> SharedValue[PublicPage]:
    cache: SharedValue[PublicPage] | None = getattr(app.state, "status_page_cache", None)
    if cache is None:
        cache = app.state.status_page_cache = SharedValue(gw.settings.status.cache_ttl_s)
    return cache


def _cached(fresh: Fresh[Any]) -> dict[str, str]:
    """Caches may keep the page for what is left of its time here, no longer."""
    return {"Cache-Control": f"public, max-age={fresh.max_age}"}


def _json(fresh: Fresh[Any], body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=_cached(fresh))


@router.get("/api/v2/status.json", tags=["status page"], response_model=dict[str, Any])
async def statuspage_status(request: Request, gw: Runtime = Depends(gateway)) -> Response:  # noqa: B008
    """Statuspage's public ``status.json``: the page and its overall indicator."""
    fresh = await _public_page(request, gw)
    view = fresh.value
    return _json(
        fresh,
        {
            "page": status_page.page(str(request.base_url), view.now),
            "status": status_page.status(view.body["status"]),
        },
    )


@router.get("/api/v2/components.json", tags=["status page"], response_model=dict[str, Any])
async def statuspage_components(request: Request, gw: Runtime = Depends(gateway)) -> Response:  # noqa: B008
    """Statuspage's public ``components.json``: every deployment, the store and Redis."""
    fresh = await _public_page(request, gw)
    view = fresh.value
    return _json(
        fresh,
        {
            "page": status_page.page(str(request.base_url), view.now),
            "components": [status_page.component_json(c, view.now) for c in view.components],
        },
    )


@router.get("/api/v2/incidents.json", tags=["status page"], response_model=dict[str, Any])
async def statuspage_incidents(request: Request, gw: Runtime = Depends(gateway)) -> Response:  # noqa: B008
    """Statuspage's public ``incidents.json``: the outages recorded in the service history
    and the escalation store's incidents, newest first (see ``status_incidents``)."""
    fresh = await _public_page(request, gw)
    view, url = fresh.value, str(request.base_url)
    return _json(
        fresh,
        {
            "page": status_page.page(url, view.now),
            "incidents": status_incidents.linked(view.incidents, url),
        },
    )


@router.get(
    "/api/v2/incidents/unresolved.json", tags=["status page"], response_model=dict[str, Any]
)
async def statuspage_unresolved(request: Request, gw: Runtime = Depends(gateway)) -> Response:  # noqa: B008
    """Statuspage's public ``incidents/unresolved.json``."""
    fresh = await _public_page(request, gw)
    view, url = fresh.value, str(request.base_url)
    unresolved = status_incidents.unresolved(view.incidents)
    return _json(
        fresh,
        {
            "page": status_page.page(url, view.now),
            "incidents": status_incidents.linked(unresolved, url),
        },
    )


@router.get("/api/v2/summary.json", tags=["status page"], response_model=dict[str, Any])
async def statuspage_summary(request: Request, gw: Runtime = Depends(gateway)) -> Response:  # noqa: B008
    """Statuspage's public ``summary.json``: page, status, components, unresolved incidents."""
    fresh = await _public_page(request, gw)
    view, url = fresh.value, str(request.base_url)
    unresolved = status_incidents.unresolved(view.incidents)
    return _json(
        fresh,
        {
            "page": status_page.page(url, view.now),
            "status": status_page.status(view.body["status"]),
            "components": [status_page.component_json(c, view.now) for c in view.components],
            "incidents": status_incidents.linked(unresolved, url),
            "scheduled_maintenances": [],
        },
    )


@router.get("/status/feed.atom", tags=["status page"], response_class=AtomXML)
@router.get("/history.atom", tags=["status page"], response_class=AtomXML)
async def status_feed(request: Request, gw: Runtime = Depends(gateway)) -> Response:  # noqa: B008
    """An Atom feed of the incidents, newest first (``/history.atom`` as on Statuspage)."""
    fresh = await _public_page(request, gw)
    view, url = fresh.value, str(request.base_url)
    feed = status_page.atom(url, status_incidents.linked(view.incidents, url), view.now)
    return AtomXML(feed, headers=_cached(fresh))


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


async def _is_admin(request: Request, gw: Runtime) -> bool:
    """Whether the caller sent an admin key; no key is the public view, a bad one a 401."""
    key = bearer_key(request.headers)
    if key is None:
        return False
    record = await gw.auth.key(key, request_id(request))
    return record.role is KeyRole.ADMIN
