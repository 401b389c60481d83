"""How sincere runs under uvicorn: the options `sincere serve` and the tests' server share.

uvicorn bounds an idle keep-alive connection (``timeout_keep_alive``) but not a connection
that never sends a byte, a request head that trickles in, or a body nobody reads. The
HTTP protocol here adds those deadlines: a request head must arrive within
``header_timeout_s`` of the connection (or of its first byte, on a kept-alive one), and a
body within ``body_timeout_s`` of its head. The chat route bounds the body it reads the
same way and answers 408 itself (``openai_routes._body``); the protocol closes a
connection whose body is still arriving after its response.

Both protocols start the drain (``lifecycle.Shutdown``) when the server stops, and the
event sockets close (1012, service restart) only once no request is in flight, so that
their users hear how each request ended.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from sincere.config import ServerConfig
from sincere.context import new_request_id
from sincere.errors import ErrorContext
from sincere.server.http_errors import RequestTimeout, error_response
from sincere.server.lifecycle import Shutdown

# Keys of the lifespan state (``app.create_app`` fills them), which uvicorn hands to every
# protocol it makes: how the protocols find the app's limits and its drain.
SERVER_KEY = "sincere.server"
SHUTDOWN_KEY = "sincere.shutdown"

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
    """uvicorn's httptools protocol, with deadlines on reading a request, and the drain."""

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
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = False  # part of a request head has arrived, not all of it

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._deadline is None:  # the next request on a kept-alive connection
            self._head_deadline()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()
        upgrade = self.parser.should_upgrade() and self._should_upgrade()
        if self._limits is not None and not upgrade:
            self._arm(self._limits.body_timeout_s, self._body_late)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def shutdown(self) -> None:
        if (drain := _drain(self.app_state)) is not None:
            drain.begin()
        super().shutdown()

    def _head_deadline(self) -> None:
        if self._limits is not None:
            self._arm(self._limits.header_timeout_s, self._head_late)

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_late(self) -> None:
        """No complete request head in time: 408 if part of one came, then close."""
        self._deadline = None
        if self._in_head and self._limits is not None:
            what = f"the request head did not arrive within {self._limits.header_timeout_s:g} s"
            self._send_408(what)
        self.transport.close()

    def _body_late(self) -> None:
        """The body is not complete in time. Answered already: nobody reads the rest, so
        close. Else the application answers (408 if it is reading) and then it closes."""
        self._deadline = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()
        else:
            self.cycle.keep_alive = False

    def _send_408(self, message: str) -> None:
        rid = new_request_id()
        error = RequestTimeout(message, context=ErrorContext(request_id=rid))
        response = error_response(error, self._path())
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
