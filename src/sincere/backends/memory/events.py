"""The in-process event bus: one process, bounded history per user, bounded buffer per subscriber.

It implements ``sincere.ports.EventBus``. Nothing in it waits on I/O: its async methods
finish without suspending, so a replay and the subscription after it see the same stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from types import MappingProxyType
from typing import Any

from sincere.events import (
    EPOCH_SPAN,
    GAP_BEFORE,
    GAP_BEYOND,
    GAP_DROPPED,
    OVERFLOWED,
    Event,
    EventType,
    Replay,
    SlowConsumer,
)
from sincere.redact import redact


class Subscription:
    """One consumer of one user's events: first the replay, then live events, in id order.

    Every bus hands these out: ``begin`` with the replay, then ``offer`` each live event;
    a bus that keeps track of its subscribers is told of a ``close`` by ``on_close``.
    """

    def __init__(self, buffer: int, on_close: Callable[[Subscription], None] | None = None) -> None:
        self.gap = False
        self.gap_reason: str | None = None
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=buffer)
        self._backlog: deque[Event] = deque()
        self._overflowed = False
        self._ended_because = OVERFLOWED
        self._closed = False
        self._last_id = 0
        self._on_close = on_close

    def begin(self, replay: Replay, seen_id: int) -> Subscription:
        """Start with ``replay`` (its events first), having seen up to ``seen_id``."""
        self.gap, self.gap_reason = replay.gap, replay.reason
        self._backlog.extend(replay.events)
        self._last_id = seen_id
        return self

    def discard_live(self) -> None:
        """Forget the live events queued so far: the bus hands them out again, in order."""
        while not self._queue.empty():
            if self._queue.get_nowait() is None:  # closed or ended meanwhile: keep saying so
                self._queue.put_nowait(None)
                return

    def offer(self, event: Event) -> bool:
        """Queue a live event; False (and the subscription is dead) when the buffer is full."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._overflowed = True
            return False
        return True

    def end(self, because: str = OVERFLOWED) -> None:
        """End it early: the client reconnects with its last id and is told (by the
        replay) what cannot be served."""
        self._overflowed = True
        self._ended_because = because
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_id(self) -> int:
        """The id of the last event handed to the consumer: where a reconnect resumes."""
        return self._last_id

    def close(self) -> None:
        """End the subscription; a consumer waiting for the next event stops at once."""
        if not self._closed:
            self._closed = True
            if self._on_close is not None:
                self._on_close(self)
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
                raise SlowConsumer(self._ended_because)
            else:
                queued = await self._queue.get()
                if queued is None:  # close() or end() woke us
                    continue
                event = queued
            if event.id > self._last_id:  # live events may repeat the tail of the backlog
                self._last_id = event.id
                return event


class _UserLog:
    __slots__ = ("history", "last_id", "subscribers")

    def __init__(self, history: int, first_id: int) -> None:
        self.last_id = first_id
        self.history: deque[Event] = deque(maxlen=history)
        self.subscribers: set[Subscription] = set()


class InProcessEventBus:
    """The default bus: one process, bounded history per user, bounded buffer per subscriber."""

    def __init__(self, history: int = 1000, subscriber_buffer: int = 256, epoch: int = 0) -> None:
        self._history = history
        self._buffer = subscriber_buffer
        self.epoch = epoch
        self._start = epoch * EPOCH_SPAN  # every id of this stream is above it
        self._logs: dict[str, _UserLog] = {}

    def _log(self, user_id: str) -> _UserLog:
        log = self._logs.get(user_id)
        if log is None:
            log = self._logs[user_id] = _UserLog(self._history, self._start)
        return log

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
        return self.post(user_id, type, message, request_id=request_id, service=service, data=data)

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
        log = self._log(user_id)
        log.last_id += 1
        event = Event(
            id=log.last_id,
            type=type,
            user_id=user_id,
            request_id=request_id,
            service=service,
            timestamp=time.time(),
            message=redact(message),
            data=MappingProxyType(dict(data or {})),
        )
        log.history.append(event)
        for sub in list(log.subscribers):
            if sub.closed or not sub.offer(event):
                log.subscribers.discard(sub)
        return event

    async def bounds(self, user_id: str) -> tuple[int, int]:
        """The oldest retained id (last + 1 when none is) and the last id of a user's stream."""
        return self._bounds(self._log(user_id))

    async def replay(self, user_id: str, after_id: int = 0) -> Replay:
        """The retained events after ``after_id`` (0: from this stream's start)."""
        return self._replay(self._log(user_id), after_id)

    async def subscribe(self, user_id: str, after_id: int | None = None) -> Subscription:
        """Live events from now on; with ``after_id``, the retained ones after it first."""
        log = self._log(user_id)
        if after_id is None:
            sub = Subscription(self._buffer).begin(Replay((), False), log.last_id)
        else:
            replay = self._replay(log, after_id)
            seen = after_id if self._start < after_id <= log.last_id else self._start
            sub = Subscription(self._buffer).begin(replay, seen)
        log.subscribers.add(sub)
        return sub

    async def aclose(self) -> None:
        """End every subscription: their consumers stop at once."""
        for log in self._logs.values():
            for sub in log.subscribers:
                sub.close()
            log.subscribers.clear()

    @staticmethod
    def _bounds(log: _UserLog) -> tuple[int, int]:
        return (log.history[0].id if log.history else log.last_id + 1), log.last_id

    def _replay(self, log: _UserLog, after_id: int) -> Replay:
        if after_id > log.last_id:
            # Not an id this stream gave: taken as given it would hide the events numbered
            # up to it. Everything retained, as a gap.
            return Replay(tuple(log.history), gap=True, reason=GAP_BEYOND)
        if 0 < after_id < self._start:
            # An earlier process's id: what came after it there is gone with that process.
            # The start itself is this stream's own: bounds() announces it while it is empty.
            return Replay(tuple(log.history), gap=True, reason=GAP_BEFORE)
        seen = max(after_id, self._start)
        oldest, _ = self._bounds(log)
        events = tuple(e for e in log.history if e.id > seen)
        gap = seen + 1 < oldest
        return Replay(events, gap=gap, reason=GAP_DROPPED if gap else None)
