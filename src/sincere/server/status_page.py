"""The public status page: HTML for browsers, Atlassian Statuspage's API v2 shapes for
aggregators and widgets, and an Atom feed of incidents.

Everything here is shaped from what ops_routes measured and read: the components' states now
(the /status body), their recorded transitions over 90 days and the escalation store's
incidents. No value is made up: a day without a record is "no data", an uptime without any
covered time is null, and a page without incidents lists none.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from sincere.ports import RecordedTransition
from sincere.tiers.incidents import Incident, IncidentState
from sincere.uptime import DAY_S, Day, Uptime, daily, spans, windows

__all__ = ["DAY_S", "Component"]

PAGE_NAME = "sincere"
ATOM_NS = "http://www.w3.org/2005/Atom"
_TEMPLATES = Path(__file__).parent / "web" / "templates"
_env = Environment(
    loader=FileSystemLoader(_TEMPLATES),
    autoescape=select_autoescape(["html", "xml"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
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
    since: str | None  # ISO time it entered the state (None: measured now, no history)
    position: int
    description: str
    created_at: str
    transitions: tuple[dict[str, Any], ...]  # the last ones, newest first
    days: tuple[Day, ...]
    uptime: Mapping[str, Uptime]

    @property
    def word(self) -> str:
        return _WORDS.get(self.state, self.state)


def stable_id(*parts: str) -> str:
    """An id derived from names, the same on every process and every restart."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:12]


def components(
    body: Mapping[str, Any],
    history: Mapping[str, Sequence[RecordedTransition]],
    now: float,
    started_at: float,
) -> list[Component]:
    """The deployments (with their recorded history) and the shared parts (the store, Redis:
    measured now, with no recorded history, so all their days are "no data")."""
    result: list[Component] = []
    for service in body["services"]:
        recorded = list(history.get(service["name"], ()))
        state_spans = spans(recorded, now)
        first = recorded[0].at if recorded else started_at
        result.append(
            Component(
                id=stable_id(PAGE_NAME, "deployment", service["name"]),
                name=service["name"],
                kind="llm-deployment",
                state=service["state"],
                since=service["since"],
                position=len(result) + 1,
                description=f"LLM deployment {service['name']}",
                created_at=_iso(min(first, started_at)),
                transitions=tuple(service["recent_transitions"]),
                days=tuple(daily(state_spans, now)),
                uptime=windows(state_spans, now),
            )
        )
    for backend in body["backends"]:
        result.append(
            Component(
                id=stable_id(PAGE_NAME, "backend", backend["name"]),
                name=backend["name"],
                kind=backend["kind"],
                state=backend["state"],
                since=None,
                position=len(result) + 1,
                description=f"{backend['name']} ({backend['kind']}), checked at "
                f"{backend['checked_at']}",
                created_at=_iso(started_at),
                transitions=(),
                days=tuple(daily([], now)),
                uptime=windows([], now),
            )
        )
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


def component_json(c: Component, now: float) -> dict[str, Any]:
    return {
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


def incident_json(
    incident: Incident, url: str, by_name: Mapping[str, Component], now: float
) -> dict[str, Any]:
    """An escalation incident in Statuspage's shape; its updates are the recorded times:
    opened, the last new failure (when later than the opening) and resolved."""
    updates = [
        _update(
            incident,
            "opened",
            "investigating",
            f"Requests to {incident.deployment} are failing ({incident.failure_class}).",
            incident.opened_at,
        )
    ]
    last_failure = incident.updated_at
    if incident.resolved_at is not None and last_failure >= incident.resolved_at:
        last_failure = incident.opened_at  # the resolve itself moved updated_at
    if last_failure > incident.opened_at:
        updates.append(
            _update(
                incident,
                "updated",
                "investigating",
                f"{incident.ticket_count} failed requests recorded so far.",
                last_failure,
            )
        )
    if incident.state is IncidentState.RESOLVED and incident.resolved_at is not None:
        updates.append(
            _update(
                incident,
                "resolved",
                "resolved",
                f"{incident.deployment} answers again; {incident.ticket_count} failed "
                "requests in all.",
                incident.resolved_at,
            )
        )
    resolved = incident.state is IncidentState.RESOLVED
    component = by_name.get(incident.deployment)
    return {
        "id": incident.id,
        "name": f"{incident.deployment}: {incident.failure_class}",
        "status": "resolved" if resolved else "investigating",
        "created_at": _iso(incident.opened_at),
        "updated_at": _iso(incident.updated_at),
        "monitoring_at": None,
        "resolved_at": _iso(incident.resolved_at) if incident.resolved_at is not None else None,
        # Escalated incidents are requests that failed: a major impact on that deployment.
        "impact": "major",
        "shortlink": f"{url}#{incident.id}",
        "started_at": _iso(incident.opened_at),
        "page_id": stable_id(PAGE_NAME, "page"),
        "incident_updates": list(reversed(updates)),  # newest first, as Statuspage lists them
        "components": [component_json(component, now)] if component is not None else [],
    }


def _update(incident: Incident, step: str, state: str, body: str, at: float) -> dict[str, Any]:
    return {
        "id": f"{incident.id}_{step}",
        "incident_id": incident.id,
        "status": state,
        "body": body,
        "created_at": _iso(at),
        "updated_at": _iso(at),
        "display_at": _iso(at),
    }


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
