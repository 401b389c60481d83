"""WS /v1/events: a user's own service and request events, live, with replay.

The client authenticates with the same API key as over HTTP (``Authorization: Bearer``
on the upgrade, or a first message ``{"type": "auth", "key": ...}`` from a browser),
then gets ``ready``, an optional ``gap``, and its events in id order, with heartbeats
when idle. A client too slow for its bounded buffer is closed with 1013 and the id to
resume from; the bus never waits for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from sincere.errors import AuthenticationFailed, ServiceError
from sincere.events import SlowConsumer
from sincere.ports import Subscription
from sincere.runtime import Runtime
from sincere.server.http_errors import bearer_key, request_id

log = logging.getLogger("sincere.server")
router = APIRouter()

AUTH_TIMEOUT_S = 5.0  # how long a browser has to send its auth message
KEY_RECHECK_S = 1.0  # how often an open socket's key is checked again (revocation)
CLOSE_BAD_REQUEST = 4400  # 4000-4999 are the application's; 4400 and 4401 mirror HTTP
CLOSE_UNAUTHORIZED = 4401
CLOSE_TRY_AGAIN_LATER = 1013
# Over server.max_sockets_per_user: a policy, not a passing overload, so not 1013 (which
# reconnecting clients retry at once); the reason says what to do.
CLOSE_POLICY_VIOLATION = 1008
_NO_KEY = (
    "no API key: send 'Authorization: Bearer <key>' or a first message "
    '{"type": "auth", "key": "<key>"}'
)


_BAD_LAST_ID = "last_event_id must be a whole number >= 0: the id of the last event received"


@router.websocket("/v1/events")
async def events(websocket: WebSocket) -> None:
    """Stream the caller's events; with ``?last_event_id=N``, the retained ones after it first."""
    gw: Runtime = websocket.app.state.runtime
    await websocket.accept()
    # Read here, not by FastAPI's Query validation: that refuses the upgrade with a bare 403,
    # which a client cannot tell from an authentication failure.
    raw_id = websocket.query_params.get("last_event_id")
    last_event_id = _event_id(raw_id) if raw_id is not None else None
    if raw_id is not None and last_event_id is None:
        await websocket.close(CLOSE_BAD_REQUEST, _BAD_LAST_ID)
        return
    try:
        key = await _key(websocket)
    except WebSocketDisconnect:
        return
    if not key:
        await websocket.close(CLOSE_UNAUTHORIZED, _NO_KEY)
        return
    try:
        record = await gw.auth.key(key, request_id(websocket))
    except AuthenticationFailed as exc:
        await websocket.close(CLOSE_UNAUTHORIZED, f"{exc.message}; check the key or create one")
        return
    except ServiceError as exc:  # the store could not say: no verdict on the key
        await websocket.close(CLOSE_TRY_AGAIN_LATER, f"{exc.message}; reconnect later"[:123])
        return

    sockets: SocketLimit = websocket.app.state.event_sockets
    if not sockets.acquire(record.user_id):
        reason = f"too many event sockets for this user (limit {sockets.limit}); close one first"
        await websocket.close(CLOSE_POLICY_VIOLATION, reason)
        return
    oldest, last_id = await gw.bus.bounds(record.user_id)
    sub = await gw.bus.subscribe(record.user_id, last_event_id)
    try:
        await websocket.send_json(
            {
                "type": "ready",
                "user_id": record.user_id,
                "last_event_id": last_id,
                # A client that hears nothing for a few of these knows the link is dead.
                "heartbeat_s": gw.settings.server.heartbeat_s,
            }
        )
        if sub.gap:
            gap: dict[str, Any] = {
                "type": "gap",
                "after_id": last_event_id,
                "oldest_available_id": oldest,
                "reason": sub.gap_reason,
            }
            await websocket.send_json(gap)
        closing = await _first_to_end(
            _pump(websocket, sub, gw),
            _listen(websocket),
            _watch_key(gw, key, request_id(websocket)),
        )
        if closing is not None:
            await websocket.close(*closing)
    except WebSocketDisconnect:
        pass
    finally:
        sub.close()
        sockets.release(record.user_id)


class SocketLimit:
    """Open event sockets per user, up to ``limit`` each (one per process: one bus)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, user_id: str) -> bool:
        count = self._open.get(user_id, 0)
        if count >= self.limit:
            return False
        self._open[user_id] = count + 1
        return True

    def release(self, user_id: str) -> None:
        count = self._open[user_id] - 1
        if count:
            self._open[user_id] = count
        else:
            del self._open[user_id]


def _event_id(text: str) -> int | None:
    """A non-negative decimal id (ASCII digits only), or None."""
    if not (text.isascii() and text.isdigit()):
        return None
    try:
        return int(text)
    except ValueError:  # longer than Python converts (4300 digits)
        return None


async def _key(websocket: WebSocket) -> str | None:
    """The key from the upgrade's Authorization header, else from a first auth message."""
    if (key := bearer_key(websocket.headers)) is not None:
        return key
    try:
        async with asyncio.timeout(AUTH_TIMEOUT_S):
            message = await websocket.receive()
    except TimeoutError:
        return None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    try:
        data: Any = json.loads(message.get("text") or "")
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("type") == "auth" and isinstance(data.get("key"), str):
        given: str = data["key"]
        return given
    return None


Close = tuple[int, str]  # a close code and its reason


async def _first_to_end(*jobs: Coroutine[Any, Any, Close | None]) -> Close | None:
    """Run the socket's jobs until one ends; cancel the others; the close it asks for."""
    tasks = [asyncio.create_task(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return next(iter(done)).result()


async def _watch_key(gw: Runtime, key: str, rid: str) -> Close:
    """Re-check the key every ``KEY_RECHECK_S`` while the socket is open; 4401 once revoked.

    Verified keys are cached for 5 s, so the socket closes within the same few seconds in
    which HTTP requests with the key start being refused.
    """
    while True:
        await asyncio.sleep(KEY_RECHECK_S)
        try:
            await gw.auth.key(key, rid)
        except AuthenticationFailed:
            return CLOSE_UNAUTHORIZED, "the API key was revoked"
        except Exception:  # a silent store is no verdict on the key: check again
            log.warning("re-checking a WebSocket's key failed", exc_info=True)


async def _pump(websocket: WebSocket, sub: Subscription, gw: Runtime) -> Close | None:
    """Send events as they come, a heartbeat when idle; 1013 when the bus ended the
    subscription (the buffer overflowed, or Redis lost the stream)."""
    idle_s = gw.settings.server.heartbeat_s
    try:
        while True:
            try:
                async with asyncio.timeout(idle_s):
                    event = await anext(sub)  # safe to cancel: nothing is taken until it returns
            except TimeoutError:
                await websocket.send_json(
                    {"type": "heartbeat", "at": datetime.now(UTC).isoformat()}
                )
                continue
            await websocket.send_json({"type": "event", "event": event.to_dict()})
            gw.metrics.event_deliveries.inc()
    except SlowConsumer as ended:
        return CLOSE_TRY_AGAIN_LATER, f"{ended}; reconnect with last_event_id={sub.last_id}"
    except (StopAsyncIteration, WebSocketDisconnect):
        return None


async def _listen(websocket: WebSocket) -> None:
    """Read until the client goes; nothing it sends after auth means anything."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass
