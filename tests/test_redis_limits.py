"""Tier limits on the machine's Redis, as a fleet uses them: two limiters with two clients
stand for two processes. Each test has its own key prefix."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from sincere.backends.redis import connect
from sincere.backends.redis.limits import RedisLimiter
from sincere.config import DEFAULT_TIER_LIMITS, TierLimits
from sincere.errors import ErrorContext, RateLimited
from tests.redis_cut import RedisCut

URL = "redis://127.0.0.1:6379/0"
CONTEXT = ErrorContext(service="limits")


def tiers(per_minute: int = 10, concurrent: int = 100) -> dict[str, TierLimits]:
    free = TierLimits(requests_per_minute=per_minute, concurrent_requests=concurrent)
    return {**DEFAULT_TIER_LIMITS, "free": free}


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"test-limits-{os.urandom(6).hex()}:"
    yield prefix
    cleaner = connect(URL)
    async for key in cleaner.scan_iter(match=f"{prefix}*"):
        await cleaner.delete(key)
    await cleaner.aclose()


@pytest.fixture
async def clients() -> AsyncIterator[tuple[Redis, Redis]]:
    a, b = connect(URL), connect(URL)
    yield a, b
    await a.aclose()
    await b.aclose()


async def _try(limiter: RedisLimiter, user: str = "alice") -> RateLimited | None:
    """One request through ``limiter``: None when admitted (and finished at once)."""
    try:
        async with limiter.admit(user, "free", CONTEXT):
            return None
    except RateLimited as refused:
        return refused


async def test_thirty_requests_over_two_processes_admit_exactly_ten(
    clients: tuple[Redis, Redis], prefix: str
) -> None:
    a, b = (RedisLimiter(c, tiers(per_minute=10), prefix=prefix) for c in clients)
    outcomes = await asyncio.gather(*(_try(a if i % 2 else b) for i in range(30)))
    refused = [o for o in outcomes if o is not None]
    assert len(refused) == 20  # exactly 10 admitted across the two
    for refusal in refused:
        # A true wait: until the first request leaves the minute, measured by Redis's clock.
        assert refusal.retry_after is not None
        assert 55 < refusal.retry_after <= 60
        assert "limit of 10 requests per minute" in refusal.message


async def test_concurrency_is_one_count_for_the_fleet_and_comes_back_on_release(
    clients: tuple[Redis, Redis], prefix: str
) -> None:
    a, b = (RedisLimiter(c, tiers(concurrent=2), prefix=prefix) for c in clients)
    async with a.admit("alice", "free", CONTEXT), b.admit("alice", "free", CONTEXT):
        refusal = await _try(a)
        assert refusal is not None
        assert refusal.retry_after is None  # nobody knows when a running request ends
        assert await _try(a, "bob") is None  # another user has slots of their own
    assert await _try(b) is None  # both slots came back


async def test_a_slot_is_given_back_however_the_block_ends(
    clients: tuple[Redis, Redis], prefix: str
) -> None:
    limiter = RedisLimiter(clients[0], tiers(concurrent=1), prefix=prefix)
    with pytest.raises(ValueError, match="boom"):
        async with limiter.admit("alice", "free", CONTEXT):
            raise ValueError("boom")
    held = asyncio.Event()

    async def hold() -> None:
        async with limiter.admit("alice", "free", CONTEXT):
            held.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    await held.wait()
    assert await _try(limiter) is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _try(limiter) is None


async def test_the_slot_of_a_process_that_died_comes_back_when_its_lease_ends(
    clients: tuple[Redis, Redis], prefix: str
) -> None:
    dying = RedisLimiter(clients[0], tiers(concurrent=1), prefix=prefix, lease_s=0.3)
    survivor = RedisLimiter(clients[1], tiers(concurrent=1), prefix=prefix, lease_s=0.3)
    held = dying.admit("alice", "free", CONTEXT)
    await held.__aenter__()  # and never leaves the block: the process is killed
    assert await _try(survivor) is not None
    await asyncio.sleep(0.4)  # the lease's length, as Redis counts it
    assert await _try(survivor) is None
    assert held is not None  # kept alive until here: no finaliser gives the slot back


async def test_while_redis_is_unreachable_each_process_admits_its_share_alone(
    prefix: str,
) -> None:
    cut = await RedisCut().start()
    other = connect(URL)
    client = connect(cut.url)
    try:
        limiter = RedisLimiter(client, tiers(per_minute=10), prefix=prefix)
        peer = RedisLimiter(other, tiers(per_minute=10), prefix=prefix)
        assert await _try(peer, "carol") is None  # two live processes, as Redis sees them
        assert await _try(limiter, "carol") is None
        assert limiter.live_processes == 2
        cut.cut()
        # No error reaches the request: it is admitted by this process alone, within its
        # share of the limit (10 per minute / 2 processes, less what it already took).
        outcomes = [await _try(limiter, "dave") for _ in range(8)]
        assert [o is None for o in outcomes] == [True] * 5 + [False] * 3
        assert limiter.last_error is not None
        cut.restore()
        await asyncio.sleep(1.1)  # RETRY_AFTER_DOWN_S: then Redis is asked again
        outcomes = [await _try(limiter, "erin") for _ in range(12)]
        assert [o is None for o in outcomes] == [True] * 10 + [False] * 2  # exact again
    finally:
        await client.aclose()
        await other.aclose()
        await cut.aclose()
