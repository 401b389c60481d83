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
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket
from starlette.websockets import WebSocketDisconnect

from sincere.errors import AuthenticationFailed
from sincere.events import SlowConsumer, Subscription
from sincere.server.gateway import Gateway, bearer_key
from sincere.server.http_errors import request_id

router = APIRouter()

AUTH_TIMEOUT_S = 5.0  # how long a browser has to send its auth message
CLOSE_UNAUTHORIZED = 4401  # 4000-4999 are the application's; 4401 mirrors HTTP 401
CLOSE_TRY_AGAIN_LATER = 1013
# Over server.max_sockets_per_user: a policy, not a passing overload, so not 1013 (which
# reconnecting clients retry at once); the reason says what to do.
CLOSE_POLICY_VIOLATION = 1008
_NO_KEY = (
    "no API key: send 'Authorization: Bearer <key>' or a first message "
    '{"type": "auth", "key": "<key>"}'
)


@router.websocket("/v1/events")
async def events(
    websocket: WebSocket, last_event_id: Annotated[int | None, Query(ge=0)] = None
) -> None:
    """Stream the caller's events; with ``last_event_id``, the retained ones after it first."""
    gw: Gateway = websocket.app.state.gateway
    await websocket.accept()
    try:
        key = await _key(websocket)
    except WebSocketDisconnect:
        return
    try:  # the key store is a blocking database call: keep it off the event loop
        record = await gw.authenticate(key, request_id(websocket))
    except AuthenticationFailed as exc:
        reason = _NO_KEY if not key else f"{exc.message}; check the key or create one"
        await websocket.close(CLOSE_UNAUTHORIZED, reason)
        return

    sockets: SocketLimit = websocket.app.state.event_sockets
    if not sockets.acquire(record.user_id):
        reason = f"too many event sockets for this user (limit {sockets.limit}); close one first"
        await websocket.close(CLOSE_POLICY_VIOLATION, reason)
        return
    oldest, last_id = gw.bus.bounds(record.user_id)
    sub = gw.bus.subscribe(record.user_id, last_event_id)
    if last_event_id is None or last_event_id > last_id:
        delivered = last_id if last_event_id is None else 0
    else:
        delivered = last_event_id
    try:
        await websocket.send_json(
            {"type": "ready", "user_id": record.user_id, "last_event_id": last_id}
        )
        if sub.gap:
            gap: dict[str, Any] = {
                "type": "gap",
                "after_id": last_event_id,
                "oldest_available_id": oldest,
            }
            if last_event_id is not None and last_event_id > last_id:
                gap["reason"] = "after_id is beyond this stream's last event id"
            await websocket.send_json(gap)
        async with asyncio.TaskGroup() as tasks:
            pump = tasks.create_task(_pump(websocket, sub, gw, delivered))
            listen = tasks.create_task(_listen(websocket))
            pump.add_done_callback(lambda _: listen.cancel())
            listen.add_done_callback(lambda _: pump.cancel())
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


async def _pump(websocket: WebSocket, sub: Subscription, gw: Gateway, delivered: int) -> None:
    """Send events as they come, a heartbeat when idle; 1013 when the buffer overflowed."""
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
            delivered = event.id
    except SlowConsumer:
        reason = f"event buffer overflow; reconnect with last_event_id={delivered}"
        await websocket.close(CLOSE_TRY_AGAIN_LATER, reason)
    except (StopAsyncIteration, WebSocketDisconnect):
        return


async def _listen(websocket: WebSocket) -> None:
    """Read until the client goes; nothing it sends after auth means anything."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass
