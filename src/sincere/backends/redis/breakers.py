"""The breakers port on Redis: one circuit per deployment for the whole fleet.

Each deployment's breaker is a hash (``{prefix}breaker:{name}``); every change is one Lua
script, so two processes never both open or close it, nor both claim a probe. Time is
the callers' unix time (hosts keep it in sync with NTP; skew shifts a schedule by that
much, nothing more).

User requests are admitted from a local mirror of the hashes, refreshed every
``SYNC_S`` (a change made elsewhere is seen here within that, plus one round trip), so
admission through a closed circuit costs no round trip. A refusal does: before refusing
on a view older than ``CONFIRM_S`` it reads that hash again (one read shared by the
requests that ask meanwhile), because circuits close fast (an answer, a probe) and a
stale "open" would refuse a deployment the fleet is using again. Successes are counted
in the process and written with its next round trip to Redis (shared with the events and
the limiter), its next call about the deployment, or the mirror's next refresh: one
script call for many answers.
Failures, probe claims and verdicts wait for Redis (at most its 0.5 s command timeout).

Redis down: each process falls back to its own in-process breakers (the single-process
behaviour), starting from the fleet's state as it last saw it (an open circuit stays open
until its probe is due), and no Redis error reaches a request. When Redis answers again,
the fleet's state replaces the local one (what a process learnt alone meanwhile is
dropped: the deployments it saw failing open again fleet-wide after their next failures).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from sincere.backends.memory.breakers import InProcessBreakers
from sincere.backends.redis import COMMAND_TIMEOUT_S, DEFAULT_PREFIX
from sincere.backends.redis.trips import Command, RoundTrips, Staged
from sincere.llm.breaker import (
    SERVED_REASON,
    BreakerAdmission,
    BreakerPolicy,
    BreakerState,
    BreakerTransition,
)
from sincere.ports import BreakerListener, BreakerView

log = logging.getLogger("sincere.breakers")

SYNC_S = 0.25  # how often the mirror is refreshed: a change elsewhere is seen within it
CONFIRM_S = 0.02  # a refusal on a view older than this reads the hash again first
_DOWN = (RedisError, OSError, TimeoutError)

# KEYS[1]: the hash. ARGV: op, now, window, consecutive, ratio, min_calls, open_s,
# fast_probe_for_s, max_open_s, reason, arg (open_for_s or lease_s; "" for none).
# Returns {claimed, moved, state, due, lease, seq, before, after, at, reason, next}; for
# "count" (successes) in a closed circuit, nothing.
_SCRIPT = """
local k = KEYS[1]
local op, now = ARGV[1], tonumber(ARGV[2])
local window, need, ratio = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local min_calls, open_s = tonumber(ARGV[6]), tonumber(ARGV[7])
local fast_for, max_open = tonumber(ARGV[8]), tonumber(ARGV[9])
local reason, arg = ARGV[10], tonumber(ARGV[11])
if op == 'count' then  -- successes; arg: how many (counted by a process since its last write)
  -- The most frequent call, and it never moves a circuit: two fields, nothing returned.
  local state, outcomes = unpack(redis.call('HMGET', k, 'state', 'outcomes'))
  if (state or 'closed') == 'closed' then
    outcomes = (outcomes or '') .. string.rep('1', math.min(arg or 1, window))
    redis.call('HSET', k, 'outcomes', string.sub(outcomes, -window), 'streak', 0)
    return {}
  end
  -- Open meanwhile (another process opened it): they close it, as "success" does.
end
local h = {}
local raw = redis.call('HGETALL', k)
for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
local state = h.state or 'closed'
local outcomes = h.outcomes or ''
local streak, since = tonumber(h.streak or '0'), tonumber(h.since or '0')
local slow, due = tonumber(h.slow or '0'), tonumber(h.due or '0')
local lease, seq = tonumber(h.lease or '0'), tonumber(h.seq or '0')
local forced = h.forced or '0'  -- '1': open for a time it was given (Retry-After, a key)
local t = {h.before or '', h.after or '', h.at or '', h.reason or '', h.next or ''}
local claimed, moved = 0, 0
local function f(x) return string.format('%.6f', x) end  -- tostring keeps 14 digits only

