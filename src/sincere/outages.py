"""Outages from recorded transitions (pure): the incidents the status page derives itself.

An outage of a service begins with a recorded ``unavailable`` and ends with the next
recorded ``ready``; the transitions in between (``degraded``: a probe is testing it; another
``unavailable``: it failed again) are its steps. One with no ``ready`` recorded after it is
still open: no one has seen the service recover. Stretches of time no gateway process
observed, inside an outage, are listed with it: what happened then is not known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sincere.ports import RecordedTransition
from sincere.uptime import Interval


@dataclass(frozen=True, slots=True)
class Outage:
    service: str  # its name in the history (a deployment, backend:store, ...)
    steps: tuple[RecordedTransition, ...]  # from its unavailable to its ready, if recorded
    gaps: tuple[Interval, ...]  # unobserved stretches within it

    @property
    def start(self) -> float:
        return self.steps[0].at

    @property
    def end(self) -> float | None:
        """When it was recorded ready again (None: not yet)."""
        last = self.steps[-1]
        return last.at if last.state == "ready" else None


def outages(
    transitions: Sequence[RecordedTransition],
    observed: Sequence[Interval] | None,
    now: float,
) -> list[Outage]:
    """The outages in a service's transitions, oldest first."""
    found: list[list[RecordedTransition]] = []
    current: list[RecordedTransition] | None = None
    for t in sorted(transitions, key=lambda t: t.at):
        if current is None:
            if t.state == "unavailable":
                current = [t]
                found.append(current)
        elif t.state == "ready":
            current.append(t)
            current = None
        elif t.state in ("unavailable", "degraded") and t.state != current[-1].state:
            current.append(t)
    result = []
    for steps in found:
        end = steps[-1].at if steps[-1].state == "ready" else now
        gaps = tuple(_gaps(observed, steps[0].at, end)) if observed is not None else ()
        result.append(Outage(steps[0].service, tuple(steps), gaps))
    return result


def _gaps(observed: Sequence[Interval], start: float, end: float) -> list[Interval]:
    """The parts of ``[start, end]`` outside every observed stretch."""
    gaps: list[Interval] = []
    at = start
    for lo, hi in observed:
        if hi <= at:
            continue
        if lo >= end:
            break
        if lo > at:
            gaps.append((at, lo))
        at = max(at, hi)
    if at < end:
        gaps.append((at, end))
    return gaps
