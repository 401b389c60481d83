"""A real webhook receiver on 127.0.0.1 for escalation tests: it answers 503 to its first
``fail_first`` deliveries, then 204, and keeps every one it was sent.

It runs aiohttp on a loop of its own, in a thread of its own, so a test may block (on a
subprocess, on ``run``) while deliveries arrive. ``verify`` checks a Standard Webhooks
signature independently of sincere's signing module (the spec's recipe, written again).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

SECRET = "whsec_" + base64.b64encode(b"sincere-test-webhook-secret-32by").decode()
WAIT_S = 60  # bound on every wait for a delivery


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def type(self) -> str:
        return str(self.json.get("type"))

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


def verify(secret: str, received: Received) -> bool:
    """The receiver's check: any of the space-separated v1 signatures matches."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{received.id}.{received.headers['webhook-timestamp']}.".encode() + received.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = received.headers["webhook-signature"].split(" ")
    return any(
        hmac.compare_digest(s.removeprefix("v1,"), expected) for s in offered if s[:3] == "v1,"
    )


class Receiver:
    def __init__(self, fail_first: int = 0, port: int = 0) -> None:
        self.fail_first = fail_first
        self.port = port
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/sincere"

    def __enter__(self) -> Receiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/sincere", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            status = 503 if len(self.received) < self.fail_first else 204
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.received.append(Received(headers, body, status))
        return web.Response(status=status)

    def all(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def accepted(self) -> list[Received]:
        return [r for r in self.all() if r.status < 300]

    def wait_for(self, condition: Callable[[list[Received]], bool]) -> list[Received]:
        """Block until ``condition(all received)`` holds (bounded by ``WAIT_S``)."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            got = self.all()
            if condition(got):
                return got
            time.sleep(0.02)
        raise AssertionError(f"the receiver never saw what was awaited: {self.all()}")

    async def await_for(self, condition: Callable[[list[Received]], bool]) -> list[Received]:
        """``wait_for`` without blocking the caller's event loop."""
        return await asyncio.to_thread(self.wait_for, condition)
