"""Per-user tier limits in one process: a sliding one-minute window and a concurrency cap."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from sincere.config import TierLimits
from sincere.errors import ErrorContext, RateLimited, RetryAfterSource

WINDOW_S = 60.0


class InProcessLimiter:
    """``ports.Limiter`` for one process: admits a user's request or refuses it with the
    real wait, when that wait is known."""

    def __init__(
        self, limits: Mapping[str, TierLimits], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._recent: dict[str, deque[float]] = {}
        self._active: dict[str, int] = {}

    @asynccontextmanager
    async def admit(self, user_id: str, tier: str, context: ErrorContext) -> AsyncIterator[None]:
        """Hold one slot for the block, or raise RateLimited on entering; leaving the block
        (by its end, an exception, a cancellation, a closed generator) releases the slot."""
        self._take(user_id, tier, context)
        try:
            yield
        finally:
            self._release(user_id)  # synchronous: nothing can interrupt it

    async def aclose(self) -> None:
        """Nothing runs in the background here."""

    def _take(self, user_id: str, tier: str, context: ErrorContext) -> None:
        limits = self._limits[tier]
        now = self._clock()
        recent = self._recent.setdefault(user_id, deque())
        while recent and recent[0] <= now - WINDOW_S:
            recent.popleft()
        if len(recent) >= limits.requests_per_minute:
            wait = recent[0] + WINDOW_S - now  # when the oldest request leaves the window
            raise per_minute_refusal(tier, limits, wait, context)
        active = self._active.get(user_id, 0)
        if active >= limits.concurrent_requests:
            raise concurrency_refusal(tier, limits, context)
        recent.append(now)
        self._active[user_id] = active + 1

    def _release(self, user_id: str) -> None:
        remaining = self._active[user_id] - 1
        if remaining:
            self._active[user_id] = remaining
        else:
            del self._active[user_id]


def per_minute_refusal(
    tier: str, limits: TierLimits, wait: float, context: ErrorContext
) -> RateLimited:
    """The per-minute limit is reached; ``wait``: until the oldest request leaves the window."""
    return RateLimited(
        f"sincere's {tier}-tier limit of {limits.requests_per_minute} requests per "
        "minute is reached",
        context=context,
        retry_after=wait,
        retry_after_source=RetryAfterSource.TIER_LIMIT,
        suggestions=[f"Retry after {wait:.0f} s, when the window has room again."],
    )


def concurrency_refusal(tier: str, limits: TierLimits, context: ErrorContext) -> RateLimited:
    """The concurrency limit is reached."""
    # How long the running requests will take is unknown: no Retry-After is given.
    return RateLimited(
        f"sincere's {tier}-tier limit of {limits.concurrent_requests} concurrent "
        "requests is reached",
        context=context,
        suggestions=["Retry when one of your running requests has finished."],
    )
