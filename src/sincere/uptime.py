"""Uptime from recorded history: state spans, daily bars and uptime over a window.

A service's state between two recorded transitions is the state the first one entered; the
last one holds until now. Recorded ``ready`` is up, ``degraded`` is degraded (requests are
still served, so it counts as up in the uptime percentage and is reported apart), and
``unavailable`` is down. Time before the first record, and time in ``unknown`` (no check has
answered yet), is not covered: it is "no data", never up. Percentages are over the covered
time only, with the covered share beside them, and None when nothing is covered.

Observed time: a state is known only while a gateway process was observing (its lifetime,
from its start to its last heartbeat). Given the observed stretches (the lifetimes merged),
a state holds at most to the end of the stretch it was recorded in: a gateway that was not
running saw nothing, so that time is "no data" (not observed), never up nor down, and a
state recorded before a gap does not resume after it (each stretch starts unrecorded).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sincere.ports import RecordedTransition

Interval = tuple[float, float]
"""A stretch of time, ``(start, end)`` in unix seconds."""

DAY_S = 86_400.0
# Recorded health states and what they count as; any other (unknown) is no data.
_KIND = {"ready": "up", "degraded": "degraded", "unavailable": "down"}
WINDOWS: tuple[tuple[str, float], ...] = (
    ("24h", DAY_S),
    ("7d", 7 * DAY_S),
    ("30d", 30 * DAY_S),
    ("90d", 90 * DAY_S),
)


@dataclass(frozen=True, slots=True)
class Span:
    start: float
    end: float
    kind: str  # up | degraded | down


@dataclass(frozen=True, slots=True)
class Uptime:
    """The seconds of ``[start, end)`` spent in each kind of state, as recorded."""

    start: float
    end: float
    up_s: float
    degraded_s: float
    down_s: float

    @property
    def covered_s(self) -> float:
        return self.up_s + self.degraded_s + self.down_s

    @property
    def coverage(self) -> float:
        """The share of the window the recorded history covers (0 to 1)."""
        length = self.end - self.start
        return self.covered_s / length if length > 0 else 0.0

    @property
    def percent(self) -> float | None:
        """Up (degraded included) over the covered time, in percent; None: no data."""
        if self.covered_s <= 0:
            return None
        return 100.0 * (self.up_s + self.degraded_s) / self.covered_s

    def to_dict(self) -> dict[str, float | None]:
        percent = self.percent
        return {
            "uptime_percent": None if percent is None else round(percent, 3),
            "coverage_percent": round(100.0 * self.coverage, 3),
            "up_s": round(self.up_s, 3),
            "degraded_s": round(self.degraded_s, 3),
            "down_s": round(self.down_s, 3),
        }


@dataclass(frozen=True, slots=True)
class Day:
    day: date
    uptime: Uptime
    observed_s: float | None = None  # seconds observed by a gateway (None: not known)
    requests: int | None = None  # attempts sent to the deployment (None: not counted)
    failed: int | None = None  # of which failed by its fault

    @property
    def kind(self) -> str:
        """The bar's colour: no_data, up, degraded (never down) or down (some outage)."""
        u = self.uptime
        if u.covered_s <= 0:
            return "no_data"
        if u.down_s > 0:
            return "down"
        return "degraded" if u.degraded_s > 0 else "up"

    @property
    def title(self) -> str:
        """The bar's tooltip: the date and its uptime, or "no data" (and why, when the
        observed time is known), then the requests counted that day."""
        percent = self.uptime.percent
        length = self.uptime.end - self.uptime.start
        if percent is None:
            text = f"{self.day.isoformat()}: no data"
            if self.observed_s is not None:
                text += " (not observed)" if self.observed_s <= 0 else " (no state recorded)"
        else:
            text = f"{self.day.isoformat()}: {percent:.2f}% up"
            if self.uptime.coverage < 0.9995:
                text += f" (recorded for {100 * self.uptime.coverage:.1f}% of the day"
                if self.observed_s is not None and length - self.observed_s > 0.0005 * length:
                    text += f"; not observed for {100 * (1 - self.observed_s / length):.1f}%"
                text += ")"
        if self.requests is not None and self.failed is not None:
            if self.requests == 0:
                text += "; no requests"
            else:
                text += f"; {self.requests:,} requests, {self.failed:,} failed"
        return text


