"""The data agent: usage figures from real recorded data, or a clean failure.

Sources, in order: the telemetry store (every process's attempts), then, when the store
cannot be read, this process's own window of recent attempts: real data, labelled
``degraded`` with its true scope ("this process, last 15 minutes"), the asked window
clipped to what it holds. Each source tried is announced on the asker's stream
(``service_initializing``, then ``service_ready`` or ``service_unavailable``, service
``usage:store`` / ``usage:memory``). When no source can answer, ``DataUnavailable``: never
a figure from nowhere.

Freshness is judged as dbt judges a source: the age of the newest record against
``[usage] warn_after_s`` / ``error_after_s``; past the error threshold the figures are
still returned (they are real) but never as current, and a note says so.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sincere.agents.figures import aggregate
from sincere.agents.usage import (
    Freshness,
    GroupBy,
    GroupFigures,
    Usage,
    Verdict,
    Window,
    iso,
)
from sincere.config import UsageConfig
from sincere.context import RequestContext
from sincere.errors import BadRequest, DataUnavailable, ServiceError
from sincere.events import EventType
from sincere.ports import TelemetryStore
from sincere.telemetry import RecentWindow

STORE = "usage:store"
MEMORY = "usage:memory"
MEMORY_SOURCE = "memory:this-process"
STORE_SCOPE = "all processes"

WINDOWS = {"1h": 3600.0, "24h": 86_400.0, "7d": 7 * 86_400.0, "30d": 30 * 86_400.0}
"""The named windows: the last hour, day, week, 30 days, up to now."""


class DataAgent:
    """Answers usage questions from the telemetry store, else from ``window`` (None: this
    process serves no traffic, like the CLI, so it has no second source)."""

    def __init__(
        self,
        store: TelemetryStore,
        window: RecentWindow | None,
        settings: UsageConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._window = window
        self._settings = settings
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    async def usage(
        self, ctx: RequestContext, window: Window, group_by: GroupBy, user_id: str | None
    ) -> Usage:
        """The figures of ``window`` grouped by ``group_by``, of one user (None: all)."""
        try:
            return await self._from_store(ctx, window, group_by, user_id)
        except ServiceError as exc:
            store_error = exc
        return await self._from_memory(ctx, window, group_by, user_id, store_error)

    async def _from_store(
        self, ctx: RequestContext, window: Window, group_by: GroupBy, user_id: str | None
    ) -> Usage:
        source = self._store.source
        await ctx.emit(
            EventType.SERVICE_INITIALIZING,
            f"reading usage from the store ({source})",
            service=STORE,
        )
        try:
            # Computed where the rows are: only the figures travel.
            groups, read = await self._store.figures(
                window.start, window.end, user_id, group_by, self._settings.min_samples
            )
            newest = await self._store.newest()
        except ServiceError as exc:
            await ctx.emit(
                EventType.SERVICE_UNAVAILABLE,
                f"the store ({source}) cannot be read: {exc.message}",
                service=STORE,
            )
            raise
        await ctx.emit(EventType.SERVICE_READY, f"{read} rows read from {source}", service=STORE)
        return self._usage(
            groups, read, newest, source, False, STORE_SCOPE, window, group_by, user_id, ()
        )

    async def _from_memory(
        self,
        ctx: RequestContext,
        window: Window,
        group_by: GroupBy,
        user_id: str | None,
        store_error: ServiceError,
    ) -> Usage:
        scope = self.memory_scope()
        await ctx.emit(
            EventType.SERVICE_INITIALIZING,
            f"the store cannot be read; trying {MEMORY_SOURCE} ({scope or 'no traffic here'})",
            service=MEMORY,
        )
        held = self._window
        why: str | None = None
        if held is None:
            why = "this process serves no traffic, so it holds no recent attempts of its own"
        elif window.end <= held.since():
            why = (
                f"the window asked for ends before the {scope} this process holds "
                f"(from {iso(held.since())})"
            )
        if held is None or why is not None:
            await ctx.emit(EventType.SERVICE_UNAVAILABLE, why or "", service=MEMORY)
            raise DataUnavailable(
                f"no source can answer: {store_error.message}, and {why}",
                context=ctx.error_context(MEMORY),
                suggestions=["Retry once the store is reachable again (see /health)."],
            ) from store_error
        start = max(window.start, held.since())
        notes: list[str] = [f"the store cannot be read ({store_error.message}): {scope} only"]
        if start > window.start:
            window = Window(start, window.end, f"{window.label}, clipped to the {scope}")
            notes.append(f"the window is clipped: this process holds only the {scope}")
        every = held.rows(held.since(), math.inf)
        newest = max((r.at for r in every), default=None)
        rows = held.rows(window.start, window.end)
        if user_id is not None:
            rows = [r for r in rows if r.user_id == user_id]
        await ctx.emit(
            EventType.SERVICE_READY,
            f"{len(rows)} rows read from {MEMORY_SOURCE} ({scope}), degraded",
            service=MEMORY,
        )
        groups = aggregate(rows, group_by, self._settings.min_samples)
        return self._usage(
            groups,
            len(rows),
            newest,
            MEMORY_SOURCE,
            True,
            scope,
            window,
            group_by,
            user_id,
            tuple(notes),
        )

    def memory_scope(self) -> str:
        """What the second source covers, in words ("" when there is none)."""
        if self._window is None:
            return ""
        return f"this process, last {_duration(self._window.seconds)}"

    def _usage(
        self,
        groups: tuple[GroupFigures, ...],
        rows_read: int,
        newest: float | None,
        source: str,
        degraded: bool,
        scope: str,
        window: Window,
        group_by: GroupBy,
        user_id: str | None,
        notes: tuple[str, ...],
    ) -> Usage:
        as_of = self._clock()
        freshness = self.freshness(newest, as_of)
        if freshness.verdict is Verdict.ERROR:
            age = round(freshness.age_s or 0.0)
            notes += (
                f"the newest record is {age} s old (error after {self._settings.error_after_s:g}"
                " s): these figures are not current",
            )
        elif freshness.verdict is Verdict.UNKNOWN:
            notes += ("nothing is recorded in this source: no figure is current",)
        whose = "every user" if user_id is None else f"user {user_id!r}"
        query = (
            f"attempts of requests started from {iso(window.start)} to {iso(window.end)}"
            f" of {whose}, one request per final attempt, grouped by {group_by}"
        )
        return Usage(
            as_of=as_of,
            source=source,
            degraded=degraded,
            scope=scope,
            window=window,
            group_by=group_by,
            user_id=user_id,
            groups=groups,
            freshness=freshness,
            min_samples=self._settings.min_samples,
            query=query,
            rows_read=rows_read,
            notes=notes,
        )

    def freshness(self, newest: float | None, as_of: float) -> Freshness:
        """dbt's verdict on the age of the newest record (``unknown``: nothing recorded)."""
        s = self._settings
        if newest is None:
            return Freshness(None, None, Verdict.UNKNOWN, s.warn_after_s, s.error_after_s)
        age = max(0.0, as_of - newest)
        if age >= s.error_after_s:
            verdict = Verdict.ERROR
        elif age >= s.warn_after_s:
            verdict = Verdict.WARN
        else:
            verdict = Verdict.PASS
        return Freshness(newest, age, verdict, s.warn_after_s, s.error_after_s)


