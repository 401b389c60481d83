"""Attempts per deployment and UTC day for the status page, read again only while a day
can still change.

A request's attempts are recorded under its start time, within ``[telemetry] flush_s`` of
its end, so a day's counts can grow until its last request has ended and been written. A
day is final ``final_after_s`` after it ended: an hour, or twice the longest a request may
take (its timeout and the longest queue wait) when that is longer. Final days are kept here,
per process, and never read again: the first page of a process reads the 90 days once, the
next ones only the days still open (today, and yesterday for its first hour). Without this,
every page computation scanned every attempt row of 90 days (1.0 s at a million rows on
SQLite, timed while this was built; docs/benchmarks.md has the page's first paint).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from sincere.availability import AttemptCounts
from sincere.config import Settings

_DAY = timedelta(days=1)
FINAL_AFTER_MIN_S = 3600.0

PerDay = dict[str, dict[date, AttemptCounts]]  # deployment -> UTC day -> counts


class Counter(Protocol):
    """What is read: ``TelemetryStore.attempt_counts``."""

    async def attempt_counts(
        self, start: float, end: float, *, by_day: bool
    ) -> list[AttemptCounts]: ...


def final_after_s(settings: Settings) -> float:
    """How long after its end a day's counts can still change (see the module's docstring)."""
    longest_wait = max((t.max_queue_wait_s for t in settings.tiers.values()), default=0.0)
    request_s = settings.defaults.timeout_s + longest_wait + settings.telemetry.flush_s
    return max(FINAL_AFTER_MIN_S, 2 * request_s)


def _midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


class DayCounts:
    """The counts of the UTC days from ``start``'s to ``now``'s; final days kept."""

    def __init__(self, store: Counter, final_after: float) -> None:
        self._store = store
        self._final_after = final_after
        self._final: dict[date, dict[str, AttemptCounts]] = {}  # a run of days from the first
        self._flight: asyncio.Task[PerDay] | None = None

    async def read(self, start: float, now: float) -> PerDay:
        """The counts; a read the caller gives up on (the page's bound on its reads) runs
        on, so that what it finds is kept and a later page gets it, instead of every page
        starting the same long read again and giving it up again."""
        if self._flight is None or self._flight.done():
            self._flight = asyncio.get_running_loop().create_task(self._read(start, now))
            self._flight.add_done_callback(_retrieved)
        return await asyncio.shield(self._flight)

    async def _read(self, start: float, now: float) -> PerDay:
        first = datetime.fromtimestamp(start, UTC).date()
        today = datetime.fromtimestamp(now, UTC).date()
        for day in [d for d in self._final if d < first]:
            del self._final[day]  # out of the page's range
        open_from = first
        while open_from in self._final:
            open_from += _DAY
        fresh: dict[date, dict[str, AttemptCounts]] = {}
        if open_from <= today:
            for c in await self._store.attempt_counts(_midnight(open_from), now, by_day=True):
                if c.day is not None:
                    fresh.setdefault(date.fromisoformat(c.day), {})[c.deployment] = c
            day = open_from
            while day < today and _midnight(day + _DAY) + self._final_after <= now:
                self._final[day] = fresh.get(day, {})
                day += _DAY
        result: PerDay = {}
        for day, by_deployment in [*self._final.items(), *fresh.items()]:
            for deployment, counts in by_deployment.items():
                result.setdefault(deployment, {})[day] = counts
        return result


def _retrieved(task: asyncio.Task[PerDay]) -> None:
    """A read nobody waits for any more still has its failure taken (the page that asked
    has already said it could not read the counts)."""
    if not task.cancelled():
        task.exception()
