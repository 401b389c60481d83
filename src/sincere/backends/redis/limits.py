"""Per-user tier limits for a fleet: exact across processes, on Redis.

One Lua script checks and takes both limits atomically: the requests of the last minute
are a sorted set of their times (a sliding window, as in one process), the running
requests a sorted set of slots scored by when each expires. A slot's holder renews it
while its request runs (every ``lease_s / 5``), so the slot of a process killed mid-request
is free again within ``lease_s``, however long a stream lasts.

Times are the Redis server's (``TIME`` in the script): one clock for every process and
host, where clients' clocks would skew and monotonic clocks are not comparable at all.

While Redis cannot be reached, each process enforces its share of the limits (the limit
divided by the processes last seen alive: each process renews a heartbeat with its slots;
one that never reached Redis counts itself alone) in memory. A Redis error never fails a
request: a request waits on Redis at most ``COMMAND_TIMEOUT_S``, and after a failure none
asks it for ``RETRY_REDIS_S``; limits are exact again within that of Redis answering.

Admissions and releases go in the process's round trips (``trips.RoundTrips``): the
admissions asked for meanwhile are decided by one script call, the slots freed meanwhile
removed in the same pipeline before them, so a slot freed here is free for every later
admission. A request waits for its release (the next request of its client may go to any
process), but one stopped while it waits cannot take the release back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from sincere.backends.memory.limits import (
    WINDOW_S,
    InProcessLimiter,
    concurrency_refusal,
    per_minute_refusal,
)
from sincere.backends.redis import COMMAND_TIMEOUT_S, DEFAULT_PREFIX
from sincere.backends.redis.trips import Command, RoundTrips, Staged
from sincere.config import TierLimits
from sincere.errors import ErrorContext

log = logging.getLogger(__name__)

LEASE_S = 10.0  # a slot (or a process's heartbeat) not renewed for this long is gone
RETRY_REDIS_S = 1.0  # after a Redis error, requests are limited here for this long

# Every time is the server's unless the caller passes one (ARGV[1] empty: the server's).
_NOW = """
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# KEYS: per admission, the user's window and the user's slots. ARGV: now, window, lease,
# then per admission: per minute, concurrent, the new slot's id. Decides each admission in
# order; returns per admission {verdict, seconds until the window has room}.
_TAKE = (
    _NOW
    + """
local window, lease = tonumber(ARGV[2]), tonumber(ARGV[3])
local stamp, expiry = string.format('%.6f', now), string.format('%.6f', now + lease)
local past = string.format('%.6f', now - window)
local users = {}  -- per user in this batch: {requests in the window, slots, slots key, taken}
local out = {}
for i = 1, #KEYS, 2 do
  local w, slots, a = KEYS[i], KEYS[i + 1], 4 + (i - 1) / 2 * 3
  local per_minute, concurrent, id = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2]
  local u = users[w]
  if not u then
    redis.call('ZREMRANGEBYSCORE', w, '-inf', past)
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', stamp)
    u = {redis.call('ZCARD', w), redis.call('ZCARD', slots), slots, false}
    users[w] = u
  end
  if u[1] >= per_minute then
    local oldest = redis.call('ZRANGE', w, 0, 0, 'WITHSCORES')
    out[#out + 1] = 'per_minute'
    out[#out + 1] = tostring(tonumber(oldest[2]) + window - now)
  elseif u[2] >= concurrent then
    out[#out + 1] = 'concurrent'
    out[#out + 1] = '0'
  else
    redis.call('ZADD', w, stamp, id)
    redis.call('ZADD', slots, expiry, id)
    u[1], u[2], u[4] = u[1] + 1, u[2] + 1, true
    out[#out + 1] = 'admitted'
    out[#out + 1] = '0'
  end
end
for w, u in pairs(users) do
  if u[4] then
    redis.call('PEXPIRE', w, math.ceil(window * 1000))
    redis.call('PEXPIRE', u[3], math.ceil(lease * 1000))
  end
end
return out
"""
)

# KEYS: the live processes, then the slots of each user with slots held here. ARGV: now,
# lease, this process's id, then per user the number of its slots and their ids.
# Renews them (XX: a slot released meanwhile stays released). Returns the live processes.
_RENEW = (
    _NOW
    + """
local lease = tonumber(ARGV[2])
local expiry = string.format('%.6f', now + lease)
local ttl = math.ceil(lease * 1000)
redis.call('ZADD', KEYS[1], expiry, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], ttl)
local i = 4
for k = 2, #KEYS do
  local n = tonumber(ARGV[i])
  for j = i + 1, i + n do
    redis.call('ZADD', KEYS[k], 'XX', expiry, ARGV[j])
  end
  redis.call('PEXPIRE', KEYS[k], ttl)
  i = i + n + 1
end
return redis.call('ZCARD', KEYS[1])
"""
)


