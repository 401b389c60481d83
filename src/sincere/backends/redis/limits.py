"""Per-user tier limits for a fleet, exact across processes: one Lua script in Redis.

A user's requests of the last minute are a sorted set scored by Redis's own clock (one
clock for every host); their running requests are a sorted set of leases. One script
drops what is out of the window and what has expired, checks both limits and takes a
place in both, atomically: 30 requests of a 10-per-minute user, spread over any number of
processes, admit exactly 10. A lease expires ``lease_s`` after it was taken, so the slots
of a process killed mid-request come back by themselves.

Redis unreachable (or too slow: the client's 0.5 s timeout): each process admits alone,
with the tier's limits divided by the number of live processes it last saw (a heartbeat
every process leaves in Redis), and asks Redis again a second later. No request fails
because Redis did; the fleet is exact again with the first script that runs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sincere.backends.memory.limits import WINDOW_S, InProcessLimiter
from sincere.backends.redis import DEFAULT_PREFIX
from sincere.config import TierLimits
from sincere.errors import ErrorContext
from sincere.tiers.limits import concurrency_reached, rate_reached

log = logging.getLogger("sincere.backends.redis")

RETRY_AFTER_DOWN_S = 1.0  # how long a process admits alone before it asks Redis again
HEARTBEAT_S = 15.0  # a process that took no slot for this long no longer counts as live

# KEYS: window, leases, processes. ARGV: window ms, per minute, concurrent, lease ms,
# request id, process id, heartbeat ms. Returns {verdict, wait ms, live processes}:
# 0 admitted, 1 the per-minute limit (wait: until the oldest leaves), 2 concurrency.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[7]), ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local live = redis.call('ZCARD', KEYS[3])
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[7]))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {1, tonumber(oldest[2]) + window - now, live}
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  return {2, 0, live}
end
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('PEXPIRE', KEYS[1], window)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[5])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]))
return {0, 0, live}
"""


class RedisLimiter:
    """``ports.Limiter`` shared by every process on one Redis (and ``prefix``)."""

    def __init__(
        self,
        redis: Redis,
        tiers: Mapping[str, TierLimits],
        *,
        prefix: str = DEFAULT_PREFIX,
        lease_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._tiers = tiers
        self._prefix = prefix
        self._lease_ms = int(lease_s * 1000)
        self._clock = clock
        self._script = redis.register_script(_ADMIT)
        self._process = os.urandom(8).hex()
        self.live_processes = 1  # as last seen in Redis
        self._down_until = 0.0
        self._alone: InProcessLimiter | None = None
        self.last_error: str | None = None

    @asynccontextmanager
    async def admit(self, user_id: str, tier: str, context: ErrorContext) -> AsyncIterator[None]:
        """Hold one slot for the block, or raise RateLimited on entering; leaving the block
        (however it is left) gives the slot back."""
        if self._clock() >= self._down_until:
            slot = os.urandom(12).hex()
            if await self._take(user_id, tier, context, slot):
                try:
                    yield
                finally:
                    await self._give_back(user_id, slot)
                return
        async with self._alone_limiter().admit(user_id, tier, context):
            yield

    async def _take(self, user_id: str, tier: str, context: ErrorContext, slot: str) -> bool:
        """True when Redis gave the slot; False when Redis could not be asked (admit alone)."""
        limits = self._tiers[tier]
        keys = [f"{self._prefix}limits:{user_id}:{part}" for part in ("window", "leases")]
        keys.append(f"{self._prefix}limits:processes")
        args: list[str | int] = [
            int(WINDOW_S * 1000),
            limits.requests_per_minute,
            limits.concurrent_requests,
            self._lease_ms,
            slot,
            self._process,
            int(HEARTBEAT_S * 1000),
        ]
        try:
            verdict, wait_ms, live = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._went_down(exc)
            return False
        if self._alone is not None or live != self.live_processes:
            self._alone = None  # Redis is back, or the fleet changed: a new share next time
        self.live_processes = max(1, int(live))
        if verdict == 1:
            raise rate_reached(tier, limits, context, int(wait_ms) / 1000)
        if verdict == 2:
            raise concurrency_reached(tier, limits, context)
        return True

    async def _give_back(self, user_id: str, slot: str) -> None:
        try:
            await self._redis.zrem(f"{self._prefix}limits:{user_id}:leases", slot)
        except (RedisError, OSError) as exc:
            # The lease expires by itself (lease_s): the slot is back then at the latest.
            self._went_down(exc)

    def _went_down(self, exc: BaseException) -> None:
        self.last_error = type(exc).__name__
        if self._clock() >= self._down_until:
            log.warning("Redis is unreachable for limits (%s): admitting alone", type(exc).__name__)
        self._down_until = self._clock() + RETRY_AFTER_DOWN_S

    def _alone_limiter(self) -> InProcessLimiter:
        """This process's share of each tier's limits while Redis cannot be asked."""
        if self._alone is None:
            n = self.live_processes
            share = {
                name: limits.model_copy(
                    update={
                        "requests_per_minute": max(1, limits.requests_per_minute // n),
                        "concurrent_requests": max(1, limits.concurrent_requests // n),
                    }
                )
                for name, limits in self._tiers.items()
            }
            self._alone = InProcessLimiter(share, self._clock)
        return self._alone
