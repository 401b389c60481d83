"""ASGI middleware: the request id on every response, and the request body size limit."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sincere.context import new_request_id
from sincere.errors import ErrorContext, PayloadTooLarge
from sincere.server.http_errors import error_response
from sincere.server.metrics import Metrics

_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Metric labels are fixed route names, so that a scan of random paths cannot grow them.
_ROUTES = {
    "/v1/chat/completions": "chat",
    "/v1/models": "models",
    "/health": "health",
    "/livez": "livez",
    "/readyz": "readyz",
    "/status": "status",
    "/metrics": "metrics",
}


class RequestIdAndBodyLimit:
    """Takes ``x-request-id`` from the client (or makes one) and echoes it; refuses big
    bodies; counts responses by route and status.

    Plain ASGI rather than BaseHTTPMiddleware: it runs on every request and must cost
    next to nothing.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _CLIENT_ID.fullmatch(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        raw = rid.encode()
        route = _ROUTES.get(scope["path"], "other")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", raw)]
                self.metrics.count_request(route, message["status"])
            await send(message)

        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await self._too_large(scope, rid, send_with_id)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self._error(rid)
            return message

        await self.app(scope, counting_receive, send_with_id)

    def _error(self, rid: str) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the request body is larger than {self.max_body_bytes} bytes",
            context=ErrorContext(request_id=rid),
            suggestions=["Send a shorter request, or raise server.max_body_bytes."],
        )

    async def _too_large(self, scope: Scope, rid: str, send: Send) -> None:
        response = error_response(self._error(rid), scope["path"])
        await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
