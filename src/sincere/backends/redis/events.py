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
stream's start, which is this bus's epoch: ids of a stream lie above it, as in
``InProcessEventBus``.

History: exactly ``history`` entries per user (``XADD MAXLEN``); a stream expires
``ttl_s`` after its last event, so idle users do not stay in Redis.

Live delivery: one reader task per process, on its own connection, reads (``XREAD BLOCK``)
the streams of the users that have subscribers in this process, from the last id it saw
of each; a subscriber joining for a user not yet read cancels the blocked read (the
connection is reconnected) so that it starts at once. Nothing is lost between a replay and
live events: a subscription is registered before its replay is read, and the reader starts
a user's stream no later than the replay's last id; duplicates are dropped by id.

Redis unreachable: ``publish`` never raises and waits at most ``COMMAND_TIMEOUT_S`` (and
only the first one after Redis was last seen: later ones do not wait at all). Its events
wait in a bounded outbox (``outbox`` events per process; beyond that the oldest are
dropped and counted in ``dropped``) and are written in publish order when Redis is back
(tried every ``RETRY_S``); they are numbered then and only then delivered, to sockets on
every process, this one included: a socket never sees one event under two ids. A
``publish`` that could not reach Redis returns its event with id 0 (not yet numbered).
A subscription made meanwhile starts with a gap (``GAP_UNREADABLE``) and its live events
begin when Redis is back. ``healthy()`` and ``last_error`` are for /health.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from types import MappingProxyType
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from sincere.backends.redis import COMMAND_TIMEOUT_S, DEFAULT_PREFIX
from sincere.events import (
    GAP_BEFORE,
    GAP_BEYOND,
    GAP_DROPPED,
    Event,
    EventType,
    Replay,
    SlowConsumer,
)
from sincere.redact import redact

log = logging.getLogger("sincere.events")

IDS_PER_MS = 1024
"""A new stream starts at ``IDS_PER_MS`` ids per millisecond of Redis's clock since
``CLOCK_BASE_MS``: above every id of a stream Redis lost before."""
CLOCK_BASE_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
BLOCK_S = 2.0  # how long one XREAD waits for new entries before asking again
READ_COUNT = 512  # entries per stream and read: a burst is read in a few round trips
RETRY_S = 0.5  # how often an unreachable Redis is tried again (outbox, reader)
GAP_UNREADABLE = "the event history could not be read (Redis unreachable); events may be missing"

# Failures of Redis that the bus rides out (unreachable, timed out, refused, restarting).
_REDIS_DOWN = (RedisError, OSError, TimeoutError)

# KEYS[1]: the user's stream. ARGV: history, ttl in ms, clock base in ms, ids per ms,
# the event (JSON). Appends the event with the next id (a new stream starts at a value
# from Redis's clock) and returns the id and the stream's start as strings (Lua numbers
# are doubles: "%.0f" keeps every id below 2**53 exact).
_PUBLISH = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local n, start
if last[1] then
  n = tonumber(string.sub(last[1][1], 3)) + 1
  start = last[1][2][2]
else
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  start = string.format('%.0f', (ms - tonumber(ARGV[3])) * tonumber(ARGV[4]))
  n = tonumber(start) + 1
