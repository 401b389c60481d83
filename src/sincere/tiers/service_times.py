"""How long a deployment's requests kept a slot, and the waits those measurements predict.

Every estimate a user sees comes from here, and only from what was measured on that
deployment in this process: with fewer than ``MIN_SAMPLES`` service times, the wait is
unknown (``known`` false, as Cloudflare's waiting room says ``waitTimeKnown``), never
guessed.

The queue as it stands gives a first estimate: the requests ahead served one after the
other at the measured pace. It is too short for a request that others will overtake
(a higher tier arriving later; under fair shares, other users' new requests), so it is
calibrated by the waits that followed earlier estimates: the ratios of the waits to what
the queue alone predicted, for the same user (or, until five of theirs are known, the
same tier) give the announced median and 90th percentile.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SAMPLES = 200  # the most recent service times (and waits) an estimate is taken from
MIN_SAMPLES = 5  # fewer than this and no wait is announced (nor a calibration used)
USERS = 1000  # the users whose own calibration is kept (the least recent are forgotten)
RATIO_FLOOR_S = 0.05  # a predicted wait shorter than this calibrates nothing


@dataclass(frozen=True, slots=True)
class WaitEstimate:
    """The wait before a request's turn: its median and 90th percentile, or unknown."""

    p50_s: float | None
    p90_s: float | None
    samples: int  # the measured service times it rests on
    queue_p50_s: float | None = None  # what the queue as it stands predicts (uncalibrated)

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
        self._recent: deque[float] = deque(maxlen=size)
        self._sorted: list[float] = []  # the same, in order: quantiles without sorting

    def add(self, seconds: float) -> None:
        if len(self._recent) == self._recent.maxlen:
            oldest = self._recent[0]
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._recent.append(seconds)
        bisect.insort(self._sorted, seconds)

    def __len__(self) -> int:
        return len(self._recent)

    def mean(self) -> float | None:
        return sum(self._recent) / len(self._recent) if self._recent else None

    def wait(self, position: int, running: Sequence[float], capacity: int) -> WaitEstimate:
        """The wait of the request at ``position`` (1: next) if the queue stays as it is,
        with ``running`` holding slots for these many seconds so far, on ``capacity`` slots.

        Each slot frees when its request's remaining time is over (a quantile of the
        measured times longer than what it has run), then serves the requests ahead in
        turn, each for that quantile of the measured times. Taken at the median and at
        the 90th percentile (the latter adds up 90th percentiles, so it leans long).
        """
        samples = len(self._sorted)
        if samples < MIN_SAMPLES:
            return WaitEstimate(None, None, samples)
        p50 = self._turn(0.5, position, running, capacity)
        p90 = self._turn(0.9, position, running, capacity)
        if p50 is None or p90 is None:  # a request has run longer than any measured one
            return WaitEstimate(None, None, samples)
        return WaitEstimate(p50, max(p50, p90), samples, queue_p50_s=p50)

    def _turn(
        self, q: float, position: int, running: Sequence[float], capacity: int
    ) -> float | None:
        ordered = self._sorted
        service = _quantile(ordered, 0, q)
        free_at: list[float] = []
        for elapsed in running:
            longer = bisect.bisect_right(ordered, elapsed)  # the times longer than it ran
            if longer == len(ordered):
                return None
            free_at.append(_quantile(ordered, longer, q) - elapsed)
        free_at.extend(0.0 for _ in range(max(0, capacity - len(running))))
        heapq.heapify(free_at)
        for _ in range(position - 1):  # the requests ahead take the slots as they free
            heapq.heappush(free_at, heapq.heappop(free_at) + service)
        return free_at[0]


class Calibration:
    """The waits that followed earlier estimates, as ratios to what the queue predicted,
    per user and per tier."""

    def __init__(self, size: int = SAMPLES, users: int = USERS) -> None:
        self._size = size
        self._users = users
        self._by_user: OrderedDict[str, deque[float]] = OrderedDict()
        self._by_tier: dict[str, deque[float]] = {}

    def record(self, user: str, tier: str, predicted_s: float, waited_s: float) -> None:
        """A request predicted to wait ``predicted_s`` by the queue alone waited ``waited_s``."""
        if predicted_s < RATIO_FLOOR_S:
            return
        ratio = waited_s / predicted_s
        self._by_tier.setdefault(tier, deque(maxlen=self._size)).append(ratio)
        own = self._by_user.pop(user, None) or deque(maxlen=self._size)
        own.append(ratio)
        self._by_user[user] = own  # the most recent last
        if len(self._by_user) > self._users:
            self._by_user.popitem(last=False)

    def apply(self, user: str, tier: str, estimate: WaitEstimate) -> WaitEstimate:
        """The estimate with the user's (else the tier's) measured ratios, when there are
        enough of them; else as the queue predicts."""
        if estimate.p50_s is None:
            return estimate
        ratios = self._by_user.get(user)
        if ratios is None or len(ratios) < MIN_SAMPLES:
            ratios = self._by_tier.get(tier)
        if ratios is None or len(ratios) < MIN_SAMPLES:
            return estimate
        ordered = sorted(ratios)
        base = estimate.p50_s
        p50 = base * _quantile(ordered, 0, 0.5)
        p90 = base * _quantile(ordered, 0, 0.9)
        return WaitEstimate(p50, max(p50, p90), estimate.samples, queue_p50_s=base)


def _quantile(ordered: Sequence[float], start: int, q: float) -> float:
    """The nearest-rank quantile of the sorted values from ``start`` on."""
    count = len(ordered) - start
    return ordered[start + max(0, math.ceil(q * count) - 1)]
