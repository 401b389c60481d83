"""The event bus on Redis Streams: one ordered stream per user for the whole fleet.

Each user's events are one stream (``<prefix>events:<user>``) with entry ids ``0-<n>``:
``n`` is the event id, given by a Lua script that appends with the next number, so every
process sees one order and ids stay valid across processes and restarts of a process.

Ids and epochs. A stream numbers its events from a start taken from Redis's clock when
the stream is created: ``(milliseconds since 2025) * 1024``. If Redis loses a stream
(restarted without persistence, flushed, or the stream expired), the new one starts above
every id the old one gave (that would take more than 1,024 events per millisecond), so an
old ``last_event_id`` is answered with a gap (``GAP_BEFORE``), never mistaken for a new id.
Ids stay below 2**53 (exact in JavaScript) until the year 2303. Each entry carries its
stream's start: the stream's epoch, as ``InProcessEventBus`` has one per process.

History: exactly ``history`` entries per user (``XADD MAXLEN``); a stream expires
``ttl_s`` after its last event, so idle users do not stay in Redis.

Live delivery. The same script appends every event, numbered by a fleet-wide sequence,
to one feed (``<prefix>events-feed``, the last ``FEED_LENGTH`` events of the fleet). Each
process has one reader task on its own connection that reads the feed (``XREAD BLOCK``,
one key however many users are connected) and hands each event to this process's
subscribers of its user, if any; it runs while the process has subscribers. A
subscription is registered before its replay is read, and the feed is read from a point
no later than the replay, so nothing falls between replay and live events; duplicates
are dropped by id. When the sequence jumps (the reader fell a whole feed behind, or Redis
restarted), the reader reads each watched user's own stream from the last id it
delivered, so nothing is skipped either.

Writing. Every event goes through one ordered outbox per process, written in the
process's round trips (``trips.RoundTrips``, shared with the limiter and the breakers):
the events waiting when a trip leaves, up to ``WRITE_BATCH``, in one script call.
``publish`` waits until Redis has its event (at most ``COMMAND_TIMEOUT_S``); ``post``
does not wait. Either way an event queued is never taken back: a publisher cancelled
while it waits (a client that left, in a cancel scope that cancels every later await too)
loses nothing, and its event is written in order. A process killed with ``kill -9`` loses
what it had not written yet: at most one round trip of events when Redis answers. A write
that timed out may have been applied and is written again: at least once. The bus, like
its client, belongs to one event loop.

Redis unreachable: a publish waits at most ``COMMAND_TIMEOUT_S`` (and only while Redis
was last seen: later ones do not wait at all). Events wait in the outbox (``outbox``
events per process; beyond that the oldest are dropped and counted in ``dropped``) and
are written in publish order when Redis is back (tried every ``RETRY_S``); they are
numbered then and only then delivered, to sockets on every process, this one included: a
socket never sees one event under two ids. A ``publish`` that could not reach Redis
returns its event with id 0 (not yet numbered). A subscription made meanwhile starts with
a gap (``GAP_UNREADABLE``) and its live events begin when Redis is back. ``healthy()``
and ``last_error`` are for /health.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError

from sincere.backends.memory.events import Subscription
from sincere.backends.redis import COMMAND_TIMEOUT_S, DEFAULT_PREFIX
from sincere.backends.redis.trips import DOWN, Command, RoundTrips, Staged
from sincere.events import (
    GAP_BEFORE,
    GAP_BEYOND,
    GAP_DROPPED,
    STREAM_LOST,
    Event,
    EventType,
    Replay,
)
from sincere.redact import redact

log = logging.getLogger("sincere.events")

IDS_PER_MS = 1024
"""A new stream starts at ``IDS_PER_MS`` ids per millisecond of Redis's clock since
``CLOCK_BASE_MS``: above every id of a stream Redis lost before."""
CLOCK_BASE_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
FEED_LENGTH = 10_000  # the fleet's newest events kept in the feed (about: MAXLEN ~)
BLOCK_S = 2.0  # how long one read of the feed waits for new entries before asking again
READ_COUNT = 1024  # entries per read: a burst is read in a few round trips
WRITE_BATCH = 256  # events per round trip at most, when many are waiting
RETRY_S = 0.5  # how often an unreachable Redis is tried again (outbox, reader)
GAP_UNREADABLE = "the event history could not be read (Redis unreachable); events may be missing"

# Failures of Redis that the bus rides out (unreachable, timed out, refused, restarting).
_REDIS_DOWN = DOWN

# KEYS: the feed, the feed's sequence, then each event's user stream. ARGV: history, ttl
# in ms, clock base in ms, ids per ms, feed length, then per event the user and the event
# (JSON). Appends each event, in order, to its user's stream with the next id (a new
# stream starts at a value from Redis's clock) and to the feed (a header "<sequence> <id>
# <start> <user>", then the event: the fewer fields, the less every process parses);
# returns the ids. Lua numbers are doubles: "%.0f" keeps ids exact.
_PUBLISH = """
local history, ttl, base, per_ms, feed_length = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local count = #KEYS - 2
local seq = redis.call('INCRBY', KEYS[2], count) - count
local tails = {}  -- per stream in this batch: {its last id, its start}
local ids = {}
for i = 3, #KEYS do
  local key, user, body = KEYS[i], ARGV[2 * i], ARGV[2 * i + 1]
  local tail = tails[key]
  if not tail then
    local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
    if last[1] then
      tail = {tonumber(string.sub(last[1][1], 3)), last[1][2][2]}
    else
      local t = redis.call('TIME')
      local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      local start = string.format('%.0f', (ms - tonumber(base)) * tonumber(per_ms))
      tail = {tonumber(start), start}
    end
    tails[key] = tail
  end
  tail[1] = tail[1] + 1
  local id = string.format('%.0f', tail[1])
  redis.call('XADD', key, 'MAXLEN', history, '0-' .. id, 's', tail[2], 'e', body)
  seq = seq + 1
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', feed_length, '*',
    'h', seq .. ' ' .. id .. ' ' .. tail[2] .. ' ' .. user, 'e', body)
  ids[#ids + 1] = id
end
for key in pairs(tails) do redis.call('PEXPIRE', key, ttl) end
return ids
"""

Entry = tuple[bytes, dict[bytes, bytes]]  # a stream entry: its id and fields


class _Outgoing:
    """An event waiting for the writer, and what its publisher learns: its id once Redis
    has it, 0 when Redis could not be reached (it stays queued) or a full outbox dropped it."""

    __slots__ = ("body", "user_id", "written")

    def __init__(self, user_id: str, body: bytes, written: asyncio.Future[int]) -> None:
        self.user_id = user_id
        self.body = body
        self.written = written


def _settle(written: asyncio.Future[int], event_id: int) -> None:
    if not written.done():
        written.set_result(event_id)


class _Watch:
    """This process's subscribers of one user, and the last id handed to them."""

    __slots__ = ("cursor", "start", "subscribers")

    def __init__(self) -> None:
        self.subscribers: set[Subscription] = set()
        self.cursor: int | None = None  # the last id delivered (or replayed); None: unknown
        self.start: int | None = None  # the start of the stream the cursor is in


class RedisEventBus:
    """Per-user ordered event streams in Redis, shared by every process of a fleet."""

    def __init__(
        self,
        redis: Redis,
        *,
        history: int = 1000,
        buffer: int = 256,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: float = 24 * 3600,
        outbox: int = 10_000,
        trips: RoundTrips | None = None,
    ) -> None:
        self._redis = redis
        self._history = history
        self._buffer = buffer
        self._prefix = f"{prefix}events:"
        self._feed = f"{prefix}events-feed"  # not a user's stream, whatever the user's name
        self._feed_seq = f"{prefix}events-feed-seq"
        self._ttl_ms = int(ttl_s * 1000)
        # Written in the process's shared round trips (a bus alone makes its own).
        self._owns_trips = trips is None
        self._trips = RoundTrips(redis) if trips is None else trips
        self._publish_sha = self._trips.script(_PUBLISH)
        self._trips.join(self)
        self._retry_at = -math.inf  # monotonic: Redis failed, the outbox waits until then
        self._emptied: asyncio.Event | None = None  # set when the outbox is written
        self._watches: dict[str, _Watch] = {}
        self._outbox: deque[_Outgoing] = deque(maxlen=outbox)  # in publish order
        self._down = False  # the last write failed: publishers do not wait
        self._reader: asyncio.Task[None] | None = None
        self._stopped: set[asyncio.Task[None]] = set()  # readers ending (cancelled)
        self._feed_id: bytes | None = None  # where the reader is in the feed
        self._feed_seq_seen: int | None = None  # the sequence number of that entry
        self._catch_up_due = False  # a subscription could not read its replay
        self.dropped = 0  # events lost from a full outbox while Redis was unreachable
        self.last_error: str | None = None  # the last Redis failure, None once it works

    def _key(self, user_id: str) -> str:
        return self._prefix + user_id

    # ─── publishing ──────────────────────────────────────────────────────────────────

    def post(
        self,
        user_id: str,
        type: EventType,
        message: str,
        *,
        request_id: str | None = None,
        service: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Event:
        """Queue an event for the writer without waiting: it is written in publish order
        within a round trip (or when Redis is back). Returned unnumbered (id 0)."""
        event = _event(user_id, type, message, request_id, service, data)
        self._enqueue(user_id, _encode(event))
        return event

    async def publish(
        self,
        user_id: str,
        type: EventType,
        message: str,
        *,
        request_id: str | None = None,
        service: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Event:
        """Queue an event and wait (at most ``COMMAND_TIMEOUT_S``) until Redis has it.
        Cancelling the wait never takes the event back."""
        event = _event(user_id, type, message, request_id, service, data)
        written = self._enqueue(user_id, _encode(event))
        if self._down:  # known unreachable: queued, numbered when Redis is back
            return event
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                event_id = await asyncio.shield(written)
        except TimeoutError:
            self._down = True  # the next publishers do not wait (until a write succeeds)
            return event
        return _numbered(event, event_id) if event_id else event

    def _enqueue(self, user_id: str, body: bytes) -> asyncio.Future[int]:
        written = asyncio.get_running_loop().create_future()
        if len(self._outbox) == self._outbox.maxlen:
            self.dropped += 1
            _settle(self._outbox[0].written, 0)
        self._outbox.append(_Outgoing(user_id, body, written))
        if time.monotonic() >= self._retry_at:
            self._trips.wake()
        return written

    def stage(self, commands: list[Command]) -> Staged | None:
        """The oldest events of the outbox, in one script call (a part of ``RoundTrips``)."""
        if not self._outbox or time.monotonic() < self._retry_at:
            return None
        batch = list(itertools.islice(self._outbox, WRITE_BATCH))
        keys = [self._feed, self._feed_seq, *(self._key(item.user_id) for item in batch)]
        args: list[str | int | bytes] = [
            self._history,
            self._ttl_ms,
            CLOCK_BASE_MS,
            IDS_PER_MS,
            FEED_LENGTH,
        ]
        for item in batch:
            args += (item.user_id, item.body)
        commands.append(("EVALSHA", self._publish_sha, len(keys), *keys, *args))
        return lambda replies: self._written(batch, replies)

    def _written(self, batch: list[_Outgoing], replies: Sequence[Any] | BaseException) -> None:
        reply = replies if isinstance(replies, BaseException) else replies[0]
        if isinstance(reply, NoScriptError):
            return  # Redis forgot the script: the next trip loads it and writes these
        if isinstance(reply, BaseException):
            self._failed(reply)
            self._down = True
            for item in self._outbox:  # their publishers stop waiting: queued
                _settle(item.written, 0)
            self._retry_at = time.monotonic() + RETRY_S
            asyncio.get_running_loop().call_later(RETRY_S, self._trips.wake)
            return
        self._down = False
        self.last_error = None
        for item, event_id in zip(batch, reply, strict=True):
            if self._outbox and self._outbox[0] is item:  # else a full outbox dropped it
                self._outbox.popleft()
            _settle(item.written, int(event_id))
        if not self._outbox and self._emptied is not None:
            self._emptied.set()
            self._emptied = None

    async def written(self) -> None:
        """Wait until every event queued so far is in Redis (however long Redis is away)."""
        if self._outbox:
            if self._emptied is None:
                self._emptied = asyncio.Event()
            await self._emptied.wait()

    def _failed(self, exc: BaseException) -> None:
        if self.last_error is None:
            log.warning("Redis is unreachable for events: %s", exc.__class__.__name__)
        self.last_error = f"{exc.__class__.__name__}: {exc}" if str(exc) else repr(exc)

    # ─── reading ─────────────────────────────────────────────────────────────────────

    async def bounds(self, user_id: str) -> tuple[int, int]:
        """The oldest retained id (last + 1 when none is) and the last id of a user's stream.

        A user without a stream (none yet, or it expired) and an unreachable Redis: (1, 0).
        """
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                first, last, _ = await self._ends(user_id, None)
        except _REDIS_DOWN as exc:
            self._failed(exc)
            return 1, 0
        if last is None or first is None:
            return 1, 0
        return _entry_id(first), _entry_id(last)

    async def replay(self, user_id: str, after_id: int = 0) -> Replay:
        """The retained events after ``after_id`` (0: from this stream's start)."""
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                replay, _, _ = await self._replay(user_id, after_id)
        except _REDIS_DOWN as exc:
            self._failed(exc)
            return Replay((), gap=after_id > 0, reason=GAP_UNREADABLE if after_id > 0 else None)
        return replay

    async def _ends(
        self, user_id: str, after_id: int | None
    ) -> tuple[Entry | None, Entry | None, list[Entry]]:
        """The first and last retained entries and (with ``after_id``) those after it, at once."""
        key = self._key(user_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xrange(key, "-", "+", count=1)
            pipe.xrevrange(key, "+", "-", count=1)
            if after_id is not None:
                pipe.xrange(key, f"(0-{max(after_id, 0)}", "+")
            replies = await pipe.execute()
        self.last_error = None
        first, last = replies[0], replies[1]
        after = replies[2] if after_id is not None else []
        return (first[0] if first else None), (last[0] if last else None), after

    async def _replay(self, user_id: str, after_id: int) -> tuple[Replay, Entry | None, int]:
        """The replay after ``after_id``, the last entry it read (None: no stream) and the
        id after which its consumer takes events (as ``InProcessEventBus`` does)."""
        first, last, after = await self._ends(user_id, after_id)
        if first is None or last is None:  # no stream: an id of a lost or expired one
            gap = after_id > 0
            return Replay((), gap=gap, reason=GAP_BEFORE if gap else None), None, 0
        start, last_id, oldest = _entry_start(last), _entry_id(last), _entry_id(first)
        reason = GAP_BEYOND if after_id > last_id else GAP_BEFORE if 0 < after_id <= start else None
        if reason is not None:
            # Not an id of this stream: everything retained, as a gap.
            entries = cast(list[Entry], await self._redis.xrange(self._key(user_id), "-", "+"))
            events = tuple(e for e in map(_decode, entries) if e.id <= last_id)
            return Replay(events, gap=True, reason=reason), last, start
        seen = max(after_id, start)
        events = tuple(_decode(e) for e in after if seen < _entry_id(e) <= last_id)
        gap = seen + 1 < oldest
        return Replay(events, gap=gap, reason=GAP_DROPPED if gap else None), last, seen

    async def subscribe(self, user_id: str, after_id: int | None = None) -> Subscription:
        """Live events from now on; with ``after_id``, the retained ones after it first."""
        watch = self._watches.get(user_id)
        if watch is None:
            watch = self._watches[user_id] = _Watch()
        sub = Subscription(self._buffer, lambda s: self._forget(user_id, s))
        watch.subscribers.add(sub)  # before the replay: what the reader reads from now on
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                if self._feed_id is None:  # the feed from no later than the replay
                    await self._start_feed()
                if after_id is None:
                    _, last, _ = await self._ends(user_id, None)
                    replay, seen = Replay((), gap=False), _entry_id(last) if last else 0
                else:
                    replay, last, seen = await self._replay(user_id, after_id)
        except _REDIS_DOWN as exc:
            self._failed(exc)
            # Live events from ``after_id`` (or from the stream's end) once Redis is back.
            gap = after_id is not None and after_id > 0
            sub.begin(Replay((), gap=gap, reason=GAP_UNREADABLE if gap else None), after_id or 0)
            if after_id is not None:
                # The reader may have handed it later events meanwhile: the catch-up hands
                # them out again after the earlier ones, in order.
                sub.discard_live()
                _lower(watch, after_id, None)
            self._catch_up_due = True
        except BaseException:
            sub.close()
            raise
        else:
            sub.begin(replay, seen)
            _lower(watch, _entry_id(last) if last else 0, _entry_start(last) if last else None)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="sincere-events-reader")
        return sub

    def _forget(self, user_id: str, sub: Subscription) -> None:
        watch = self._watches.get(user_id)
        if watch is not None:
            watch.subscribers.discard(sub)
            if not watch.subscribers:
                del self._watches[user_id]
        if not self._watches and self._reader is not None:
            # Nobody here listens: stop reading the fleet's events. The next subscription
            # starts the feed again from no later than its replay.
            self._reader.cancel()
            self._stopped.add(self._reader)
            self._reader.add_done_callback(self._stopped.discard)
            self._reader = self._feed_id = self._feed_seq_seen = None

    @property
    def reading(self) -> bool:
        """Whether this process reads the fleet's events (it does while it has subscribers)."""
        return self._reader is not None

    async def _start_feed(self) -> None:
        """Read the feed from its end, as it is now."""
        newest = cast(list[Entry], await self._redis.xrevrange(self._feed, "+", "-", count=1))
        if self._feed_id is None:  # else another subscription started it meanwhile
            self._feed_id = newest[0][0] if newest else b"0-0"
            # No feed yet: its sequence starts at 1 (a jump from 0 means trimmed entries).
            self._feed_seq_seen = int(newest[0][1][b"h"].split(b" ", 1)[0]) if newest else 0

    async def _read(self) -> None:
        """Deliver the fleet's new events to this process's subscribers of their users."""
        pool = self._redis.connection_pool
        # Its own connection: a blocked XREAD holds it; the reader bounds each wait itself.
        conn = pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})
        try:
            while True:
                try:
                    await self._read_once(conn)
                except _REDIS_DOWN as exc:
                    self._failed(exc)
                    await conn.disconnect()
                    await asyncio.sleep(RETRY_S)
                except Exception:  # a bug here must not end live events for the process
                    log.exception("reading events from Redis failed")
                    await conn.disconnect()
                    await asyncio.sleep(RETRY_S)
        finally:
            await conn.disconnect()

    async def _read_once(self, conn: AbstractConnection) -> None:
        if self._feed_id is None or self._catch_up_due:  # subscribed while Redis was down
            self._catch_up_due = False
            try:
                async with asyncio.timeout(COMMAND_TIMEOUT_S):
                    if self._feed_id is None:
                        await self._start_feed()
                    await self._catch_up()
            except BaseException:
                self._catch_up_due = True
                raise
        async with asyncio.timeout(BLOCK_S + COMMAND_TIMEOUT_S):
            await conn.send_command(
                *("XREAD", "COUNT", READ_COUNT, "BLOCK", int(BLOCK_S * 1000)),
                *("STREAMS", self._feed, self._feed_id),
            )
            reply = await conn.read_response()
        self.last_error = None
        # Unparsed: a map of key to entries (RESP3) or pairs of them (RESP2).
        for _, entries in reply.items() if isinstance(reply, dict) else (reply or ()):
            for entry_id, (_, header, _, body) in entries:  # h <header> e <event>
                seq_text, event_id, start, user = header.split(b" ", 3)
                seq = int(seq_text)
                if self._feed_seq_seen is not None and seq != self._feed_seq_seen + 1:
                    # Entries were trimmed before this process read them, or Redis lost
                    # the feed: read each watched user's own stream from where it was.
                    async with asyncio.timeout(COMMAND_TIMEOUT_S):
                        await self._catch_up()
                self._feed_id, self._feed_seq_seen = entry_id, seq
                user_id = user.decode()
                watch = self._watches.get(user_id)
                if watch is not None:
                    _deliver(user_id, watch, [(b"0-" + event_id, {b"s": start, b"e": body})])

    async def _catch_up(self) -> None:
        """Deliver what each watched user's stream has after the last id handed out."""
        watches = [(u, w) for u, w in self._watches.items() if w.subscribers]
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, watch in watches:
                if watch.cursor is None:  # subscribed while Redis was unreachable
                    pipe.xrevrange(self._key(user_id), "+", "-", count=1)
                else:
                    pipe.xrange(self._key(user_id), f"(0-{watch.cursor}", "+")
            replies = await pipe.execute()
        for (user_id, watch), entries in zip(watches, replies, strict=True):
            if watch.cursor is None:  # live events from the stream's end on
                _lower(watch, _entry_id(entries[0]) if entries else 0, None)
            elif self._watches.get(user_id) is watch:
                _deliver(user_id, watch, entries)

    async def healthy(self) -> bool:
        """Whether Redis answers now (a PING within ``COMMAND_TIMEOUT_S``)."""
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                await self._redis.ping()
        except _REDIS_DOWN as exc:
            self._failed(exc)
            return False
        self.last_error = None
        return True

    @property
    def pending(self) -> int:
        """Events waiting in the outbox for Redis to be reachable again."""
        return len(self._outbox)

    async def aclose(self) -> None:
        """End every subscription and the reader; one last try to write the outbox."""
        for watch in list(self._watches.values()):
            for sub in list(watch.subscribers):
                sub.close()  # the last one stops the reader
        self._watches.clear()
        for task in (self._reader, *self._stopped):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(TimeoutError):  # one last bounded try to write the outbox
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                await self.written()
        if self._owns_trips:
            await self._trips.aclose()
        if self._outbox:
            log.warning("%d events could not be written to Redis", len(self._outbox))


def _lower(watch: _Watch, cursor: int, start: int | None) -> None:
    """Deliver from ``cursor`` on, if that is no later than where the watch is."""
    if watch.cursor is None or cursor < watch.cursor:
        watch.cursor = cursor
        if start is not None:
            watch.start = start


def _deliver(user_id: str, watch: _Watch, entries: list[Entry]) -> None:
    for entry in entries:
        event_id, start = _entry_id(entry), _entry_start(entry)
        if watch.cursor is not None and event_id <= watch.cursor:
            continue  # every subscriber has it already (replayed, or read twice)
        if watch.start is not None and start != watch.start:
            # Redis lost the stream (and with it, perhaps, events not read yet): the
            # subscribers reconnect, and the replay tells them what cannot be served.
            for sub in list(watch.subscribers):
                sub.end(STREAM_LOST)
            watch.subscribers.clear()
        watch.start, watch.cursor = start, event_id
        event = _decode(entry)
        if event.user_id != user_id:  # never another user's event, whatever is in Redis
            log.error("an event of another user was in a user's stream; not delivered")
            continue
        for sub in list(watch.subscribers):
            if not sub.offer(event):
                watch.subscribers.discard(sub)


def _event(
    user_id: str,
    type: EventType,
    message: str,
    request_id: str | None,
    service: str | None,
    data: Mapping[str, Any] | None,
) -> Event:
    return Event(
        id=0,
        type=type,
        user_id=user_id,
        request_id=request_id,
        service=service,
        timestamp=time.time(),
        message=redact(message),
        data=MappingProxyType(dict(data or {})),
    )


def _encode(event: Event) -> bytes:
    return orjson.dumps(
        {
            "type": str(event.type),
            "user_id": event.user_id,
            "request_id": event.request_id,
            "service": event.service,
            "timestamp": event.timestamp,
            "message": event.message,
            "data": dict(event.data),
        }
    )


def _numbered(event: Event, event_id: int) -> Event:
    return Event(
        event_id,
        event.type,
        event.user_id,
        event.request_id,
        event.service,
        event.timestamp,
        event.message,
        event.data,
    )


def _entry_id(entry: Entry) -> int:
    return int(entry[0][2:])  # b"0-<n>"


def _entry_start(entry: Entry) -> int:
    return int(entry[1][b"s"])


def _decode(entry: Entry) -> Event:
    body = orjson.loads(entry[1][b"e"])
    return Event(
        id=_entry_id(entry),
        type=EventType(body["type"]),
        user_id=body["user_id"],
        request_id=body["request_id"],
        service=body["service"],
        timestamp=body["timestamp"],
        message=body["message"],
        data=MappingProxyType(body["data"]),
    )