end
local id = string.format('%.0f', n)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '0-' .. id, 's', start, 'e', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {id, start}
"""

Entry = tuple[bytes, dict[bytes, bytes]]  # a stream entry: its id and fields


class RedisSubscription:
    """One consumer of one user's events: first the replay, then live events, in id order."""

    def __init__(self, buffer: int) -> None:
        self.gap = False
        self.gap_reason: str | None = None
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=buffer)
        self._backlog: deque[Event] = deque()
        self._overflowed = False
        self._closed = False
        self._last_id = 0

    def _begin(self, replay: Replay, seen_id: int) -> None:
        self.gap, self.gap_reason = replay.gap, replay.reason
        self._backlog.extend(replay.events)
        self._last_id = seen_id

    def _offer(self, event: Event) -> bool:
        """Queue a live event; False (and the subscription is dead) when the buffer is full."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._overflowed = True
            return False
        return True

    def _end(self) -> None:
        """End it as a slow consumer's: the client reconnects with its last id and is told
        (by the replay) what cannot be served."""
        self._overflowed = True
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    @property
    def last_id(self) -> int:
        """The id of the last event handed to the consumer: where a reconnect resumes."""
        return self._last_id

    def close(self) -> None:
        """End the subscription; a consumer waiting for the next event stops at once."""
        self._closed = True
        with contextlib.suppress(asyncio.QueueFull):  # a full queue has nobody waiting
            self._queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._backlog:
                event = self._backlog.popleft()
            elif self._overflowed and self._queue.empty():
                raise SlowConsumer("the event buffer overflowed; reconnect with last_event_id")
            else:
                queued = await self._queue.get()
                if queued is None:  # close() or _end() woke us
                    continue
                event = queued
            if event.id > self._last_id:  # live events may repeat the tail of the backlog
                self._last_id = event.id
                return event


class _Watch:
    """This process's subscribers of one user, and where the reader is in their stream."""

    __slots__ = ("cursor", "from_end", "start", "subscribers")

    def __init__(self) -> None:
        self.subscribers: set[RedisSubscription] = set()
        self.cursor: int | None = None  # the last id read; None: not known yet
        self.start: int | None = None  # the start of the stream the cursor is in
        self.from_end = False  # subscribed while Redis was unreachable: read from its end


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
    ) -> None:
        self._redis = redis
        self._history = history
        self._buffer = buffer
        self._prefix = f"{prefix}events:"
        self._ttl_ms = int(ttl_s * 1000)
        self._publish = redis.register_script(_PUBLISH)
        self._watches: dict[str, _Watch] = {}
        self._outbox: deque[tuple[str, bytes]] = deque(maxlen=outbox)
        self._down = False  # the last write failed: publish queues without trying
        self._flusher: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watching = asyncio.Event()  # set when a user joins the reader's streams
        self.dropped = 0  # events lost from a full outbox while Redis was unreachable
        self.last_error: str | None = None  # the last Redis failure, None once it works

    def _key(self, user_id: str) -> str:
        return self._prefix + user_id

    # ─── publishing ──────────────────────────────────────────────────────────────────

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
        event = Event(
            id=0,
            type=type,
            user_id=user_id,
            request_id=request_id,
            service=service,
            timestamp=time.time(),
            message=redact(message),
            data=MappingProxyType(dict(data or {})),
        )
        body = _encode(event)
        if not self._down and not self._outbox:
            try:
                async with asyncio.timeout(COMMAND_TIMEOUT_S):
                    event_id = await self._append(user_id, body)
            except _REDIS_DOWN as exc:
                self._failed(exc)
            else:
                return _numbered(event, event_id)
        self._queue(user_id, body)
        return event

    async def _append(self, user_id: str, body: bytes) -> int:
        args = (self._history, self._ttl_ms, CLOCK_BASE_MS, IDS_PER_MS, body)
        event_id, _start = await self._publish(keys=[self._key(user_id)], args=args)
        self.last_error = None
        return int(event_id)

    def _queue(self, user_id: str, body: bytes) -> None:
        if len(self._outbox) == self._outbox.maxlen:
            self.dropped += 1
        self._outbox.append((user_id, body))
        self._down = True
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="sincere-events-flush")

    async def _flush(self) -> None:
        """Write the outbox, oldest first, once Redis answers again."""
        while self._outbox:
            item = self._outbox[0]
            try:
                async with asyncio.timeout(COMMAND_TIMEOUT_S):
                    await self._append(*item)
            except _REDIS_DOWN as exc:
                self._failed(exc)
                await asyncio.sleep(RETRY_S)
                continue
            if self._outbox and self._outbox[0] is item:  # else a full outbox dropped it
                self._outbox.popleft()
        self._down = False

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
            pipe.execute_command("XRANGE", key, "-", "+", "COUNT", 1)
            pipe.execute_command("XREVRANGE", key, "+", "-", "COUNT", 1)
            if after_id is not None:
                pipe.execute_command("XRANGE", key, f"(0-{max(after_id, 0)}", "+")
            replies = await pipe.execute()
        self.last_error = None
        first, last = replies[0], replies[1]
        after = replies[2] if after_id is not None else []
        return (first[0] if first else None), (last[0] if last else None), after

    async def _replay(self, user_id: str, after_id: int) -> tuple[Replay, int, int]:
        """The replay after ``after_id``, the last id it read (0: no stream) and the id
        after which its consumer takes events (as ``InProcessEventBus`` does)."""
        first, last, after = await self._ends(user_id, after_id)
        if first is None or last is None:  # no stream: an id of a lost or expired one
            gap = after_id > 0
            return Replay((), gap=gap, reason=GAP_BEFORE if gap else None), 0, 0
        start, last_id, oldest = _entry_start(last), _entry_id(last), _entry_id(first)
        reason = GAP_BEYOND if after_id > last_id else GAP_BEFORE if 0 < after_id <= start else None
        if reason is not None:
            # Not an id of this stream: everything retained, as a gap.
            entries = cast(list[Entry], await self._redis.xrange(self._key(user_id), "-", "+"))
            events = tuple(e for e in map(_decode, entries) if e.id <= last_id)
            return Replay(events, gap=True, reason=reason), last_id, start
        seen = max(after_id, start)
        events = tuple(_decode(e) for e in after if seen < _entry_id(e) <= last_id)
        gap = seen + 1 < oldest
        return Replay(events, gap=gap, reason=GAP_DROPPED if gap else None), last_id, seen

    async def subscribe(self, user_id: str, after_id: int | None = None) -> RedisSubscription:
        """Live events from now on; with ``after_id``, the retained ones after it first."""
        sub = RedisSubscription(self._buffer)
        watch = self._watches.get(user_id)
        if watch is None:
            watch = self._watches[user_id] = _Watch()
        watch.subscribers.add(sub)  # before the replay: what the reader reads from now on
        read_to: int | None
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                if after_id is None:
                    _, last, _ = await self._ends(user_id, None)
                    read_to = _entry_id(last) if last is not None else 0
                    replay, seen = Replay((), gap=False), read_to
                else:
                    replay, read_to, seen = await self._replay(user_id, after_id)
        except _REDIS_DOWN as exc:
            self._failed(exc)
            # Live events from ``after_id`` (or from the stream's end) once Redis is back.
            read_to = after_id
            watch.from_end = after_id is None
            gap = after_id is not None and after_id > 0
            replay, seen = (
                Replay((), gap=gap, reason=GAP_UNREADABLE if gap else None),
                after_id or 0,
            )
        except BaseException:
            watch.subscribers.discard(sub)
            raise
        sub._begin(replay, seen)
        if read_to is not None and (watch.cursor is None or read_to < watch.cursor):
            watch.cursor = read_to  # where the reader starts: no later than this replay ends
            self._watching.set()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="sincere-events-reader")
        return sub

    async def _read(self) -> None:
        """Deliver new entries of watched users' streams to this process's subscribers."""
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
        self._watching.clear()  # first: a user joining from here on wakes the read below
        for user_id in [u for u, w in self._watches.items() if not _prune(w)]:
            del self._watches[user_id]
        for user_id, watch in list(self._watches.items()):
            if watch.cursor is None and watch.from_end:
                async with asyncio.timeout(COMMAND_TIMEOUT_S):
                    _, last, _ = await self._ends(user_id, None)
                if watch.cursor is None:  # else a subscription read its replay meanwhile
                    watch.cursor = _entry_id(last) if last is not None else 0
        watched = {self._key(u): (u, w) for u, w in self._watches.items() if w.cursor is not None}
        if not watched:
            await self._watching.wait()
            return
        ids = [f"0-{w.cursor}" for _, w in watched.values()]
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            await conn.send_command(
                "XREAD",
                "COUNT",
                READ_COUNT,
                "BLOCK",
                int(BLOCK_S * 1000),
                "STREAMS",
                *watched,
                *ids,
            )
        read = asyncio.ensure_future(conn.read_response())
        joined = asyncio.ensure_future(self._watching.wait())
        try:
            async with asyncio.timeout(BLOCK_S + COMMAND_TIMEOUT_S):
                await asyncio.wait((read, joined), return_when=asyncio.FIRST_COMPLETED)
        finally:
            joined.cancel()
            if not read.done():  # a user joined (or Redis went silent): read again anew
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await read
                await conn.disconnect()
        if read.done() and not read.cancelled():
            reply = read.result()
            self.last_error = None
            # Unparsed: a map of key to entries (RESP3) or pairs of them (RESP2).
            streams = reply.items() if isinstance(reply, dict) else (reply or ())
            for key, entries in streams:
                user_id, watch = watched[key.decode()]
                if self._watches.get(user_id) is watch:
                    _deliver(user_id, watch, [(i, _pairs(f)) for i, f in entries])

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
        for task in (self._reader, self._flusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for watch in self._watches.values():
            for sub in watch.subscribers:
                sub.close()
        self._watches.clear()
        if self._outbox:
            with contextlib.suppress(*_REDIS_DOWN):
                async with asyncio.timeout(COMMAND_TIMEOUT_S):
                    while self._outbox:
                        await self._append(*self._outbox[0])
                        self._outbox.popleft()
        if self._outbox:
            log.warning("%d events could not be written to Redis", len(self._outbox))


def _prune(watch: _Watch) -> bool:
    """Forget closed and dead subscriptions; whether any is left."""
    watch.subscribers = {s for s in watch.subscribers if not (s._closed or s._overflowed)}
    return bool(watch.subscribers)


def _deliver(user_id: str, watch: _Watch, entries: list[Entry]) -> None:
    for entry in entries:
        event_id, start = _entry_id(entry), _entry_start(entry)
        if watch.start is not None and start != watch.start and watch.cursor != start:
            # Redis lost the stream (and with it, perhaps, events not read yet): the
            # subscribers reconnect, and the replay tells them what cannot be served.
            for sub in watch.subscribers:
                sub._end()
            watch.subscribers.clear()
        watch.start, watch.cursor = start, event_id
        event = _decode(entry)
        if event.user_id != user_id:  # never another user's event, whatever is in Redis
            log.error("an event of another user was in a user's stream; not delivered")
            continue
        for sub in list(watch.subscribers):
            if sub._closed or not sub._offer(event):
                watch.subscribers.discard(sub)


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


def _pairs(fields: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(fields[::2], fields[1::2], strict=True))


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
