"""How long a deployment's requests kept a slot, and the waits those measurements predict.

Every estimate a user sees comes from here, and only from service times measured on that
deployment in this process: with fewer than ``MIN_SAMPLES`` of them, the wait is unknown
(``known`` false, as Cloudflare's waiting room says ``waitTimeKnown``), never guessed.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SAMPLES = 200  # the most recent service times an estimate is taken from
MIN_SAMPLES = 5  # fewer than this and no wait is announced


@dataclass(frozen=True, slots=True)
class WaitEstimate:
    """The wait before a request's turn: its median and 90th percentile, or unknown."""

    p50_s: float | None
    p90_s: float | None
    samples: int  # the measured service times it rests on

    @property
    def known(self) -> bool:
        return self.p50_s is not None

    def to_data(self) -> dict[str, Any]:
        def ms(value: float | None) -> int | None:
            return None if value is None else round(value * 1000)

        return {
            "estimate_known": self.known,
            "estimated_wait_ms_p50": ms(self.p50_s),
            "estimated_wait_ms_p90": ms(self.p90_s),
            "estimate_samples": self.samples,
        }


UNKNOWN = WaitEstimate(None, None, 0)


class ServiceTimes:
    """The recent service times of one deployment (seconds a slot was held)."""

    def __init__(self, size: int = SAMPLES) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)

    def __len__(self) -> int:
        return len(self._samples)

    def mean(self) -> float | None:
        return sum(self._samples) / len(self._samples) if self._samples else None

    def wait(self, position: int, running: Sequence[float], capacity: int) -> WaitEstimate:
        """The wait of the request at ``position`` (1: next), with ``running`` holding slots
        for these many seconds so far, on ``capacity`` slots.

        Each slot frees when its request's remaining time is over (a quantile of the
        measured times longer than what it has run), then serves the requests ahead in
        turn, each for that quantile of the measured times. Taken at the median and at
        the 90th percentile (the latter adds up 90th percentiles, so it leans long).
        """
        if len(self._samples) < MIN_SAMPLES:
            return WaitEstimate(None, None, len(self._samples))
        ordered = sorted(self._samples)
        p50 = _turn(ordered, 0.5, position, running, capacity)
        p90 = _turn(ordered, 0.9, position, running, capacity)
        if p50 is None or p90 is None:  # a request has run longer than any measured one
            return WaitEstimate(None, None, len(ordered))
        return WaitEstimate(p50, max(p50, p90), len(ordered))


def _quantile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank quantile of sorted values."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _turn(
    ordered: Sequence[float], q: float, position: int, running: Sequence[float], capacity: int
) -> float | None:
    service = _quantile(ordered, q)
    free_at: list[float] = []
    for elapsed in running:
        longer = [s - elapsed for s in ordered if s > elapsed]
        if not longer:
            return None
        free_at.append(_quantile(longer, q))
    free_at.extend(0.0 for _ in range(max(0, capacity - len(running))))
    heapq.heapify(free_at)
    for _ in range(position - 1):  # the requests ahead take the slots as they free
        heapq.heappush(free_at, heapq.heappop(free_at) + service)
    return free_at[0]
