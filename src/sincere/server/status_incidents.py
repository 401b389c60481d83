"""The status page's incidents in Atlassian Statuspage's shape: the escalation store's, and
the outages recorded in the service history, one incident per outage.

Rules (each a statement about records, never an estimate):

* status: ``investigating`` while the last recorded step is ``unavailable`` (or, for an
  escalation incident, while it is open); ``monitoring`` while it is ``degraded`` (a probe
  is testing the service); ``resolved`` once it was recorded ``ready``. ``identified`` is
  never used: the gateway records what failed, not why.
* impact: ``major``: every incident is a span in which a component was recorded
  unavailable (``major_outage``), or requests of an escalating tier failed.
* ids: an outage's is derived from its service and its start, the same in every process
  and after every restart; an escalation incident keeps its own.
* merge: an outage and an escalation incident of the same deployment whose times overlap
  are one incident: the escalation incident's (its id, name and ticket count), with the
  outage's transitions among its updates and its start, status and end taken from both.
  An outage joins the earliest such escalation incident only, so it is never shown twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sincere.outages import Outage
from sincere.tiers.incidents import Incident, IncidentState

MAX_INCIDENTS = 50  # the newest, as Statuspage's incidents.json lists them

_STEP = {"unavailable": "investigating", "degraded": "monitoring", "ready": "resolved"}
_RANK = {"resolved": 0, "monitoring": 1, "investigating": 2}

ComponentJSON = Callable[[str], dict[str, Any] | None]
"""The Statuspage shape of a component, by its page name (None: not on the page)."""


def outage_id(service: str, start: float) -> str:
    """An outage's id: its service and the time it began, as recorded."""
    return "out_" + hashlib.sha256(f"{service}/{start!r}".encode()).hexdigest()[:16]


def incidents(
    outages: Sequence[tuple[str, Outage]],
    escalated: Sequence[Incident],
    component: ComponentJSON,
    page_id: str,
    now: float,
) -> list[dict[str, Any]]:
    """Every incident, newest first (at most ``MAX_INCIDENTS``): ``outages`` as (component
    name, outage), merged into the escalation incidents that cover them."""
    joined: dict[str, list[tuple[str, Outage]]] = {i.id: [] for i in escalated}
    alone: list[tuple[str, Outage]] = []
    by_start = sorted(escalated, key=lambda i: i.opened_at)
    for name, outage in outages:
        cover = next((i for i in by_start if _overlap(i, outage, now)), None)
        if cover is None:
            alone.append((name, outage))
        else:
            joined[cover.id].append((name, outage))
    result = [_escalated(i, joined[i.id], component(i.deployment), page_id, now) for i in escalated]
    result += [_outage(name, o, component(name), page_id) for name, o in alone]
    result.sort(key=lambda i: i["started_at"], reverse=True)
    return result[:MAX_INCIDENTS]


def unresolved(all_incidents: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in all_incidents if i["status"] != "resolved"]


def linked(all_incidents: Sequence[dict[str, Any]], url: str) -> list[dict[str, Any]]:
    """The incidents with their ``shortlink`` on the page at ``url`` (the page is computed
    once for every reader; the address is each request's)."""
    return [{**i, "shortlink": f"{url}status#{i['id']}"} for i in all_incidents]


def _overlap(incident: Incident, outage: Outage, now: float) -> bool:
    if incident.deployment != outage.service:  # a shared part's is never a deployment's
        return False
    ends = incident.resolved_at if incident.resolved_at is not None else now
    outage_end = outage.end if outage.end is not None else now
    return incident.opened_at <= outage_end and outage.start <= ends


def _outage(
    name: str, outage: Outage, component: dict[str, Any] | None, page_id: str
) -> dict[str, Any]:
    ident = outage_id(outage.service, outage.start)
    updates = _outage_updates(ident, ident, name, outage)
    status = _STEP[outage.steps[-1].state]
    return _shape(
        ident,
        f"{name} unavailable",
        status,
        outage.start,
        updates,
        _monitoring_at([outage]),
        outage.end,
        component,
        page_id,
    )