local function move(after, why)
  local nxt = ''
  if after == 'open' then nxt = f(due - now) elseif after == 'half_open' then nxt = '0' end
  t = {state, after, f(now), why, nxt}
  state = after
  seq = seq + 1
  moved = 1
end

local function open(why, given)  -- given: a time the circuit must stay open
  if state == 'closed' then
    since, slow = now, 0
  elseif now - since >= fast_for then
    slow = slow + 1
  end
  local period = math.min(open_s, max_open)
  if now - since >= fast_for and slow > 0 then
    period = math.min(max_open, open_s * 2 ^ slow)
  end
  if given then period = given end
  due = now + period
  forced = given and '1' or '0'
  move('open', why)
end

if op == 'failure' then
  if state == 'closed' then
    outcomes = string.sub(outcomes .. '0', -window)
    streak = streak + 1
    local failures = select(2, string.gsub(outcomes, '0', ''))
    if arg then
      open(reason, arg)
    elseif streak >= need then
      open(streak .. ' calls in a row failed (the last: ' .. reason .. ')')
    elseif #outcomes >= min_calls and failures / #outcomes >= ratio then
      open(failures .. ' of its last ' .. #outcomes .. ' calls failed (the last: ' .. reason .. ')')
    end
  end
elseif op == 'claim' then
  -- Times are stored to the microsecond: a due time is reached within one.
  if (state == 'open' and now >= due - 1e-6) or (state == 'half_open' and now >= lease - 1e-6) then
    claimed = 1
    lease = now + arg
    if state == 'open' then move('half_open', 'its next probe is due') else seq = seq + 1 end
  end
elseif op == 'success' or op == 'count' then  -- answered after the opening
  if state ~= 'closed' and (forced == '0' or now >= due - 1e-6) then
    outcomes, streak = '', 0
    move('closed', reason)
  end
elseif op == 'succeeded' then
  if state ~= 'closed' then
    outcomes, streak = '', 0
    move('closed', reason)
  end
elseif op == 'failed' then
  if state == 'half_open' then open('its probe failed: ' .. reason, arg) end
elseif op == 'release' then
  if state == 'half_open' then lease, seq = 0, seq + 1 end
end

redis.call('HSET', k, 'state', state, 'outcomes', outcomes, 'streak', streak,
  'since', f(since), 'slow', slow, 'due', f(due), 'lease', f(lease),
  'seq', seq, 'before', t[1], 'after', t[2], 'at', t[3], 'reason', t[4], 'next', t[5],
  'forced', forced)
return {claimed, moved, state, f(due), f(lease), seq, t[1], t[2], t[3], t[4], t[5]}
"""


class _Mirror:
    """What this process last read of one deployment's hash: a ``BreakerView``."""

    def __init__(self, deployment: str, wall_clock: Callable[[], float]) -> None:
        self.deployment = deployment
        self._wall_clock = wall_clock
        self.state = BreakerState.CLOSED
        self.due = 0.0
        self.lease = 0.0
        self.seq = 0
        self.transitions: deque[BreakerTransition] = deque(maxlen=100)

    def seconds_until_probe(self) -> float | None:
        if self.state is BreakerState.CLOSED:
            return None
        if self.state is BreakerState.HALF_OPEN:
            return 0.0
        return max(0.0, self.due - self._wall_clock())

    def probe_due(self) -> bool:
        now = self._wall_clock() + 1e-6  # the hash keeps microseconds
        if self.state is BreakerState.OPEN:
            return now >= self.due
        return self.state is BreakerState.HALF_OPEN and now >= self.lease

    def update(self, values: Sequence[Any]) -> BreakerTransition | None:
        """Take the script's (or a read's) values; the transition if it is news here."""
        _, _, state, due, lease, seq, before, after, at, reason, nxt = (_text(v) for v in values)
        if int(seq) < self.seq:
            return None  # a read that started before a change this process made
        self.state, self.due, self.lease = BreakerState(state), float(due), float(lease)
        self.seq = int(seq)
        last = self.transitions[-1] if self.transitions else None
        if not after or (last is not None and (last.at, str(last.after)) == (float(at), after)):
            return None  # no transition yet, or the one already known here
        transition = BreakerTransition(
            self.deployment,
            BreakerState(before),
            BreakerState(after),
            float(at),
            reason,
            float(nxt) if nxt else None,
        )
        self.transitions.append(transition)
        return transition


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_FIELDS = ("state", "due", "lease", "seq", "before", "after", "at", "reason", "next")


class RedisBreakers:
    """``Breakers`` shared by every process on one Redis (see the module's docstring)."""

    def __init__(
        self,
        redis: Redis,
        deployments: Iterable[str],
        policy: BreakerPolicy,
        *,
        prefix: str = DEFAULT_PREFIX,
        wall_clock: Callable[[], float] = time.time,
        sync_s: float = SYNC_S,
        trips: RoundTrips | None = None,
    ) -> None:
        self._redis = redis
        self._policy = policy
        self._prefix = prefix
        self._wall_clock = wall_clock
        self._sync_s = sync_s
        self._mirrors = {name: _Mirror(name, wall_clock) for name in deployments}
        self._local = self._fresh_local()
        self._redis_down = False
        self._listeners: list[BreakerListener] = []
        self._script = redis.register_script(_SCRIPT)
        self._sync: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._successes: dict[str, int] = {}  # successes not written to Redis yet
        self._seen_at: dict[str, float] = {}  # monotonic: when each hash was last read
        self._confirming: dict[str, asyncio.Task[None]] = {}  # a refusal's second look
        self._telling: set[asyncio.Task[None]] = set()  # listeners told of a bulk success
        # With the process's round trips, successes ride with the next one (a request's
        # admission or release: never one of their own), else with the mirror's refresh.
        self._trips = trips
        self._written: asyncio.Future[None] | None = None  # successes on their way
        if trips is not None:
            self._success_sha = trips.script(_SCRIPT)
            trips.join(self)

    @property
    def redis_down(self) -> bool:
        """True while this process runs on its own breakers because Redis did not answer."""
        return self._redis_down

    def names(self) -> Sequence[str]:
        return list(self._mirrors)

    def view(self, deployment: str) -> BreakerView:
        self._ensure_sync()
        if self._redis_down:
            return self._local.view(deployment)
        return self._mirrors[deployment]

    def listen(self, listener: BreakerListener) -> None:
        self._listeners.append(listener)

    async def admit(self, deployment: str) -> BreakerAdmission:
        self._ensure_sync()
        if self._redis_down:
            return await self._local.admit(deployment)
        view = self._mirrors[deployment]
        if view.state is not BreakerState.CLOSED and self._stale(deployment):
            # About to refuse on a view up to SYNC_S old: the circuit may have closed
            # since (an answer or a probe elsewhere). Look again, in one round trip shared
            # by every request that asks meanwhile.
            await self._confirm(deployment)
            if self._redis_down:  # it did not answer: this process's own breakers decide
                return await self._local.admit(deployment)
        if view.state is BreakerState.CLOSED:
            return BreakerAdmission(True)
        return BreakerAdmission(False, retry_after_s=view.seconds_until_probe())

    def _stale(self, deployment: str) -> bool:
        return time.monotonic() - self._seen_at.get(deployment, -math.inf) > CONFIRM_S

    async def _confirm(self, deployment: str) -> None:
        task = self._confirming.get(deployment)
        if task is None or task.done():
            task = asyncio.create_task(self._read_one(deployment))
            self._confirming[deployment] = task
        await asyncio.shield(task)

    async def _read_one(self, deployment: str) -> None:
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                row = await self._redis.hmget(self._key(deployment), *_FIELDS)
        except _DOWN:
            self._went_down()  # the next requests use this process's breakers, not a wait
            return
        self._seen_at[deployment] = time.monotonic()
        if row[0] is not None:
            transition = self._mirrors[deployment].update([0, 0, *row])
            if transition is not None:
                await self._tell(transition)

    async def record_success(self, deployment: str) -> BreakerTransition | None:
        self._ensure_sync()
        if self._redis_down:
            return await self._local.record_success(deployment)
        if self._mirrors[deployment].state is not BreakerState.CLOSED:
            # Answered after an opening: it may close the circuit, so it waits for Redis.
            result = await self._run(deployment, "success", SERVED_REASON)
            if result is None:
                return await self._local.record_success(deployment)
            return result[1]
        # Counted here, written with the process's next round trip (or call about the
        # deployment, or the mirror's refresh): a success in a closed circuit changes no
        # state, and a round trip per answer would cost Redis more than all the rest.
        self._successes[deployment] = self._successes.get(deployment, 0) + 1
        return None

    def stage(self, commands: list[Command]) -> Staged | None:
        """The successes counted since the last write, one script call per deployment
        (a part of ``RoundTrips``)."""
        if not self._successes or self._redis_down:
            return None
        counted, self._successes = self._successes, {}
        for name, count in counted.items():
            args = self._args("count", SERVED_REASON, count)
            commands.append(("EVALSHA", self._success_sha, 1, self._key(name), *args))
        written = self._written = asyncio.get_running_loop().create_future()

        def done(replies: Sequence[Any] | BaseException) -> None:
            written.set_result(None)
            if isinstance(replies, BaseException):
                return  # Redis is down: those successes are not needed any more
            for (name, count), reply in zip(counted.items(), replies, strict=True):
                if isinstance(reply, NoScriptError):  # loaded again for the next trip
                    self._successes[name] = self._successes.get(name, 0) + count
                elif isinstance(reply, list) and reply and reply[1]:  # they closed it
                    self._seen_at[name] = time.monotonic()
                    if (transition := self._mirrors[name].update(reply)) is not None:
                        self._later(self._tell(transition, made_here=True))

        return done

    async def record_failure(
        self, deployment: str, reason: str, open_for_s: float | None = None
    ) -> BreakerTransition | None:
        result = await self._run(deployment, "failure", reason, open_for_s)
        if result is None:
            return await self._local.record_failure(deployment, reason, open_for_s)
        return result[1]

    async def claim_probe(
        self, deployment: str, lease_s: float
    ) -> tuple[bool, BreakerTransition | None]:
        result = await self._run(deployment, "claim", "", lease_s)
        if result is None:
            return await self._local.claim_probe(deployment, lease_s)
        return result

    async def probe_succeeded(
        self, deployment: str, reason: str = "its probe succeeded"
    ) -> BreakerTransition | None:
        result = await self._run(deployment, "succeeded", reason)
        if result is None:
            return await self._local.probe_succeeded(deployment, reason)
        return result[1]

    async def probe_failed(
        self, deployment: str, reason: str, open_for_s: float | None = None
    ) -> BreakerTransition | None:
        result = await self._run(deployment, "failed", reason, open_for_s)
        if result is None:
            return await self._local.probe_failed(deployment, reason, open_for_s)
        return result[1]

    async def release(self, deployment: str) -> None:
        if await self._run(deployment, "release") is None:
            await self._local.release(deployment)

    async def aclose(self) -> None:
        """Stop the mirror after its current round: cancelling redis-py in the middle of a
        command can leave its connection hanging, and each round is bounded anyway."""
        self._closing.set()
        pending = [*self._confirming.values(), *self._telling]
        if self._sync is not None:
            pending.append(self._sync)
        await asyncio.gather(*pending, return_exceptions=True)
        self._sync = None

    async def sync(self) -> None:
        """Read every deployment's hash into the mirror; tell the listeners what changed
        elsewhere. Raises when Redis does not answer."""
        successes, self._successes = self._successes, {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, count in successes.items():
                counted = self._args("count", SERVED_REASON, count)
                await self._script(self._keys(name), counted, pipe)
            for name in self._mirrors:
                pipe.hmget(self._key(name), *_FIELDS)
            replies = await pipe.execute()
        made: list[BreakerTransition] = []
        for name, reply in zip(successes, replies, strict=False):
            if reply and reply[1] and (moved := self._mirrors[name].update(reply)) is not None:
                made.append(moved)  # the successes closed it
        rows = replies[len(successes) :]
        news: list[BreakerTransition] = []
        seen = time.monotonic()
        for name, row in zip(self._mirrors, rows, strict=True):
            self._seen_at[name] = seen
            if row[0] is None:
                continue  # nothing recorded yet: closed
            transition = self._mirrors[name].update([0, 0, *row])
            if transition is not None:
                news.append(transition)
        if self._redis_down:
            log.warning("Redis answers again: breakers are the fleet's again")
            self._redis_down = False
            self._local = self._fresh_local()
        for transition in made:
            await self._tell(transition, made_here=True)
        for transition in news:
            await self._tell(transition)

    # -- internals ---------------------------------------------------------------------

    def _key(self, deployment: str) -> str:
        return f"{self._prefix}breaker:{deployment}"

    def _keys(self, deployment: str) -> list[str]:
        return [self._key(deployment)]

    def _args(self, op: str, reason: str, arg: float | None) -> list[str | int]:
        p = self._policy
        return [
            op,
            f"{self._wall_clock():.6f}",
            p.window,
            p.consecutive_failures,
            repr(p.failure_ratio),
            p.min_calls,
            repr(p.open_s),
            repr(p.fast_probe_for_s),
            repr(p.max_open_s),
            reason,
            "" if arg is None else repr(arg),
        ]

    def _fresh_local(self) -> InProcessBreakers:
        return InProcessBreakers(self._mirrors, self._policy, wall_clock=self._wall_clock)

    async def _run(
        self, deployment: str, op: str, reason: str = "", arg: float | None = None
    ) -> tuple[bool, BreakerTransition | None] | None:
        """One script call: (claimed, the transition it made); None when Redis is down."""
        self._ensure_sync()
        if self._redis_down:
            return None
        args = self._args(op, reason, arg)
        if self._written is not None and not self._written.done():
            await asyncio.shield(self._written)  # successes on their way land first
        successes = self._successes.pop(deployment, 0)
        try:
            if not successes:
                values = await self._script(self._keys(deployment), args)
            else:  # this process's successes first, in the same round trip
                async with self._redis.pipeline(transaction=False) as pipe:
                    counted = self._args("count", SERVED_REASON, successes)
                    await self._script(self._keys(deployment), counted, pipe)
                    await self._script(self._keys(deployment), args, pipe)
                    values = (await pipe.execute())[-1]
        except _DOWN:
            self._went_down()
            return None
        self._seen_at[deployment] = time.monotonic()
        transition = self._mirrors[deployment].update(values)
        if transition is not None and not values[1]:  # made elsewhere, news here
            await self._tell(transition)
            transition = None
        return bool(values[0]), transition

    async def _tell(self, transition: BreakerTransition, made_here: bool = False) -> None:
        for listener in self._listeners:
            await listener(transition, made_here)

    def _later(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    def _went_down(self) -> None:
        if not self._redis_down:
            log.warning("Redis does not answer: breakers are this process's own until it does")
            self._redis_down = True
            # Its own breakers start from the fleet's state as last seen: a deployment
            # the fleet had given up on is not tried again with users' requests.
            self._local = self._fresh_local()
            for name, mirror in self._mirrors.items():
                if (wait := mirror.seconds_until_probe()) is not None:
                    self._local[name].resume_open(wait)

    def _ensure_sync(self) -> None:
        if (self._sync is None or self._sync.done()) and not self._closing.is_set():
            # No loop yet (a synchronous caller): the first async call starts it.
            with contextlib.suppress(RuntimeError):
                self._sync = asyncio.get_running_loop().create_task(self._sync_forever())

    async def _sync_forever(self) -> None:
        while not self._closing.is_set():
            try:
                await self.sync()
            except _DOWN:
                self._went_down()
            except Exception:  # a defect in one round must not end the mirror for good
                log.exception("refreshing the breakers' mirror failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self._sync_s)
