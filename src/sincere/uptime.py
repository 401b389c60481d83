"""Uptime from recorded history: state spans, daily bars and uptime over a window.

A service's state between two recorded transitions is the state the first one entered; the
last one holds until now. Recorded ``ready`` is up, ``degraded`` is degraded (requests are
still served, so it counts as up in the uptime percentage and is reported apart), and
``unavailable`` is down. Time before the first record, and time in ``unknown`` (no check has
answered yet), is not covered: it is "no data", never up. Percentages are over the covered
time only, with the covered share beside them, and None when nothing is covered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sincere.ports import RecordedTransition

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
        """The bar's tooltip: the date and its uptime, or "no data"."""
        percent = self.uptime.percent
        if percent is None:
            return f"{self.day.isoformat()}: no data"
        text = f"{self.day.isoformat()}: {percent:.2f}% up"
        if self.uptime.coverage < 0.9995:
            text += f" (recorded for {100 * self.uptime.coverage:.1f}% of the day)"
        return text


def spans(transitions: Sequence[RecordedTransition], end: float) -> list[Span]:
    """The recorded states as spans, each from its transition to the next (the last to
    ``end``), oldest first; unknown states are left out (no data)."""
    ordered = sorted(transitions, key=lambda t: t.at)
    result: list[Span] = []
    for i, t in enumerate(ordered):
        until = ordered[i + 1].at if i + 1 < len(ordered) else end
        kind = _KIND.get(t.state)
        if kind is not None and until > t.at:
            result.append(Span(t.at, min(until, end), kind))
    return result


def uptime(recorded: Sequence[Span], start: float, end: float) -> Uptime:
    """The seconds of each kind within ``[start, end)``."""
    seconds = {"up": 0.0, "degraded": 0.0, "down": 0.0}
    for span in recorded:
        overlap = min(span.end, end) - max(span.start, start)
        if overlap > 0:
            seconds[span.kind] += overlap
    return Uptime(start, end, seconds["up"], seconds["degraded"], seconds["down"])


def daily(recorded: Sequence[Span], now: float, days: int = 90) -> list[Day]:
    """One entry per UTC day, the oldest first, the last one today (up to ``now``)."""
    today = datetime.fromtimestamp(now, UTC).date()
    result: list[Day] = []
    for back in range(days - 1, -1, -1):
        day = today - timedelta(days=back)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        result.append(Day(day, uptime(recorded, start, min(start + DAY_S, now))))
    return result


def windows(recorded: Sequence[Span], now: float) -> dict[str, Uptime]:
    """Uptime over the last 24 h, 7 d, 30 d and 90 d."""
    return {name: uptime(recorded, now - length, now) for name, length in WINDOWS}
