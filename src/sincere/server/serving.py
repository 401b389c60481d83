"""How sincere runs under uvicorn: the options `sincere serve` and the tests' server share.

uvicorn bounds an idle keep-alive connection (``timeout_keep_alive``) but not a connection
that never sends a byte, a request head that trickles in, or a slow body. The HTTP
protocol here adds those deadlines: a request head must arrive within
``header_timeout_s`` of the connection (or of its first byte, on a kept-alive one), and its
body within ``body_timeout_s`` of the head; else a 408 (the error object the route family
uses, with the request id) and the connection is closed. It also tells the app when a
connection ends (``lifecycle.ClientConnection``), which stops the requests on it.

Both protocols start the drain (``lifecycle.Shutdown``) when the server stops, and the
event sockets close (1012, service restart) only once no request is in flight, so that
their users hear how each request ended.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any, Literal

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from sincere.config import ServerConfig
from sincere.context import new_request_id
from sincere.errors import ErrorContext
from sincere.server.http_errors import RequestTimeout, error_response
from sincere.server.lifecycle import CONNECTION_EXTENSION, ClientConnection, Shutdown

# Keys of the lifespan state (``app.create_app`` fills them), which uvicorn hands to every
# protocol it makes: how the protocols find the app's limits and its drain.
SERVER_KEY = "sincere.server"
SHUTDOWN_KEY = "sincere.shutdown"
# After a 408, how long the client's remaining bytes are read and dropped before the
# connection is closed anyway (a client that closes its side ends it at once).
LINGER_S = 2.0
# Set in a request's scope state when the protocol answered 408 for its late body.
READ_TIMED_OUT = "sincere.read_timed_out"

# After the grace period, how long the stopped requests' last bytes (their in-band errors)
# and the event sockets' close get before uvicorn cancels whatever is left.
SHUTDOWN_MARGIN_S = 1


def uvicorn_options(server: ServerConfig) -> dict[str, Any]:
    """The uvicorn settings that make the gateway's limits real, for ``uvicorn.run`` or
    ``uvicorn.Config``; the same for ``sincere serve`` and the tests' live server."""
    return {
        "http": GatewayHttpProtocol,
        "ws": GatewayWebSocketProtocol,
        "lifespan": "on",
        "timeout_keep_alive": server.keep_alive_s,
        "timeout_graceful_shutdown": math.ceil(server.shutdown_grace_s) + SHUTDOWN_MARGIN_S,
    }


def _drain(app_state: dict[str, Any]) -> Shutdown | None:
    drain = app_state.get(SHUTDOWN_KEY)
    return drain if isinstance(drain, Shutdown) else None


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with deadlines on reading a request, the connection's
    end told to the app (``CONNECTION_EXTENSION``), and the drain.

    A deadline is armed only when a read leaves a request head or body incomplete, so a
    request that arrives in one packet costs no timer.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        server = app_state.get(SERVER_KEY)
        self._limits = server if isinstance(server, ServerConfig) else None
        self._connection = ClientConnection()
        self._extension: dict[object, object] = {"connection": self._connection}
        self._deadline: asyncio.TimerHandle | None = None
        self._reading: Literal["head", "body"] | None = None  # what is incomplete, if any
        self._lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._limits is not None:  # a connection that never speaks is closed too
            self._arm(self._limits.header_timeout_s, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        self._connection.close()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # after a timed-out read: dropped (see _close_in_stages)
        super().data_received(data)
        if self._reading is None or self._deadline is not None or self._limits is None:
            return  # nothing incomplete, or its deadline already runs
        if self.transport.is_closing():
            return
        if self._reading == "head":
            self._arm(self._limits.header_timeout_s, self._head_late)
        else:
            self._arm(self._limits.body_timeout_s, self._body_late)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope.setdefault("extensions", {})[CONNECTION_EXTENSION] = self._extension
        self._reading = "head"

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        upgrade = self.parser.should_upgrade() and self._should_upgrade()
        self._reading = None if upgrade else "body"

    def on_message_complete(self) -> None:
        self._disarm()
        self._reading = None
        super().on_message_complete()

    def shutdown(self) -> None:
        if (drain := _drain(self.app_state)) is not None:
            drain.begin()
        super().shutdown()

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_late(self) -> None:
        """No complete request head in time: 408 if part of one came, then close."""
        self._deadline = None
        if self._reading == "head" and self._limits is not None:
            what = f"the request head did not arrive within {self._limits.header_timeout_s:g} s"
            self._send_408(what, self._path(), new_request_id())
            self._close_in_stages()
            return
        self.transport.close()  # nothing came: nothing to answer

    def _body_late(self) -> None:
        """The body is not complete in time. Unanswered: 408 (the application, waiting for
        the body, sees the client go and counts the 408). Answered: nobody reads the rest."""
        self._deadline = None
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            cycle.keep_alive = False  # let the response finish, then close
            return
        if cycle is not None and not cycle.response_started and self._limits is not None:
            state = cycle.scope.setdefault("state", {})
            state[READ_TIMED_OUT] = True
            rid = state.get("request_id")  # the request-id middleware's, when it ran
            what = f"the request body did not arrive within {self._limits.body_timeout_s:g} s"
            self._send_408(what, cycle.scope["path"], rid if isinstance(rid, str) else None)
        self._close_in_stages()

    def _close_in_stages(self) -> None:
        """Close a connection whose client may still be sending (RFC 9112 §9.6).

        Closing at once with the client's bytes unread, or before its next ones arrive,
        answers them with a reset, and a reset can erase the answer just sent (the 408)
        from the client's buffers before it is read. So: the app is told the client is
        gone (it answers nothing more), our side ends after the answer (a FIN), what
        still comes is read and dropped, and the connection closes when the client closes
        its side or after ``LINGER_S``.
        """
        self._lingering = True
        self._disarm()
        if self.cycle is not None:
            if not self.cycle.response_complete:
                self.cycle.disconnected = True  # uvicorn's own mark: nothing more is sent
            self.cycle.message_event.set()
        self._connection.close()
        if self.transport.is_closing() or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.transport.resume_reading()  # flow control may have paused it: drain it
        self.loop.call_later(LINGER_S, self.transport.close)

    def _send_408(self, message: str, path: str, rid: str | None) -> None:
        rid = rid or new_request_id()
        suggestion = "Send the whole request at once; this connection is closed."
        error = RequestTimeout(
            message, context=ErrorContext(request_id=rid), suggestions=[suggestion]
        )
        response = error_response(error, path)
        headers = [*response.raw_headers, (b"x-request-id", rid.encode())]
        headers.append((b"connection", b"close"))
        head = b"HTTP/1.1 408 Request Timeout\r\n"
        head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(head + b"\r\n" + bytes(response.body))

    def _path(self) -> str:
        """The path of the request line, when it arrived (it picks the error's format)."""
        try:
            path: bytes = httptools.parse_url(self.url).path
            return path.decode("latin-1")
        except (AttributeError, httptools.HttpParserInvalidURLError):
            return ""


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, closing only once the drain has no request in flight."""

    def shutdown(self) -> None:
        drain = _drain(self.app_state)
        if drain is None:
            super().shutdown()
            return
        drain.begin()
        drain.when_drained(self._close)

    def _close(self) -> None:
        if not self.transport.is_closing():
            WebSocketsSansIOProtocol.shutdown(self)