def stretches(lifetimes: Iterable[Interval]) -> list[Interval]:
    """The observed time: the processes' lifetimes merged where they overlap or touch."""
    merged: list[Interval] = []
    for start, end in sorted(lifetimes):
        if end < start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def spans(
    transitions: Sequence[RecordedTransition],
    end: float,
    observed: Sequence[Interval] | None = None,
) -> list[Span]:
    """The recorded states as spans, each from its transition to the next (the last to
    ``end``), oldest first; unknown states are left out (no data). With ``observed`` (the
    stretches), a state ends with its stretch at the latest, and a transition recorded
    outside every stretch holds nowhere."""
    ordered = sorted(transitions, key=lambda t: t.at)
    result: list[Span] = []
    for i, t in enumerate(ordered):
        until = min(ordered[i + 1].at if i + 1 < len(ordered) else end, end)
        if observed is not None:
            stretch = _containing(observed, t.at)
            if stretch is None:
                continue
            until = min(until, stretch[1])
        kind = _KIND.get(t.state)
        if kind is not None and until > t.at:
            result.append(Span(t.at, until, kind))
    return result


def with_answers(
    recorded: Sequence[Span], observed: Sequence[Interval], days: Iterable[date]
) -> list[Span]:
    """``recorded`` plus, on each UTC day of ``days`` (those on which the deployment
    answered requests), its observed time with no recorded state, counted as up: a gateway
    was watching and its circuit never opened (an open one is recorded), and it answered."""
    result = list(recorded)
    for day in days:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        for lo, hi in observed:
            lo, hi = max(lo, start), min(hi, start + DAY_S)
            if hi > lo:
                result.extend(Span(a, b, "up") for a, b in _uncovered(lo, hi, recorded))
    return sorted(result, key=lambda span: span.start)


def observed_within(observed: Sequence[Interval], start: float, end: float) -> float:
    """The seconds of ``[start, end)`` that some gateway process observed."""
    return sum(max(0.0, min(hi, end) - max(lo, start)) for lo, hi in observed)


def _containing(observed: Sequence[Interval], at: float) -> Interval | None:
    for stretch in observed:
        if stretch[0] <= at <= stretch[1]:
            return stretch
    return None


def _uncovered(start: float, end: float, recorded: Sequence[Span]) -> list[Interval]:
    """The parts of ``[start, end)`` no span of ``recorded`` (sorted, disjoint) covers."""
    gaps: list[Interval] = []
    at = start
    for span in recorded:
        if span.end <= at or span.start >= end:
            continue
        if span.start > at:
            gaps.append((at, span.start))
        at = max(at, span.end)
    if at < end:
        gaps.append((at, end))
    return gaps


def uptime(recorded: Sequence[Span], start: float, end: float) -> Uptime:
    """The seconds of each kind within ``[start, end)``."""
    seconds = {"up": 0.0, "degraded": 0.0, "down": 0.0}
    for span in recorded:
        overlap = min(span.end, end) - max(span.start, start)
        if overlap > 0:
            seconds[span.kind] += overlap
    return Uptime(start, end, seconds["up"], seconds["degraded"], seconds["down"])


def daily(
    recorded: Sequence[Span],
    now: float,
    days: int = 90,
    *,
    observed: Sequence[Interval] | None = None,
    counts: Mapping[date, tuple[int, int]] | None = None,
) -> list[Day]:
    """One entry per UTC day, the oldest first, the last one today (up to ``now``); with
    the observed stretches, how much of each day was observed; with ``counts`` (requests,
    failed) per day, those of the days it has (a day it lacks was not counted)."""
    today = datetime.fromtimestamp(now, UTC).date()
    result: list[Day] = []
    for back in range(days - 1, -1, -1):
        day = today - timedelta(days=back)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        end = min(start + DAY_S, now)
        seen = None if observed is None else observed_within(observed, start, end)
        requests, failed = (counts or {}).get(day, (None, None))
        result.append(Day(day, uptime(recorded, start, end), seen, requests, failed))
    return result


def windows(recorded: Sequence[Span], now: float) -> dict[str, Uptime]:
    """Uptime over the last 24 h, 7 d, 30 d and 90 d."""
    return {name: uptime(recorded, now - length, now) for name, length in WINDOWS}
