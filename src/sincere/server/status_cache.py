"""A value computed at most once per time-to-live, shared by every reader: the public status
page, which reads 90 days of history and is read by many browsers and aggregators.

Single flight: readers that arrive while it is being computed wait for that one
computation, and a reader that gives up (its client left) does not stop it for the others.
A computation that fails is not kept: each of its readers gets the error, the next one
computes again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Fresh(Generic[T]):
    """A cached value and the seconds it stays fresh for (``max-age``)."""

    value: T
    remaining_s: float

    @property
    def max_age(self) -> int:
        """Whole seconds, rounded down: no client keeps it longer than this process does."""
        return max(0, int(self.remaining_s))


class SharedValue(Generic[T]):
    """One value, computed by ``compute`` when missing or older than ``ttl_s``."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._value: T | None = None
        self._expires = 0.0
        self._flight: asyncio.Task[T] | None = None

    async def get(self, compute: Callable[[], Awaitable[T]]) -> Fresh[T]:
        now = self._clock()
        if self._value is not None and now < self._expires:
            return Fresh(self._value, self._expires - now)
        if self._flight is None:
            self._flight = asyncio.get_running_loop().create_task(self._compute(compute))
        flight = self._flight
        value = await asyncio.shield(flight)
        return Fresh(value, max(0.0, self._expires - self._clock()))

    async def _compute(self, compute: Callable[[], Awaitable[T]]) -> T:
        # Fresh from when the reading began: the records are as old as that.
        began = self._clock()
        try:
            value = await compute()
        finally:
            self._flight = None
        self._value, self._expires = value, began + self._ttl_s
        return value
