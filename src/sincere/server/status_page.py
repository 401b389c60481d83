"""The public status page: HTML for browsers, Atlassian Statuspage's API v2 shapes for
aggregators and widgets, and an Atom feed of incidents.

Everything here is shaped from what status_body and status_view measured and read: the
components' states now (the /status body), their recorded transitions over 90 days clipped
to the time a gateway process observed, the requests recorded per day, and the incidents
(status_incidents). No value is made up: a day without a record is "no data", an uptime
without any covered time is null, a day whose requests are no longer kept has no count, and
a page without incidents lists none.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from sincere.availability import AttemptCounts
from sincere.ports import RecordedTransition
from sincere.server.status_watch import SERVICES
from sincere.uptime import DAY_S, Day, Interval, Uptime, daily, spans, windows, with_answers

__all__ = ["DAY_S", "Component", "Records"]

PAGE_NAME = "sincere"
ATOM_NS = "http://www.w3.org/2005/Atom"
_TEMPLATES = Path(__file__).parent / "web" / "templates"
_env = Environment(
    loader=FileSystemLoader(_TEMPLATES),
    autoescape=select_autoescape(["html", "xml"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def duration(seconds: float) -> str:
    """A recorded length of time in the largest unit that keeps it readable: 9 s, 14 min,
    5.2 h, 31.0 d."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


_env.filters["duration"] = duration
_WORDS = {
    "operational": "Operational",
    "degraded_performance": "Degraded performance",
    "partial_outage": "Partial outage",
    "major_outage": "Major outage",
    "under_maintenance": "Under maintenance",
}
_DESCRIPTION = {
    "none": "All Systems Operational",
    "minor": "Minor Service Outage",
    "major": "Partial System Outage",
    "critical": "Major System Outage",
}


@dataclass(frozen=True, slots=True)
class Component:
    """One component of the page: its state now and its recorded history."""

    id: str
    name: str
    kind: str
    state: str
    since: str | None  # ISO time it entered the state (None: not known)
    position: int
    description: str
    created_at: str
    transitions: tuple[dict[str, Any], ...]  # the last ones, newest first
    days: tuple[Day, ...]
    uptime: Mapping[str, Uptime]
    note: str | None = None  # what a measured state rests on (a partial outage's counts)

    @property
    def word(self) -> str:
        return _WORDS.get(self.state, self.state)


