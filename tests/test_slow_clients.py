"""Slow, idle and departing clients against the live gateway, on raw sockets.

The gateway runs with the protocol and timeouts of `sincere serve` (tests/live.py uses
serving.uvicorn_options), here shortened so that each limit fires within a test.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sincere.runtime import build_runtime
from sincere.server import websocket as events_route
from tests.faults import FaultServer
from tests.live import LiveGateway, LiveServer, run, settings_for

WAIT_S = 30  # bound on waiting for something that should happen (never asserted as a duration)
LIMITS = {"header_timeout_s": 1, "body_timeout_s": 1, "keep_alive_s": 1, "max_sockets_per_user": 2}


@pytest.fixture
def strict(tmp_path: Path, fault_server: FaultServer) -> Iterator[LiveGateway]:
    settings = settings_for(tmp_path, fault_server.base_url).with_server(**LIMITS)
    gateway = build_runtime(settings, env={})
    with LiveServer(gateway) as running:
        running.keys["alice"], _ = run(gateway.keys.create("alice", "free", "user"))
        yield running


def _connect(live: LiveGateway) -> socket.socket:
    host, port = live.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=WAIT_S)


def _read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _trickle(sock: socket.socket, pieces: Iterator[bytes], every_s: float = 0.2) -> None:
    """Send a piece every ``every_s`` until the server answers or closes."""
    sock.settimeout(every_s)
    try:
        for piece in pieces:
            sock.sendall(piece)
            try:
                sock.recv(1, socket.MSG_PEEK)  # an answer is waiting, or the server closed
            except TimeoutError:
                continue
            break
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed while sending
    finally:
        sock.settimeout(WAIT_S)


def _response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _count(live: LiveGateway, status: int) -> float:
    value = live.gateway.metrics.registry.get_sample_value(
        "sincere_requests_total", {"route": "chat", "status": str(status)}
    )
    return value or 0.0


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.01)


def _chat_head(live: LiveGateway, length: int, rid: str = "slow-upload") -> bytes:
    return (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {live.keys['alice']}\r\nx-request-id: {rid}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def test_a_connection_that_never_sends_a_byte_is_closed(strict: LiveGateway) -> None:
    with _connect(strict) as sock:
        assert _read_to_end(sock) == b""  # closed without a word: nothing was asked


def test_a_request_head_sent_a_line_at_a_time_gets_408_and_is_closed(
    strict: LiveGateway,
) -> None:
    with _connect(strict) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        _trickle(sock, (f"X-Slow-{i}: x\r\n".encode() for i in range(1000)))
        status, headers, body = _response(_read_to_end(sock))
    assert status == 408
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]  # a /v1 path: the OpenAI error object
    assert error["code"] == "request_timeout"
    assert error["request_id"] == headers["x-request-id"]
    assert "head did not arrive within 1 s" in error["message"]


def test_a_body_sent_a_byte_at_a_time_gets_408_with_its_request_id_and_is_closed(
    strict: LiveGateway,
) -> None:
    with _connect(strict) as sock:
        sock.sendall(_chat_head(strict, 1000))
        _trickle(sock, (b" " for _ in range(1000)))
        status, headers, body = _response(_read_to_end(sock))
    assert status == 408
    error = json.loads(body)["error"]
    assert (error["code"], error["request_id"]) == ("request_timeout", "slow-upload")
    assert headers["x-request-id"] == "slow-upload"
    assert "body did not arrive within 1 s" in error["message"]
    _until(lambda: _count(strict, 408) == 1)  # the application counts what the protocol sent
    assert _count(strict, 499) == 0


def test_an_idle_keep_alive_connection_is_closed(strict: LiveGateway) -> None:
    with _connect(strict) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, headers, _ = _response(_read_to_end(sock))  # the answer, then the close
    assert status == 200
    assert "connection" not in headers  # kept alive, then closed for idling


def test_a_body_nobody_reads_cannot_hold_the_connection(strict: LiveGateway) -> None:
    received, closed = b"", False
    with _connect(strict) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")
        sock.settimeout(0.05)
        try:
            for _ in range(999):  # a byte every 0.05 s, also after the answer
                sock.sendall(b" ")
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                received += chunk
                if not chunk:
                    closed = True
                    break
        except (BrokenPipeError, ConnectionResetError):
            closed = True
    assert closed, "the body kept the connection open"
    status, _, _ = _response(received)
    assert status == 200  # /livez answered without reading the body


def test_a_client_that_leaves_during_the_upload_is_counted_as_499_without_a_traceback(
    strict: LiveGateway, caplog: pytest.LogCaptureFixture
) -> None:
    server_log = logging.getLogger("uvicorn.error")  # uvicorn's loggers do not propagate
    server_log.addHandler(caplog.handler)
    try:
        with _connect(strict) as sock:
            sock.sendall(_chat_head(strict, 1000) + b'{"model": "gpt", ')
        _until(lambda: _count(strict, 499) + _count(strict, 500) > 0)  # the request ended
    finally:
        server_log.removeHandler(caplog.handler)
    assert (_count(strict, 499), _count(strict, 500)) == (1, 0)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_user_gets_at_most_max_sockets_per_user_event_sockets(
    strict: LiveGateway,
) -> None:
    headers = {"Authorization": f"Bearer {strict.keys['alice']}"}

    async def ready(ws: object) -> None:
        async with asyncio.timeout(WAIT_S):
            assert json.loads(await ws.recv())["type"] == "ready"  # type: ignore[attr-defined]

    async with connect(strict.ws, additional_headers=headers) as first:
        await ready(first)
        async with connect(strict.ws, additional_headers=headers) as second:
            await ready(second)
            async with connect(strict.ws, additional_headers=headers) as third:
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(WAIT_S):
                        await third.recv()
            assert third.close_code == events_route.CLOSE_POLICY_VIOLATION
            assert third.close_reason == (
                "too many event sockets for this user (limit 2); close one first"
            )
        # The slot is free once the server has seen the socket go (a moment after the close).
        deadline = time.monotonic() + WAIT_S
        while True:
            async with connect(strict.ws, additional_headers=headers) as again:
                try:
                    await ready(again)
                    break
                except ConnectionClosed:
                    assert again.close_code == events_route.CLOSE_POLICY_VIOLATION
                    assert time.monotonic() < deadline, "the slot was never freed"
            await asyncio.sleep(0.01)


def test_a_late_body_gets_its_408_even_if_the_client_still_sends_after_it(
    strict: LiveGateway,
) -> None:
    """A client that keeps sending after the gateway's 408 must still read the 408: a socket
    closed with unread bytes, or one that receives more, answers with a reset, and a reset
    makes the client's system drop the answer it has not read yet."""
    with _connect(strict) as sock:
        sock.sendall(_chat_head(strict, 1000) + b"{")
        sock.recv(1, socket.MSG_PEEK)  # the 408 has arrived (unread)
        time.sleep(0.2)  # the gateway is done with the connection
        for _ in range(20):  # bytes the client had queued before it saw the answer
            try:
                sock.sendall(b" " * 100)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.01)
        status, _, body = _response(_read_to_end(sock))
    assert status == 408
    assert json.loads(body)["error"]["request_id"] == "slow-upload"


def test_after_a_408_the_gateway_closes_in_stages_so_late_bytes_cannot_reset_the_answer(
    strict: LiveGateway,
) -> None:
    """RFC 9112 §9.6: a server that closes at once while the client still sends answers the
    client's next bytes with a reset, which can erase the 408 from the client's buffers
    before it is read. The gateway ends its side first, reads and drops what still comes,
    and closes only when the client does (or after a short linger)."""
    with _connect(strict) as sock:
        sock.sendall(_chat_head(strict, 1000) + b"{")
        status, _, _ = _response(_read_to_end(sock))  # the 408, then the gateway's FIN
        assert status == 408
        sock.sendall(b" " * 100)  # bytes the client had queued before it read the answer
        time.sleep(0.2)  # a reset, if any, has arrived by now
        sock.sendall(b" " * 100)  # refused (EPIPE) once the gateway has reset the connection
