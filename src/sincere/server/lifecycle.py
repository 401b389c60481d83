"""A request's two outside ends: its client leaving, and the gateway shutting down.

``Shutdown`` is the process's drain: it begins when the server stops (the protocols in
``serving`` call ``begin``), lets requests in flight run for ``grace_s``, then stops the
ones still running; the event sockets close only once no request is left, so that their
users hear how each one ended. ``Watch`` stops the request of the current task, the way
``asyncio.timeout`` does: it cancels the task with a ``StopReason`` as the message, which
is what the cascade reports in ``request_failed``, and at the end of the block turns the
cancellation into ``RequestStopped``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from types import TracebackType

from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from sincere.stop import StopReason


class RequestStopped(Exception):
    """The request was stopped from outside; ``reason`` says why."""

    def __init__(self, reason: StopReason) -> None:
        super().__init__(reason.message)
        self.reason = reason


class Shutdown:
    """The drain of one server process: a grace period, then every request still running stops."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.begun = False
        self.expired = False
        self._in_flight = 0
        self._watches: set[Watch] = set()
        self._when_drained: list[Callable[[], None]] = []

    def begin(self) -> None:
        """The server stops taking requests: the grace period starts (once)."""
        if self.begun:
            return
        self.begun = True
        asyncio.get_running_loop().call_later(self.grace_s, self._expire)
        self._check_drained()

    @contextmanager
    def request(self) -> Iterator[None]:
        """Count a request as in flight until it has sent its last byte."""
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self._check_drained()

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once shutdown has begun and no request is in flight."""
        self._when_drained.append(callback)
        self._check_drained()

    def _expire(self) -> None:
        self.expired = True
        for watch in list(self._watches):
            watch.stop(StopReason.SHUTTING_DOWN)

    def _check_drained(self) -> None:
        if not self.begun or self._in_flight:
            return
        callbacks, self._when_drained = self._when_drained, []
        loop = asyncio.get_running_loop()
        for callback in callbacks:
            # After the events the last requests published are on their sockets' way:
            # each subscriber was woken when its event was published, which came first.
            loop.call_soon(callback)


class ClientConnection:
    """One client connection's end, told to whoever watches it: the ASGI extension
    ``scope["extensions"][CONNECTION_EXTENSION]["connection"]`` that
    ``serving.GatewayHttpProtocol`` sets, so that a watch needs no task of its own
    waiting on ``receive()``."""

    __slots__ = ("_callbacks", "closed")

    def __init__(self) -> None:
        self.closed = False
        self._callbacks: set[Callable[[], None]] = set()

    def on_close(self, callback: Callable[[], None]) -> None:
        self._callbacks.add(callback)

    def forget(self, callback: Callable[[], None]) -> None:
        self._callbacks.discard(callback)

    def close(self) -> None:
        self.closed = True
        callbacks, self._callbacks = self._callbacks, set()
        for callback in callbacks:
            callback()


CONNECTION_EXTENSION = "sincere.connection"


class Watch:
    """``async with Watch(scope, receive, shutdown):`` the block is stopped when the client
    disconnects (``CLIENT_GONE``) or the shutdown grace runs out (``SHUTTING_DOWN``), and
    ``RequestStopped`` is raised at its end.

    The request body must have been read: without the server's ``CONNECTION_EXTENSION``
    the watch takes the next ``receive()`` message, which is then only ever
    ``http.disconnect``. Send the response's last message after the block, since a
    finished response also reads as a disconnect.
    """

    def __init__(self, scope: Scope, receive: Receive, shutdown: Shutdown) -> None:
        extension = scope.get("extensions", {}).get(CONNECTION_EXTENSION, {})
        self._connection: ClientConnection | None = extension.get("connection")
        self._receive = receive
        self.shutdown = shutdown
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._listener: asyncio.Task[None] | None = None
        self.reason: StopReason | None = None

    async def __aenter__(self) -> Watch:
        if self.shutdown.expired:
            raise RequestStopped(StopReason.SHUTTING_DOWN)
        if self._connection is not None and self._connection.closed:
            raise RequestStopped(StopReason.CLIENT_GONE)
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        if self._connection is not None:
            self._connection.on_close(self._client_gone)
        else:
            self._listener = asyncio.create_task(self._listen())
        self.shutdown._watches.add(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        if self._connection is not None:
            self._connection.forget(self._client_gone)
        if self._listener is not None:
            self._listener.cancel()
        self.shutdown._watches.discard(self)
        task, self._task = self._task, None
        # uncancel() runs whenever this watch cancelled; only a cancellation that reached the
        # block's end, with no other one pending, is this watch's to turn into RequestStopped.
        if (
            self.reason is not None
            and task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise RequestStopped(self.reason) from None

    def stop(self, reason: StopReason) -> None:
        """Stop the block (once), if it is still running."""
        if self._task is not None and self.reason is None:
            self.reason = reason
            self._task.cancel(reason)

    def _client_gone(self) -> None:
        self.stop(StopReason.CLIENT_GONE)

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.stop(StopReason.CLIENT_GONE)


async def close_stopped(stream: AsyncGenerator[object, None], reason: StopReason) -> None:
    """Close a generator the stop left suspended, so that it sees why (``CancelledError``
    with the reason, not the bare ``GeneratorExit`` of ``aclose``); a finished one is left."""
    with suppress(asyncio.CancelledError, StopAsyncIteration):
        await stream.athrow(asyncio.CancelledError(reason))


class WatchedStream(StreamingResponse):
    """A streamed body under a ``Watch``: it stops when its client leaves or the shutdown
    grace runs out. ``on_stop(reason)`` closes what produced the body (so that its events
    say why) and gives the last bytes to send: the in-band error when shutting down; a
    client that left gets nothing more. ``background`` runs at the end, whatever happened.
    """

    def __init__(
        self,
        content: AsyncGenerator[bytes, None],
        *,
        shutdown: Shutdown,
        on_stop: Callable[[StopReason], Awaitable[bytes]],
        headers: Mapping[str, str],
        media_type: str,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(content, headers=headers, media_type=media_type, background=background)
        self._content = content
        self._shutdown = shutdown
        self._on_stop = on_stop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._stream(scope, receive, send)
        finally:
            await self._content.aclose()
            if self.background is not None:
                await self.background()

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        last = b""
        try:
            async with Watch(scope, receive, self._shutdown):
                async for chunk in self._content:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except RequestStopped as stop:
            last = await self._on_stop(stop.reason)
            if stop.reason is StopReason.CLIENT_GONE:
                return
        await send({"type": "http.response.body", "body": last, "more_body": False})
