"""Watch and Shutdown on their own: what stops a request's block, and what does not."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sincere.server.lifecycle import (
    CONNECTION_EXTENSION,
    ClientConnection,
    RequestStopped,
    Shutdown,
    Watch,
)
from sincere.stop import StopReason

WAIT_S = 30


def _server_receive() -> tuple[asyncio.Queue[dict[str, Any]], Any]:
    """An ASGI receive as a server gives it once the body is read: the next message comes
    when the client goes (the test puts it in the queue)."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    return queue, queue.get


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()


async def _stop_reason(watch: Watch, meanwhile: Any = None) -> StopReason:
    """Run a block that never ends by itself under ``watch`` (calling ``meanwhile`` soon)."""
    if meanwhile is not None:
        asyncio.get_running_loop().call_soon(meanwhile)
    try:
        async with asyncio.timeout(WAIT_S), watch:
            await _forever()
    except RequestStopped as stopped:
        return stopped.reason
    raise AssertionError("the block was not stopped")


async def test_a_disconnect_from_receive_stops_the_block() -> None:
    queue, receive = _server_receive()
    watch = Watch({}, receive, Shutdown(grace_s=60))
    disconnect = {"type": "http.disconnect"}
    assert await _stop_reason(watch, lambda: queue.put_nowait(disconnect)) is StopReason.CLIENT_GONE


async def test_a_closed_connection_from_the_protocol_stops_the_block() -> None:
    connection = ClientConnection()
    scope = {"extensions": {CONNECTION_EXTENSION: {"connection": connection}}}
    _, receive = _server_receive()
    watch = Watch(scope, receive, Shutdown(grace_s=60))
    assert await _stop_reason(watch, connection.close) is StopReason.CLIENT_GONE
    with pytest.raises(RequestStopped):  # a request that starts on a closed connection
        async with Watch(scope, receive, Shutdown(grace_s=60)):
            raise AssertionError("the block must not run")


async def test_the_end_of_the_grace_period_stops_the_block_and_later_ones() -> None:
    _, receive = _server_receive()
    shutdown = Shutdown(grace_s=0.01)
    watch = Watch({}, receive, shutdown)
    assert await _stop_reason(watch, shutdown.begin) is StopReason.SHUTTING_DOWN
    with pytest.raises(RequestStopped):
        async with Watch({}, receive, shutdown):
            raise AssertionError("the block must not run")


async def test_a_block_that_ends_first_is_not_stopped_and_other_cancellations_pass() -> None:
    queue, receive = _server_receive()
    async with Watch({}, receive, Shutdown(grace_s=60)):
        await asyncio.sleep(0)
    queue.put_nowait({"type": "http.disconnect"})  # after the block: nothing to stop
    await asyncio.sleep(0.01)
    _, receive = _server_receive()

    async def cancelled_from_elsewhere() -> None:
        async with Watch({}, receive, Shutdown(grace_s=60)):
            await _forever()

    task = asyncio.create_task(cancelled_from_elsewhere())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):  # not the watch's: not turned into a stop
        await task


async def test_the_drain_runs_its_callbacks_once_no_request_is_in_flight() -> None:
    shutdown = Shutdown(grace_s=60)
    drained: list[str] = []
    with shutdown.request():
        shutdown.begin()
        shutdown.when_drained(lambda: drained.append("sockets closed"))
        await asyncio.sleep(0.01)
        assert drained == []  # a request is still in flight
    await asyncio.sleep(0.01)
    assert drained == ["sockets closed"]
