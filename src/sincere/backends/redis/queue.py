"""Admission queues for a fleet: a deployment's capacity shared by every process, on Redis.

The same order as one process's queues (``sincere.tiers.queue``: tier with aging, then
the least-served user, then the user holding fewer slots, then arrival), decided by Lua
scripts on Redis's clock, so that every process sees one queue and one count of busy
slots. Waiting requests and held slots are leases renewed by their process (a killed
process's places and slots are gone within ``LEASE_S``). A process polls the queue for its
waiting requests every ``POLL_S``: their places, and the slots given to them.

An embedded deployment runs in each process (its own model), so its queue stays in the
process. While Redis cannot be reached, a request queues in its process for that
process's share of the capacity (capacity ÷ the processes last seen alive, at least 1);
a request already waiting on Redis keeps waiting for it, within its bound.

Estimates come from the service times this process measured on the deployment, with the
fleet's busy slots and how long each has run (from the poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sincere.backends.redis import DEFAULT_PREFIX
from sincere.config import Settings
from sincere.context import RequestContext
from sincere.errors import AtCapacity
from sincere.tiers.queue import (
    TIER_RANK,
    AdmissionQueues,
    QueueStatus,
    QueueView,
    at_capacity,
    queue_timeout,
)
from sincere.tiers.service_times import UNKNOWN, Calibration, ServiceTimes

log = logging.getLogger(__name__)

LEASE_S = 10.0  # a place or a slot not renewed for this long is gone (its process died)
POLL_S = 0.05  # how often a process with waiting requests asks for their places
RENEW_S = LEASE_S / 5  # how often a process holding slots (only) renews them
RETRY_REDIS_S = 1.0  # after a Redis error, new requests queue here for this long

# Shared by the scripts: the time, dropping lapsed leases, the order and the dispatch.
# Keys: 1 waiting (hash id -> rank|tier|enqueued|seq|user), 2 waiting leases (zset),
# 3 serving leases (zset), 4 serving (hash id -> granted|charged|user), 5 counters
# (hash user -> slot-seconds), 6 outstanding (hash user -> requests), 7 facts (hash:
# seq, mean). ARGV[1]: now ('' for the server's), ARGV[2]: capacity, ARGV[3]: lease,
# ARGV[4]: aging.
_COMMON = """
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local capacity, lease, aging = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local W, WL, S, SH, C, N, F = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]