def window_of(label: str | None, start: str | None, end: str | None, now: float) -> Window:
    """The window asked for: a named one (``1h``, ``24h``, ``7d``, ``30d``) up to ``now``,
    or ``start``/``end`` (ISO 8601 or unix seconds; ``end`` defaults to ``now``)."""
    if start is None and end is None:
        label = label or "24h"
        if label not in WINDOWS:
            raise BadRequest(
                f"window: {label!r} is not one of {', '.join(WINDOWS)} (or give from/to)",
                param="window",
            )
        return Window(now - WINDOWS[label], now, label)
    if label is not None:
        raise BadRequest("give either window or from/to, not both", param="window")
    if start is None:
        raise BadRequest("to needs from: the start of the window", param="from")
    begin = _instant(start, "from")
    finish = now if end is None else _instant(end, "to")
    if finish <= begin:
        raise BadRequest("the window is empty: to must be after from", param="to")
    return Window(begin, finish, f"from {iso(begin)} to {iso(finish)}")


_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")


def _instant(text: str, param: str) -> float:
    """Unix seconds, or an ISO 8601 time (UTC unless it says otherwise)."""
    try:
        if _NUMBER.fullmatch(text):
            at = float(text)
        else:
            parsed = datetime.fromisoformat(text)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            at = parsed.timestamp()
        datetime.fromtimestamp(at, UTC)  # within the calendar's range
    except (ValueError, OverflowError, OSError):
        raise BadRequest(
            f"{param}: {text!r} is neither an ISO 8601 time nor unix seconds", param=param
        ) from None
    return at


def _duration(seconds: float) -> str:
    """900 -> "15 minutes", 3600 -> "1 hour", 90 -> "90 seconds"."""
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} seconds"