def stable_id(*parts: str) -> str:
    """An id derived from names, the same on every process and every restart."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Records:
    """What the page is computed from, besides the /status body: 90 days of it."""

    history: Mapping[str, Sequence[RecordedTransition]]  # by name in the history
    observed: Sequence[Interval]  # the stretches some gateway process observed
    counts: Mapping[str, Mapping[date, AttemptCounts]]  # per deployment and UTC day
    counted_since: date | None  # the first day whose requests are all retained (None: none)


def components(body: Mapping[str, Any], records: Records, now: float) -> list[Component]:
    """The deployments and the shared parts (the store, Redis), each with its state now and
    its recorded history clipped to the observed time; a deployment's days also count its
    requests, and its observed time with no recorded state on a day it answered requests
    counts as up (``uptime.with_answers``)."""
    result: list[Component] = []
    for service in body["services"]:
        name = service["name"]
        recorded = list(records.history.get(name, ()))
        # Only days whose rows are all kept are counted (an older day may be half pruned).
        since = records.counted_since
        mine = {d: c for d, c in records.counts.get(name, {}).items() if since and d >= since}
        state_spans = with_answers(
            spans(recorded, now, records.observed),
            records.observed,
            [day for day, c in mine.items() if c.answered > 0],
        )
        result.append(
            Component(
                id=stable_id(PAGE_NAME, "deployment", name),
                name=name,
                kind="llm-deployment",
                state=service["state"],
                since=service["since"],
                position=len(result) + 1,
                description=f"LLM deployment {name}",
                created_at=_created(recorded, records.observed, now),
                transitions=tuple(service["recent_transitions"]),
                days=tuple(
                    daily(
                        state_spans,
                        now,
                        observed=records.observed,
                        counts=_day_counts(mine, records.counted_since, now),
                    )
                ),
                uptime=windows(state_spans, now),
                note=service.get("partial_outage", {}).get("description"),
            )
        )
    for backend in body["backends"]:
        recorded = list(records.history.get(SERVICES[backend["name"]], ()))
        state_spans = spans(recorded, now, records.observed)
        result.append(
            Component(
                id=stable_id(PAGE_NAME, "backend", backend["name"]),
                name=backend["name"],
                kind=backend["kind"],
                state=backend["state"],
                since=backend["since"],
                position=len(result) + 1,
                description=f"{backend['name']} ({backend['kind']}), checked at "
                f"{backend['checked_at']}",
                created_at=_created(recorded, records.observed, now),
                transitions=tuple(backend["recent_transitions"]),
                days=tuple(daily(state_spans, now, observed=records.observed)),
                uptime=windows(state_spans, now),
            )
        )
    return result


def _created(
    recorded: Sequence[RecordedTransition], observed: Sequence[Interval], now: float
) -> str:
    """When the component was first on record: its first transition or observed time."""
    first = [t.at for t in recorded[:1]] + [lo for lo, _ in observed[:1]]
    return _iso(min(first, default=now))


def _day_counts(
    counts: Mapping[date, AttemptCounts], since: date | None, now: float
) -> dict[date, tuple[int, int]]:
    """(requests, failed) of each day from ``since`` to today: 0 where nothing was recorded;
    the days before ``since`` are left out (their rows are no longer kept)."""
    if since is None:
        return {}
    today = datetime.fromtimestamp(now, UTC).date()
    result: dict[date, tuple[int, int]] = {}
    day = since
    while day <= today:
        c = counts.get(day)
        result[day] = (c.attempts, c.failed) if c is not None else (0, 0)
        day += timedelta(days=1)
    return result


def page(url: str, now: float) -> dict[str, Any]:
    return {
        "id": stable_id(PAGE_NAME, "page"),
        "name": PAGE_NAME,
        "url": url,
        "updated_at": _iso(now),
    }


def status(indicator: str) -> dict[str, Any]:
    return {"indicator": indicator, "description": _DESCRIPTION[indicator]}


def component_json(c: Component, now: float, *, extended: bool = True) -> dict[str, Any]:
    """A component in Statuspage's shape; ``extended``: with sincere's own figures under
    ``sincere`` (uptime per window, requests per day; clients of Statuspage ignore it)."""
    shape = {
        "id": c.id,
        "name": c.name,
        "status": c.state,
        "created_at": c.created_at,
        "updated_at": c.since or _iso(now),
        "position": c.position,
        "description": c.description,
        "showcase": True,
        "start_date": None,
        "group_id": None,
        "page_id": stable_id(PAGE_NAME, "page"),
        "group": False,
        "only_show_if_degraded": False,
    }
    if extended:
        counted = [d for d in c.days if d.requests is not None]
        shape["sincere"] = {
            "kind": c.kind,
            "note": c.note,
            "uptime": {window: u.to_dict() for window, u in c.uptime.items()},
            "requests_counted_since": counted[0].day.isoformat() if counted else None,
            "requests_by_day": [
                {"date": d.day.isoformat(), "requests": d.requests, "failed": d.failed}
                for d in counted
                if d.requests
            ],
        }
    return shape


def atom(url: str, incidents: Sequence[dict[str, Any]], now: float) -> bytes:
    """An Atom feed (RFC 4287) with one entry per incident, newest first."""
    ET.register_namespace("", ATOM_NS)

    def el(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        child = ET.SubElement(parent, f"{{{ATOM_NS}}}{tag}", attrs)
        if text is not None:
            child.text = text
        return child

    feed = ET.Element(f"{{{ATOM_NS}}}feed")
    el(feed, "id", f"{url}status/feed.atom")
    el(feed, "title", f"{PAGE_NAME} status: incidents")
    updated = max((i["updated_at"] for i in incidents), default=_iso(now))
    el(feed, "updated", updated)
    el(feed, "link", href=f"{url}status/feed.atom", rel="self", type="application/atom+xml")
    el(feed, "link", href=f"{url}status", rel="alternate", type="text/html")
    author = el(feed, "author")
    el(author, "name", PAGE_NAME)
    for incident in incidents:
        entry = el(feed, "entry")
        el(entry, "id", f"urn:sincere:incident:{incident['id']}")
        el(entry, "title", f"{incident['name']} ({incident['status']})")
        el(entry, "updated", incident["updated_at"])
        el(entry, "published", incident["created_at"])
        el(entry, "link", href=incident["shortlink"], rel="alternate", type="text/html")
        lines = [
            f"{u['display_at']} {u['status']}: {u['body']}" for u in incident["incident_updates"]
        ]
        el(entry, "content", "\n".join(lines), type="text")
    body: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return body


def html(
    url: str,
    indicator: str,
    comps: Sequence[Component],
    incidents: Sequence[dict[str, Any]],
    now: float,
) -> str:
    return _env.get_template("status.html").render(
        url=url,
        status=status(indicator),
        indicator=indicator,
        components=comps,
        incidents=incidents,
        generated_at=_iso(now),
        words=_WORDS,
    )


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