class RedisLimiter:
    """``ports.Limiter`` for a fleet. ``clock`` (unix seconds) replaces the server's time;
    tests pass one to move time by hand, every process of a test the same one. The first
    ``admit`` (or ``start``) starts the heartbeat; ``aclose`` stops it."""

    def __init__(
        self,
        redis: Redis,
        tiers: Mapping[str, TierLimits],
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] | None = None,
        lease_s: float = LEASE_S,
        trips: RoundTrips | None = None,
    ) -> None:
        self._redis = redis
        self._tiers = tiers
        self._prefix = prefix + "limits:"
        self._clock = clock
        self._local_clock = clock or time.monotonic
        self._lease_s = lease_s
        # Admissions and releases go in the process's shared round trips (a limiter alone
        # makes its own).
        self._owns_trips = trips is None
        self._trips = RoundTrips(redis) if trips is None else trips
        self._take_sha = self._trips.script(_TAKE)
        self._trips.join(self)
        self._renew_script = redis.register_script(_RENEW)
        self._process = uuid.uuid4().hex  # this process in the count of live ones
        self._held: dict[str, set[str]] = {}  # user -> ids of the slots held here
        self._live = 1  # processes alive when Redis last answered
        self._redis_unused_until = -math.inf  # local clock: Redis failed, not retried before
        self._fallback = InProcessLimiter(_Share(tiers, self), clock=self._local_clock)
        self._heartbeat: asyncio.Task[None] | None = None
        self._unreleased: dict[str, list[str]] = {}  # user -> slots freed, not yet in Redis
        self._unreleased_done: asyncio.Future[None] | None = None  # set when they are
        self._asked: list[_Admission] = []  # admissions waiting for the next round trip
        self._releasing: asyncio.Future[None] | None = None  # the releases on their way

    @property
    def live_processes(self) -> int:
        """The processes sharing the limits, as last seen on Redis."""
        return self._live

    @asynccontextmanager
    async def admit(self, user_id: str, tier: str, context: ErrorContext) -> AsyncIterator[None]:
        """Hold one slot for the block, or raise RateLimited on entering; leaving the block,
        however it is left, releases the slot (or, if Redis is gone, lets it expire)."""
        self.start()
        slot = await self._take(user_id, tier, context)
        if slot is None:  # Redis is unreachable: this process's share, in memory
            async with self._fallback.admit(user_id, tier, context):
                yield
            return
        try:
            yield
        finally:
            await self._release(user_id, slot)

    def start(self) -> None:
        """Start renewing this process's heartbeat and slots (done by the first ``admit``)."""
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def renew(self) -> None:
        """Count this process as alive and keep its slots from expiring, once."""
        keys = [self._prefix + "processes"]
        args: list[str | float] = [self._now_arg(), self._lease_s, self._process]
        for user, slots in list(self._held.items()):
            keys.append(self._slots_key(user))
            args += [len(slots), *slots]
        try:
            live = await self._ask(self._renew_script, keys, args)
        except (RedisError, TimeoutError):
            self._redis_failed("renewing the limiter's slots")
            return
        self._live = max(1, int(live))
        self._redis_unused_until = -math.inf  # Redis answers: exact limits again

    async def aclose(self) -> None:
        """Stop the heartbeat; this process stops counting as alive."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        await self.released()  # bounded: each round trip is
        if self._owns_trips:
            await self._trips.aclose()
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                await self._redis.zrem(self._prefix + "processes", self._process)
        except (RedisError, TimeoutError):
            log.info("leaving the live processes failed: this one expires within the lease")

    async def _beat(self) -> None:
        while True:
            await self.renew()
            await asyncio.sleep(self._lease_s / 5)

    async def _take(self, user_id: str, tier: str, context: ErrorContext) -> str | None:
        """The new slot's id; None when Redis cannot be asked (then the fallback decides)."""
        if self._local_clock() < self._redis_unused_until:
            return None
        limits = self._tiers[tier]
        slot = uuid.uuid4().hex
        asked = _Admission(user_id, limits, slot, asyncio.get_running_loop().create_future())
        self._asked.append(asked)
        self._trips.wake()
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                verdict, value = await asyncio.shield(asked.decided)
        except (RedisError, OSError, TimeoutError):
            # A slot Redis gives it later anyway is freed at once.
            asked.decided.add_done_callback(lambda _: self._free_if_taken(asked))
            self._redis_failed("taking a tier limit slot")
            return None
        except asyncio.CancelledError:  # stopped while it waited: the same
            asked.decided.add_done_callback(lambda _: self._free_if_taken(asked))
            raise
        if verdict == b"per_minute":
            raise per_minute_refusal(tier, limits, float(value), context)
        if verdict == b"concurrent":
            raise concurrency_refusal(tier, limits, context)
        self._held.setdefault(user_id, set()).add(slot)
        return slot

    async def _release(self, user_id: str, slot: str) -> None:
        """Free a slot, in the next round trip (with every other slot freed meanwhile). A
        request stopped while it waits (even at every await) does not take its release
        back; a release that fails expires within the lease."""
        held = self._held.get(user_id, set())
        held.discard(slot)  # no longer renewed: it expires within the lease whatever happens
        if not held:
            self._held.pop(user_id, None)
        with contextlib.suppress(TimeoutError):  # still queued: written when Redis answers
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                await asyncio.shield(self._queue_release(user_id, slot))

    def _queue_release(self, user_id: str, slot: str) -> asyncio.Future[None]:
        """Queue a slot's release; the future is done once its round trip is."""
        if self._unreleased_done is None:
            self._unreleased_done = asyncio.get_running_loop().create_future()
        self._unreleased.setdefault(user_id, []).append(slot)
        self._trips.wake()
        return self._unreleased_done

    def stage(self, commands: list[Command]) -> Staged | None:
        """The releases waiting, then the admissions (a part of ``RoundTrips``): a slot
        freed here is free for every admission after it, here or in another process."""
        released, self._unreleased = self._unreleased, {}
        done, self._unreleased_done = self._unreleased_done, None
        self._releasing = done
        for user_id, slots in released.items():
            commands.append(("ZREM", self._slots_key(user_id), *slots))
        asked, self._asked = self._asked, []
        if asked:
            keys: list[str] = []
            args: list[str | float] = [self._now_arg(), WINDOW_S, self._lease_s]
            for one in asked:
                keys += (self._prefix + f"window:{one.user_id}", self._slots_key(one.user_id))
                limits = one.limits
                args += (limits.requests_per_minute, limits.concurrent_requests, one.slot)
            commands.append(("EVALSHA", self._take_sha, len(keys), *keys, *args))
        if not released and not asked:
            return None
        return lambda replies: self._decided(done, asked, replies)

    def _decided(
        self,
        released: asyncio.Future[None] | None,
        asked: list[_Admission],
        replies: Sequence[Any] | BaseException,
    ) -> None:
        if released is not None and not released.done():
            if isinstance(replies, BaseException):
                log.info("releasing tier limit slots failed: they expire within the lease")
            released.set_result(None)
        if not asked:
            return
        reply = replies if isinstance(replies, BaseException) else replies[-1]
        if isinstance(reply, NoScriptError):  # Redis forgot the script: the next trip has it
            self._asked[:0] = asked
            self._trips.wake()
            return
        for i, one in enumerate(asked):
            if one.decided.done():
                continue
            if isinstance(reply, BaseException):
                one.decided.set_exception(reply)
            else:
                one.decided.set_result((reply[2 * i], reply[2 * i + 1]))

    def _free_if_taken(self, asked: _Admission) -> None:
        decided = asked.decided
        if decided.cancelled() or decided.exception() is not None:
            return
        if decided.result()[0] == b"admitted":
            self._queue_release(asked.user_id, asked.slot)

    async def released(self) -> None:
        """Wait until every slot released so far is free in Redis (or given up on)."""
        for done in (self._releasing, self._unreleased_done):
            if done is not None:
                await asyncio.shield(done)

    @staticmethod
    async def _ask(script: AsyncScript, keys: list[str], args: list[str | float]) -> Any:
        """Run ``script``, waiting at most ``COMMAND_TIMEOUT_S`` in all."""
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            try:
                return await script(keys=keys, args=args)
            except RedisConnectionError:
                # A pooled connection that Redis closed (it restarted): the client does not
                # retry that; once more, on a new connection.
                return await script(keys=keys, args=args)

    def _redis_failed(self, doing: str) -> None:
        log.warning(
            "Redis did not answer %s: limits are this process's share of them for now", doing
        )
        self._redis_unused_until = self._local_clock() + RETRY_REDIS_S

    def _now_arg(self) -> str | float:
        return "" if self._clock is None else self._clock()

    def _slots_key(self, user_id: str) -> str:
        return self._prefix + f"slots:{user_id}"


@dataclass(slots=True)
class _Admission:
    """One request's ask for a slot, and Redis's verdict on it."""

    user_id: str
    limits: TierLimits
    slot: str
    decided: asyncio.Future[tuple[bytes, bytes]]


class _Share(Mapping[str, TierLimits]):
    """Each tier's limits divided among the live processes: the fleet's total while Redis
    is gone stays within the limit (unless a limit is smaller than the count of processes)."""

    def __init__(self, tiers: Mapping[str, TierLimits], limiter: RedisLimiter) -> None:
        self._tiers = tiers
        self._limiter = limiter

    def __getitem__(self, tier: str) -> TierLimits:
        limits, live = self._tiers[tier], self._limiter.live_processes
        return limits.model_copy(
            update={
                "requests_per_minute": max(1, limits.requests_per_minute // live),
                "concurrent_requests": max(1, limits.concurrent_requests // live),
            }
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._tiers)

    def __len__(self) -> int:
        return len(self._tiers)
