"""The tier limiter on its own, driven by an explicit clock: who decided, and the real wait."""

from __future__ import annotations

import pytest

from sincere.config import TierLimits
from sincere.errors import ErrorContext, RateLimited, RetryAfterSource
from sincere.tiers.limits import TierLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limiter(rpm: int = 2, concurrent: int = 5) -> tuple[TierLimiter, Clock]:
    clock = Clock()
    limits = {"free": TierLimits(requests_per_minute=rpm, concurrent_requests=concurrent)}
    return TierLimiter(limits, clock=clock), clock


def test_the_per_minute_limit_is_sincere_s_and_its_wait_is_the_window_s() -> None:
    limiter, clock = _limiter(rpm=2)
    limiter.admit("alice", "free", ErrorContext()).release()
    clock.now += 15
    limiter.admit("alice", "free", ErrorContext()).release()
    with pytest.raises(RateLimited) as info:
        limiter.admit("alice", "free", ErrorContext())
    error = info.value
    assert error.message == "sincere's free-tier limit of 2 requests per minute is reached"
    assert error.retry_after == 45  # the first request leaves the one-minute window then
    assert error.retry_after_source is RetryAfterSource.TIER_LIMIT
    assert error.suggestions == ("Retry after 45 s, when the window has room again.",)


def test_the_concurrency_limit_is_sincere_s_and_gives_no_wait() -> None:
    limiter, _ = _limiter(concurrent=1)
    running = limiter.admit("alice", "free", ErrorContext())
    with pytest.raises(RateLimited) as info:
        limiter.admit("alice", "free", ErrorContext())
    running.release()
    assert info.value.message == "sincere's free-tier limit of 1 concurrent requests is reached"
    assert info.value.retry_after is None  # how long the running one takes is unknown
    assert info.value.retry_after_source is None
