"""The public status page's view: what it shows, computed from the store's records.

One computation reads, each within the connect timeout (a silent store is a 503, never a
guess): 90 days of every component's transitions, the lifetimes of the gateway processes
that observed them, the attempts per deployment and UTC day, and the escalation incidents.
The routes cache the result for ``[status] cache_ttl_s`` (``status_cache``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from sincere.availability import AttemptCounts
from sincere.errors import DataUnavailable
from sincere.outages import outages
from sincere.ports import RecordedTransition
from sincere.runtime import Runtime
from sincere.server import status_incidents, status_page
from sincere.server.status_counts import DayCounts
from sincere.server.status_watch import SERVICES, StatusWatch
from sincere.uptime import DAY_S, stretches

log = logging.getLogger("sincere.server")
T = TypeVar("T")

HISTORY_DAYS = 90


@dataclass(frozen=True, slots=True)
class PublicPage:
    """What the public status page shows, computed once for many readers."""

    now: float  # when it was computed: its true age
    body: dict[str, Any]  # the public /status JSON
    components: list[status_page.Component]
    incidents: list[dict[str, Any]]  # Statuspage-shaped (without shortlink), newest first


async def compute(
    gw: Runtime, watch: StatusWatch, days: DayCounts, body: dict[str, Any], now: float
) -> PublicPage:
    """The page from ``body`` (the states now) and the records of the last 90 days (the
    attempts of days that can no longer change from ``days``, which keeps them)."""
    start = now - HISTORY_DAYS * DAY_S
    names = [s["name"] for s in body["services"]] + [SERVICES[b["name"]] for b in body["backends"]]
    history, lifetimes, counts, escalated = await asyncio.gather(
        _read(gw, "service history", _history(gw, names, start, now)),
        _read(gw, "service history", gw.history.observed(start, now)),
        _read(gw, "request counts", _counts(gw, days, start, now)),
        _read(gw, "incidents", gw.escalations.incidents(50)),
    )
    # This process observes now whatever the store has of it (its heartbeat may lag).
    observed = stretches([*lifetimes, (watch.observing_since, now)])
    records = status_page.Records(history, observed, counts, _counted_since(gw, now))
    comps = status_page.components(body, records, now)
    by_name = {c.name: c for c in comps}
    # (page name, history name) of every component: a deployment is named alike in both.
    named = [(s["name"], s["name"]) for s in body["services"]]
    named += [(b["name"], SERVICES[b["name"]]) for b in body["backends"]]
    found = [(name, o) for name, service in named for o in outages(history[service], observed, now)]

    def component(name: str) -> dict[str, Any] | None:
        c = by_name.get(name)
        return None if c is None else status_page.component_json(c, now, extended=False)

    page_id = status_page.stable_id(status_page.PAGE_NAME, "page")
    incidents = status_incidents.incidents(found, escalated, component, page_id, now)
    return PublicPage(now, body, comps, incidents)


async def _history(
    gw: Runtime, names: list[str], start: float, end: float
) -> dict[str, list[RecordedTransition]]:
    await gw.history_writer.flush()  # transitions still queued are part of the history
    return {name: await gw.history.between(name, start, end) for name in names}


async def _counts(
    gw: Runtime, days: DayCounts, start: float, end: float
) -> dict[str, dict[date, AttemptCounts]]:
    """The attempts per deployment and day (none when telemetry is off: nothing counted)."""
    if not gw.settings.telemetry.enabled:
        return {}
    return await days.read(start, end)


def _counted_since(gw: Runtime, now: float) -> date | None:
    """The first UTC day whose attempts are all still kept (older ones are pruned after
    ``[telemetry] retention_days``); None when telemetry is off."""
    t = gw.settings.telemetry
    if not t.enabled:
        return None
    horizon = datetime.fromtimestamp(now - t.retention_days * DAY_S, UTC)
    first = horizon.date()
    if horizon != datetime(first.year, first.month, first.day, tzinfo=UTC):
        first = date.fromordinal(first.toordinal() + 1)  # that day is partly pruned
    return first


async def _read(gw: Runtime, what: str, reading: Awaitable[T]) -> T:
    """One read within the connect timeout, or a 503 saying what could not be read."""
    try:
        return await asyncio.wait_for(reading, gw.settings.defaults.connect_timeout_s)
    except Exception as exc:  # the page must not guess what it could not read
        log.warning("reading the %s failed", what, exc_info=True)
        raise DataUnavailable(
            f"the recorded {what} could not be read ({type(exc).__name__})"
        ) from exc