-- A waiting request: rank|tier|enqueued|seq|user; a held slot: granted|charged|user. The
-- user (tier:user id) comes last, whole: a user id may hold any character.
local function waiter(s)
  local rank, tier, enq, seq, user = string.match(s, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  return {rank = tonumber(rank), tier = tier, enq = tonumber(enq), seq = tonumber(seq),
    user = user}
end

local function holder(s)
  local granted, charged, user = string.match(s, '^([^|]*)|([^|]*)|(.*)$')
  return {granted = tonumber(granted), charged = tonumber(charged), user = user}
end

local function done(user)
  local left = redis.call('HINCRBY', N, user, -1)
  if left <= 0 then
    redis.call('HDEL', N, user)
    redis.call('HDEL', C, user)
  end
end

local function purge()
  local stamp = string.format('%.6f', now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', WL, '-inf', stamp)) do
    local w = redis.call('HGET', W, id)
    redis.call('ZREM', WL, id)
    if w then
      redis.call('HDEL', W, id)
      done(waiter(w).user)
    end
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', S, '-inf', stamp)) do
    local s = redis.call('HGET', SH, id)
    redis.call('ZREM', S, id)
    if s then
      redis.call('HDEL', SH, id)
      done(holder(s).user)
    end
  end
end

local function mean()
  return tonumber(redis.call('HGET', F, 'mean'))
end

-- The waiting requests in the order they will be let through (tiers.queue.order).
local function order()
  local lines, users = {}, {}
  local flat = redis.call('HGETALL', W)
  for i = 1, #flat, 2 do
    local w = waiter(flat[i + 1])
    local user = w.user
    local item = {id = flat[i], rank = w.rank, enq = w.enq, seq = w.seq}
    if not lines[user] then
      lines[user] = {}
      users[#users + 1] = user
    end
    table.insert(lines[user], item)
  end
  local held = {}
  for _, s in ipairs(redis.call('HVALS', SH)) do
    local user = holder(s).user
    held[user] = (held[user] or 0) + 1
  end
  local counters, heads = {}, {}
  for _, user in ipairs(users) do
    table.sort(lines[user], function(a, b) return a.seq < b.seq end)
    counters[user] = tonumber(redis.call('HGET', C, user)) or 0
    heads[user] = 1
    held[user] = held[user] or 0
  end
  local turn = mean() or 1.0
  local function key(user)
    local head = lines[user][heads[user]]
    local rank = math.max(0, head.rank - math.floor((now - head.enq) / aging))
    return rank, counters[user], held[user], head.seq
  end
  local out = {}
  while true do
    local best, br, bc, bh, bs = nil, 0, 0, 0, 0
    for _, user in ipairs(users) do
      if lines[user][heads[user]] then
        local r, c, h, s = key(user)
        if best == nil or r < br or (r == br and (c < bc or (c == bc and (h < bh or
            (h == bh and s < bs))))) then
          best, br, bc, bh, bs = user, r, c, h, s
        end
      end
    end
    if best == nil then break end
    out[#out + 1] = lines[best][heads[best]]
    heads[best] = heads[best] + 1
    counters[best] = counters[best] + turn
    held[best] = held[best] + 1
  end
  return out
end

local function grant(item)
  local user = waiter(redis.call('HGET', W, item.id)).user
  local charge = mean() or 0
  redis.call('HDEL', W, item.id)
  redis.call('ZREM', WL, item.id)
  redis.call('ZADD', S, string.format('%.6f', now + lease), item.id)
  redis.call('HSET', SH, item.id, string.format('%.6f', now) .. '|' ..
    string.format('%.6f', charge) .. '|' .. user)
  redis.call('HINCRBYFLOAT', C, user, charge)
end

local function dispatch()
  while redis.call('ZCARD', S) < capacity and redis.call('HLEN', W) > 0 do
    grant(order()[1])
  end
end

local function expire_all()
  local ttl = math.ceil(lease * 3000)
  for _, k in ipairs({W, WL, S, SH, C, N, F}) do redis.call('PEXPIRE', k, ttl) end
end
"""

# ARGV[5..]: id, rank, tier, user, queueing (1/0). Returns {granted (1/0/-1 refused),
# waiting, serving, its place (0 when granted), then how long each busy slot has been
# held}.
_ENTER = (
    _COMMON
    + """
purge()
local id, rank, user, queueing = ARGV[5], ARGV[6], ARGV[8], ARGV[9] == '1'
local full = redis.call('ZCARD', S) >= capacity or redis.call('HLEN', W) > 0
local function answer(verdict, position)
  local out = {verdict, redis.call('HLEN', W), redis.call('ZCARD', S), position}
  for _, s in ipairs(redis.call('HVALS', SH)) do
    out[#out + 1] = string.format('%.6f', now - holder(s).granted)
  end
  return out
end
if full and not queueing then
  return answer(-1, 0)
end
if redis.call('HEXISTS', N, user) == 0 then
  -- Lifted to the least counter of those waiting in its tier: no banked credit.
  local least = nil
  for _, w in ipairs(redis.call('HVALS', W)) do
    local p = waiter(w)
    if p.tier == ARGV[7] then
      local c = tonumber(redis.call('HGET', C, p.user)) or 0
      if least == nil or c < least then least = c end
    end
  end
  redis.call('HSET', C, user, string.format('%.6f', least or 0))
end
redis.call('HINCRBY', N, user, 1)
local seq = redis.call('HINCRBY', F, 'seq', 1)
redis.call('HSET', W, id, rank .. '|' .. ARGV[7] .. '|' .. string.format('%.6f', now) ..
  '|' .. seq .. '|' .. user)
redis.call('ZADD', WL, string.format('%.6f', now + lease), id)
local granted, position = 0, 0
if not full then
  grant({id = id})
  granted = 1
else
  for i, item in ipairs(order()) do
    if item.id == id then position = i end
  end
end
expire_all()
return answer(granted, position)
"""
)

# ARGV[5..]: ids of this process's waiting requests and held slots. Renews their leases,
# lets through whom the free slots go to; returns {waiting, serving, #running, running
# elapsed..., then per id: position (0: it holds a slot, -1: gone)}.
_POLL = (
    _COMMON
    + """
purge()
local stamp = string.format('%.6f', now + lease)
for i = 5, #ARGV do
  redis.call('ZADD', WL, 'XX', stamp, ARGV[i])
  redis.call('ZADD', S, 'XX', stamp, ARGV[i])
end
dispatch()
local places = {}
for i, item in ipairs(order()) do places[item.id] = i end
local out = {redis.call('HLEN', W), redis.call('ZCARD', S)}
local running = redis.call('HVALS', SH)
out[#out + 1] = #running
for _, s in ipairs(running) do
  out[#out + 1] = string.format('%.6f', now - holder(s).granted)
end
for i = 5, #ARGV do
  local id = ARGV[i]
  if places[id] then
    out[#out + 1] = places[id]
  elseif redis.call('HEXISTS', SH, id) == 1 then
    out[#out + 1] = 0
  else
    out[#out + 1] = -1
  end
end
expire_all()
return out
"""
)

# ARGV[5..]: id, served (1/0). Frees its slot (its service time corrects its user's
# counter, and a served one moves the mean) or its place; lets the next through.
# Returns the seconds it held the slot ('' for a place given up).
_LEAVE = (
    _COMMON
    + """
purge()
local id, served = ARGV[5], ARGV[6] == '1'
local held = ''
local s = redis.call('HGET', SH, id)
if s then
  local p = holder(s)
  local user = p.user
  local seconds = now - p.granted
  held = string.format('%.6f', seconds)
  redis.call('HDEL', SH, id)
  redis.call('ZREM', S, id)
  redis.call('HINCRBYFLOAT', C, user, string.format('%.6f', seconds - p.charged))
  if served then
    local m = mean()
    m = m and (m * 0.9 + seconds * 0.1) or seconds
    redis.call('HSET', F, 'mean', string.format('%.6f', m))
  end
  done(user)
else
  local w = redis.call('HGET', W, id)
  if w then
    redis.call('HDEL', W, id)
    redis.call('ZREM', WL, id)
    done(waiter(w).user)
  end
end
dispatch()
expire_all()
return held
"""
)


@dataclass
class _Shared:
    """What this process last learned of one deployment's fleet-wide queue."""

    queued: int = 0
    serving: int = 0
    running: tuple[float, ...] = ()  # seconds each busy slot has been held


@dataclass(eq=False)
class _Place:
    """One of this process's requests on a deployment's Redis queue."""

    id: str
    user: str
    tier: str
    enqueued: float  # local monotonic
    position: int = 0  # 0: holds a slot; -1: gone (its lease lapsed)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    predicted_s: float | None = None


class _Fleet:
    """One deployment's queue on Redis, as this process takes part in it."""

    def __init__(self, owner: RedisAdmissionQueues, name: str, capacity: int) -> None:
        self.owner = owner
        self.name = name
        self.capacity = capacity
        self.times = ServiceTimes()
        self.calibration = Calibration()
        self.shared = _Shared()
        base = f"{owner.prefix}q:{name}:"
        self.keys = [base + part for part in ("w", "wl", "s", "sh", "c", "n", "f")]
        self.places: dict[str, _Place] = {}  # this process's, waiting or holding a slot
        self._poller: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return self.shared.queued

    @property
    def serving(self) -> int:
        return self.shared.serving

    def argv(self, *more: object) -> list[object]:
        return [self.owner.now(), self.capacity, self.owner.lease_s, self.owner.aging_s, *more]

    def status(self, place: _Place, *, dequeued: bool = False) -> QueueStatus:
        waited = time.monotonic() - place.enqueued
        if dequeued:
            return QueueStatus(
                deployment=self.name,
                tier=place.tier,
                position=0,
                ahead=0,
                queued=self.shared.queued,
                serving=self.shared.serving,
                capacity=self.capacity,
                waited_s=waited,
                estimate=UNKNOWN,
                dequeued=True,
            )
        estimate = self.times.wait(place.position, self.shared.running, self.capacity)
        if place.predicted_s is None:
            place.predicted_s = estimate.queue_p50_s
        return QueueStatus(
            deployment=self.name,
            tier=place.tier,
            position=place.position,
            ahead=place.position - 1,
            queued=self.shared.queued,
            serving=self.shared.serving,
            capacity=self.capacity,
            waited_s=waited,
            estimate=self.calibration.apply(place.user, place.tier, estimate),
        )

    def watch(self) -> None:
        """Poll while this process has places or slots here."""
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop())

    async def _poll_loop(self) -> None:
        failed = False
        while self.places:
            waiting = any(p.position != 0 for p in self.places.values())
            await asyncio.sleep(POLL_S if waiting and not failed else RENEW_S)
            try:
                await self.poll()
            except (RedisError, OSError, TimeoutError):
                if not failed:
                    log.warning("polling the queue of %s failed", self.name, exc_info=True)
                failed = True
            else:
                failed = False

    async def poll(self) -> None:
        ids = list(self.places)
        if not ids:
            return
        reply = await self.owner.call(self.owner.poll_script, self, *ids)
        self.shared.queued, self.shared.serving = int(reply[0]), int(reply[1])
        count = int(reply[2])
        self.shared.running = tuple(float(x) for x in reply[3 : 3 + count])
        for id_, position in zip(ids, reply[3 + count :], strict=True):
            place = self.places.get(id_)
            if place is not None and place.position != int(position):
                place.position = int(position)
                place.changed.set()

    def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()


class RedisSlot:
    """A hold on a fleet deployment for one attempt (``tiers.queue.Slot``'s contract)."""

    def __init__(self, fleet: _Fleet, ctx: RequestContext, max_wait_s: float) -> None:
        self._fleet = fleet
        self._ctx = ctx
        self._max_wait_s = max_wait_s
        self._place: _Place | None = None
        self._queued = False
        self._served = False
        self.waited_s = 0.0

    async def __aenter__(self) -> RedisSlot:
        return self  # entered by RedisAdmissionQueues.enter

    async def enter(self) -> None:
        """Take a place (or a free slot) on Redis; ``AtCapacity`` when full and queueing
        is off."""
        fleet, ctx = self._fleet, self._ctx
        tier = str(ctx.tier)
        place = _Place(uuid.uuid4().hex, f"{tier}:{ctx.user_id}", tier, time.monotonic())
        queueing = "1" if fleet.owner.queueing() else "0"
        rank = TIER_RANK[ctx.tier]
        owner = fleet.owner
        entering = asyncio.ensure_future(
            owner.call(owner.enter_script, fleet, place.id, rank, tier, place.user, queueing)
        )
        try:
            reply = await asyncio.shield(entering)
        except asyncio.CancelledError:  # stopped meanwhile: what it took is given back
            entering.add_done_callback(lambda _: owner.forget(fleet, place.id))
            raise
        verdict, fleet.shared.queued, fleet.shared.serving = (int(x) for x in reply[:3])
        fleet.shared.running = tuple(float(x) for x in reply[4:])
        if verdict < 0:
            wait = fleet.times.wait(1 + fleet.shared.queued, fleet.shared.running, fleet.capacity)
            raise at_capacity(fleet.name, fleet.capacity, wait)
        place.position = int(reply[3]) if verdict == 0 else 0
        self._queued = verdict == 0
        self._place = place
        fleet.places[place.id] = place
        fleet.watch()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        place, fleet = self._place, self._fleet
        if place is None:
            return
        fleet.places.pop(place.id, None)
        try:
            held = await fleet.owner.call(
                fleet.owner.leave_script, fleet, place.id, int(self._served), shield=True
            )
        except (RedisError, OSError, TimeoutError):
            return  # its lease lapses within LEASE_S
        if held not in (b"", "") and self._served:
            fleet.times.add(float(held))

    async def waiting(self, budget_s: float | None = None) -> AsyncIterator[QueueStatus]:
        fleet, ctx, place = self._fleet, self._ctx, self._place
        assert place is not None
        if not self._queued:
            self._served = True
            return
        budget = self._max_wait_s if budget_s is None else budget_s
        deadline = place.enqueued + max(0.0, min(budget, ctx.remaining()))
        announced = 0
        while place.position != 0:
            place.changed.clear()
            if place.position < 0:
                raise queue_timeout(fleet.name, fleet.capacity, fleet.status(place))
            if place.position != announced:
                announced = place.position
                status = fleet.status(place)
                status.announce(ctx)
                yield status
            left = deadline - time.monotonic()
            if left <= 0:
                status = fleet.status(place)
                self.waited_s = status.waited_s
                raise queue_timeout(fleet.name, fleet.capacity, status)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(place.changed.wait(), left)
        status = fleet.status(place, dequeued=True)
        if place.predicted_s is not None:
            fleet.calibration.record(place.user, place.tier, place.predicted_s, status.waited_s)
        self.waited_s = status.waited_s
        self._served = True
        status.announce(ctx)
        yield status


class RedisAdmissionQueues:
    """The admission queues of a fleet: deployments with a ``max_concurrency`` on Redis,
    embedded ones in this process (each process runs its own model)."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        *,
        prefix: str = DEFAULT_PREFIX,
        queueing: Callable[[], bool] = lambda: True,
        live_processes: Callable[[], int] = lambda: 1,
        clock: Callable[[], float] | None = None,
        lease_s: float = LEASE_S,
    ) -> None:
        self._redis = redis
        self.prefix = prefix
        self.queueing = queueing
        self._live = live_processes
        self._clock = clock
        self.lease_s = lease_s
        self.aging_s = settings.defaults.queue_aging_s
        self._max_wait = {name: t.max_queue_wait_s for name, t in settings.tiers.items()}
        self._local = AdmissionQueues(settings, queueing=queueing)  # embedded, and fallback
        self._fleet = {
            d.name: _Fleet(self, d.name, d.capacity)
            for d in settings.deployments
            if d.capacity is not None and d.provider != "embedded"
        }
        self.enter_script = redis.register_script(_ENTER)
        self.poll_script = redis.register_script(_POLL)
        self.leave_script = redis.register_script(_LEAVE)
        self._redis_unused_until = -math.inf
        self._forgetting: set[asyncio.Task[None]] = set()

    @property
    def queues(self) -> Mapping[str, QueueView]:
        local = {n: q for n, q in self._local.queues.items() if n not in self._fleet}
        return {**local, **self._fleet}

    def now(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    def measured(self, deployment: str) -> ServiceTimes:
        """The service times this process measured on a fleet deployment."""
        return self._fleet[deployment].times

    def forget(self, fleet: _Fleet, place_id: str) -> None:
        """Give back a place (or slot) taken for a request that stopped before it knew."""
        task = asyncio.get_running_loop().create_task(self._forget(fleet, place_id))
        self._forgetting.add(task)
        task.add_done_callback(self._forgetting.discard)

    async def _forget(self, fleet: _Fleet, place_id: str) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):  # else its lease lapses
            await self.call(self.leave_script, fleet, place_id, 0)

    async def call(self, script: Any, fleet: _Fleet, *args: object, shield: bool = False) -> Any:
        call = script(keys=fleet.keys, args=fleet.argv(*args))
        return await (asyncio.shield(call) if shield else call)

    async def enter(self, ctx: RequestContext, deployment: str) -> Any:
        """A hold on ``deployment`` (entered): raises ``AtCapacity`` when it is full and
        queueing is off."""
        fleet = self._fleet.get(deployment)
        if fleet is not None and time.monotonic() >= self._redis_unused_until:
            slot = RedisSlot(fleet, ctx, self._max_wait[str(ctx.tier)])
            try:
                await slot.enter()
                return slot
            except AtCapacity:
                raise
            except (RedisError, OSError, TimeoutError):
                log.warning("the fleet's queue of %s is unreachable", deployment, exc_info=True)
                self._redis_unused_until = time.monotonic() + RETRY_REDIS_S
        if fleet is not None:  # Redis is unreachable: this process's share, here
            share = self._local.queues.get(deployment)
            if share is not None:
                share.capacity = max(1, fleet.capacity // max(1, self._live()))
        return await self._local.enter(ctx, deployment)

    async def aclose(self) -> None:
        for fleet in self._fleet.values():
            fleet.stop()
        await asyncio.gather(*self._forgetting, return_exceptions=True)
