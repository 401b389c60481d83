"""The tier limiter on its own, driven by an explicit clock: who decided, the real wait, and
a slot released however its request ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sincere.backends.memory.limits import InProcessLimiter
from sincere.config import TierLimits
from sincere.errors import ErrorContext, RateLimited, RetryAfterSource


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limiter(rpm: int = 2, concurrent: int = 5) -> tuple[InProcessLimiter, Clock]:
    clock = Clock()
    limits = {"free": TierLimits(requests_per_minute=rpm, concurrent_requests=concurrent)}
    return InProcessLimiter(limits, clock=clock), clock


async def _one_request(limiter: InProcessLimiter, user: str = "alice") -> None:
    async with limiter.admit(user, "free", ErrorContext()):
        pass


async def test_the_per_minute_limit_is_sincere_s_and_its_wait_is_the_window_s() -> None:
    limiter, clock = _limiter(rpm=2)
    await _one_request(limiter)
    clock.now += 15
    await _one_request(limiter)
    with pytest.raises(RateLimited) as info:
        await _one_request(limiter)
    error = info.value
    assert error.message == "sincere's free-tier limit of 2 requests per minute is reached"
    assert error.retry_after == 45  # the first request leaves the one-minute window then
    assert error.retry_after_source is RetryAfterSource.TIER_LIMIT
    assert error.suggestions == ("Retry after 45 s, when the window has room again.",)
    clock.now += 45
    await _one_request(limiter)  # the window has room again


async def test_the_concurrency_limit_is_sincere_s_and_gives_no_wait() -> None:
    limiter, _ = _limiter(concurrent=1)
    async with limiter.admit("alice", "free", ErrorContext()):
        with pytest.raises(RateLimited) as info:
            await _one_request(limiter)
        await _one_request(limiter, "bob")  # another user's slots are their own
    assert info.value.message == "sincere's free-tier limit of 1 concurrent requests is reached"
    assert info.value.retry_after is None  # how long the running one takes is unknown
    assert info.value.retry_after_source is None
    await _one_request(limiter)  # the slot came back when the block ended


async def test_a_request_that_fails_releases_its_slot() -> None:
    limiter, _ = _limiter(concurrent=1)
    with pytest.raises(RuntimeError):
        async with limiter.admit("alice", "free", ErrorContext()):
            raise RuntimeError("the cascade failed")
    await _one_request(limiter)


async def test_a_cancelled_request_releases_its_slot() -> None:
    limiter, _ = _limiter(concurrent=1)
    admitted = asyncio.Event()

    async def request() -> None:
        async with limiter.admit("alice", "free", ErrorContext()):
            admitted.set()
            await asyncio.Event().wait()  # the answer never comes: the client left

    task = asyncio.create_task(request())
    await admitted.wait()
    with pytest.raises(RateLimited):
        await _one_request(limiter)  # the slot is held while the request runs
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _one_request(limiter)


async def test_a_stream_closed_before_its_end_releases_its_slot() -> None:
    limiter, _ = _limiter(concurrent=1)

    async def stream() -> AsyncIterator[str]:
        async with limiter.admit("alice", "free", ErrorContext()):
            yield "Hello"
            yield " world"

    body = stream()
    assert await anext(body) == "Hello"
    with pytest.raises(RateLimited):
        await _one_request(limiter)
    await body.aclose()  # the client went away after the first chunk
    await _one_request(limiter)


async def test_a_refused_request_holds_no_slot_and_takes_no_place_in_the_window() -> None:
    limiter, _ = _limiter(rpm=2, concurrent=1)
    async with limiter.admit("alice", "free", ErrorContext()):
        with pytest.raises(RateLimited):
            await _one_request(limiter)  # refused: concurrency
    await _one_request(limiter)  # the refusal did not count against the two per minute