def _escalated(
    incident: Incident,
    outages: Sequence[tuple[str, Outage]],
    component: dict[str, Any] | None,
    page_id: str,
    now: float,
) -> dict[str, Any]:
    """An escalation incident; its own updates are the recorded times (opened, the last new
    failure when later, resolved), with the transitions of the outages it covers."""
    i = incident
    updates = [
        _update(i.id, f"{i.id}_opened", "investigating", _opened(i), i.opened_at),
    ]
    last_failure = i.updated_at
    if i.resolved_at is not None and last_failure >= i.resolved_at:
        last_failure = i.opened_at  # the resolve itself moved updated_at
    if last_failure > i.opened_at:
        body = f"{i.ticket_count} failed requests recorded so far."
        updates.append(_update(i.id, f"{i.id}_updated", "investigating", body, last_failure))
    resolved = i.state is IncidentState.RESOLVED and i.resolved_at is not None
    if resolved and i.resolved_at is not None:
        body = f"{i.deployment} answers again; {i.ticket_count} failed requests in all."
        updates.append(_update(i.id, f"{i.id}_resolved", "resolved", body, i.resolved_at))
    status = "resolved" if resolved else "investigating"
    started, ended = i.opened_at, i.resolved_at
    for name, outage in outages:
        ident = outage_id(outage.service, outage.start)
        updates += _outage_updates(i.id, ident, name, outage)
        step = _STEP[outage.steps[-1].state]
        if _RANK[step] > _RANK[status]:
            status = step
        started = min(started, outage.start)
        if ended is not None:
            ended = None if outage.end is None else max(ended, outage.end)
    return _shape(
        i.id,
        f"{i.deployment}: {i.failure_class}",
        status,
        started,
        updates,
        _monitoring_at([o for _, o in outages]),
        ended if status == "resolved" else None,
        component,
        page_id,
    )


def _opened(i: Incident) -> str:
    return f"Requests to {i.deployment} are failing ({i.failure_class})."


def _outage_updates(
    incident_id: str, ident: str, name: str, outage: Outage
) -> list[dict[str, Any]]:
    """One update per recorded step, and one per unobserved stretch within the outage."""
    updates = []
    for n, step in enumerate(outage.steps):
        status = _STEP[step.state]
        if step.state == "unavailable":
            body = f"{name} is unavailable." if n == 0 else f"{name} is unavailable again."
        elif step.state == "degraded":
            body = f"{name} is degraded: a probe is testing it."
        else:
            body = f"{name} is operational again."
        updates.append(_update(incident_id, f"{ident}_{n}", status, body, step.at))
    for n, (lo, hi) in enumerate(outage.gaps):
        state = _status_at(outage, lo)
        body = f"Not observed from {_iso(lo)} to {_iso(hi)}: no gateway process was running."
        updates.append(_update(incident_id, f"{ident}_gap{n}", state, body, hi))
    return updates


def _status_at(outage: Outage, at: float) -> str:
    """The incident's status at ``at``, from the steps recorded by then."""
    status = "investigating"
    for step in outage.steps:
        if step.at <= at:
            status = _STEP[step.state]
    return status


def _monitoring_at(outages: Sequence[Outage]) -> float | None:
    times = [s.at for o in outages for s in o.steps if s.state == "degraded"]
    return min(times) if times else None


def _shape(
    ident: str,
    name: str,
    status: str,
    started: float,
    updates: list[dict[str, Any]],
    monitoring_at: float | None,
    resolved_at: float | None,
    component: dict[str, Any] | None,
    page_id: str,
) -> dict[str, Any]:
    updates.sort(key=lambda u: (u["display_at"], u["id"]), reverse=True)  # newest first
    return {
        "id": ident,
        "name": name,
        "status": status,
        "created_at": _iso(started),
        "updated_at": updates[0]["updated_at"],
        "monitoring_at": _iso(monitoring_at) if monitoring_at is not None else None,
        "resolved_at": _iso(resolved_at) if resolved_at is not None else None,
        "impact": "major",
        "started_at": _iso(started),
        "page_id": page_id,
        "incident_updates": updates,
        "components": [component] if component is not None else [],
    }


def _update(incident_id: str, ident: str, status: str, body: str, at: float) -> dict[str, Any]:
    return {
        "id": ident,
        "incident_id": incident_id,
        "status": status,
        "body": body,
        "created_at": _iso(at),
        "updated_at": _iso(at),
        "display_at": _iso(at),
    }


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
