"""A clock the test moves by hand: breaker schedules without real sleeps."""

from __future__ import annotations


class ManualClock:
    """``monotonic`` and ``time`` (unix) that stand still until ``advance``."""

    def __init__(self, monotonic: float = 1000.0, unix: float = 1_750_000_000.0) -> None:
        self._monotonic = monotonic
        self._unix = unix

    def monotonic(self) -> float:
        return self._monotonic

    def time(self) -> float:
        return self._unix

    def advance(self, seconds: float) -> None:
        self._monotonic += seconds
        self._unix += seconds
