"""A fault-injecting OpenAI-compatible HTTP server: a test double, never imported by product code.

Built on ``asyncio.start_server`` + ``h11`` so that it owns the TCP connection and can reset it,
cut a stream mid-body or go silent. It runs its own event loop in a daemon thread, so sync and
async tests can both use it::

    with FaultServer() as server:
        server.script(Fault.status(503), Fault.ok())  # the next two completions, FIFO
        ...  # point a client at server.base_url
        assert [r.fault.kind for r in server.requests] == ["status", "ok"]
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import re
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Self

import h11

__all__ = ["Fault", "FaultServer", "RecordedRequest", "refused_port", "tool_call_deltas"]

logger = logging.getLogger(__name__)
_PIECES = re.compile(r"\s*\S+|\s+")  # words with their leading whitespace; joins back exactly
_DONE = b"data: [DONE]\n\n"
_MALFORMED = b'data: {"choices": [\n\n'
_PROXY_PAGE = (
    "<html>\r\n<head><title>{0} {1}</title></head>\r\n<body>\r\n"
    "<center><h1>{0} {1}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_JSON = "application/json"
_MARK = "@@huge@@"  # where a huge line's content goes
_KEYS_URL = "https://platform.openai.com/account/api-keys"
_ERROR_TYPES = {403: "permission_error", 429: "requests"}  # otherwise invalid_request_error
_MESSAGES = {
    429: "Rate limit reached for requests. Please try again later.",
    500: "The server had an error while processing your request. Sorry about that!",
    503: "The engine is currently overloaded, please try again later.",
}


@dataclass(frozen=True)
class Fault:
    """What the server does with one ``POST /v1/chat/completions``. Build with the classmethods."""

    kind: str
    text: str | None = None
    delay_s: float = 0.0
    status_code: int = 200
    error_code: str | None = None
    error_type: str | None = None
    message: str | None = None
    retry_after: float | str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    after_chunks: int = 0
    seconds: float | None = None
    finish_reason: bool = True
    echo_key: bool = False
    rst: bool = False
    body: bytes | None = None
    content_type: str | None = None
    interval_s: float = 0.5
    comment: str = ": keep-alive"
    size: int = 0
    done: bool = True
    secret: str | None = None
    calls: tuple[tuple[str, str], ...] = ()  # (function name, arguments JSON text)
    events: tuple[str, ...] = ()  # raw_stream: the JSON of each event

    @classmethod
    def ok(cls, text: str | None = None, delay_s: float = 0.0) -> Fault:
        """A normal answer (``text``, else "Echo: <last user message>") after ``delay_s``."""
        return cls("ok", text=text, delay_s=delay_s)

    @classmethod
    def tool_calls(cls, *calls: tuple[str, str], text: str = "") -> Fault:
        """An answer that calls tools: ``(name, arguments)`` each, after ``text`` if any.

        finish_reason ``tool_calls``; content null without text. Streamed, each call comes
        as ``tool_call_deltas`` makes it: id, type and name first, then argument pieces.
        """
        return cls("tool_calls", text=text, calls=calls)

    @classmethod
    def raw_stream(cls, *events: Mapping[str, Any]) -> Fault:
        """Streaming: exactly these events (each as ``data: <json>``), then ``[DONE]``."""
        return cls("raw_stream", events=tuple(json.dumps(e) for e in events))

    @classmethod
    def status(
        cls,
        code: int,
        *,
        error_code: str | None = None,
        message: str | None = None,
        error_type: str | None = None,
        retry_after: float | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """An OpenAI error body ``{"error": {...}}`` with HTTP status ``code``."""
        return cls(
            "status",
            status_code=code,
            error_code=error_code,
            message=message,
            error_type=error_type,
            retry_after=retry_after,
            headers=tuple((headers or {}).items()),
        )

    @classmethod
    def rate_limited(cls, retry_after: float | str | None = None) -> Fault:
        return cls.status(429, error_code="rate_limit_exceeded", retry_after=retry_after)

    @classmethod
    def context_length(cls) -> Fault:
        message = (
            "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 9001 tokens. Please reduce the length of the messages."
        )
        return cls.status(400, error_code="context_length_exceeded", message=message)

    @classmethod
    def content_policy(
        cls, message: str = "Your request was rejected as a result of our safety system."
    ) -> Fault:
        return cls.status(400, error_code="content_policy_violation", message=message)

    @classmethod
    def invalid_key(cls, echo_key: bool = True) -> Fault:
        """401 ``invalid_api_key``; with ``echo_key`` the message quotes the bearer token sent."""
        return cls("status", status_code=401, error_code="invalid_api_key", echo_key=echo_key)

    @classmethod
    def model_not_found(cls) -> Fault:
        message = "The model does not exist or you do not have access to it."
        return cls.status(404, error_code="model_not_found", message=message)

    @classmethod
    def reset(cls) -> Fault:
        """Read the request, then RST the connection without a single response byte."""
        return cls("reset", rst=True)

    @classmethod
    def hang(cls, seconds: float | None = None) -> Fault:
        """Read the request, send nothing for ``seconds`` (None: until stop), then close."""
        return cls("hang", seconds=seconds)

    @classmethod
    def slow_first_token(cls, delay_s: float) -> Fault:
        """Streaming: 200 headers at once, first chunk after ``delay_s``. Else: late headers."""
        return cls("slow_first_token", delay_s=delay_s)

    @classmethod
    def cut(cls, after_chunks: int, *, reset: bool = False) -> Fault:
        """Send ``after_chunks`` content chunks, then close mid-body (FIN; RST with ``reset``)."""
        return cls("cut", after_chunks=after_chunks, rst=reset)

    @classmethod
    def stall(cls, after_chunks: int, seconds: float | None = None) -> Fault:
        """Send ``after_chunks`` content chunks, go silent for ``seconds``, then close mid-body."""
        return cls("stall", after_chunks=after_chunks, seconds=seconds)

    @classmethod
    def malformed_chunk(cls, after_chunks: int) -> Fault:
        """Insert ``data: {"choices": [`` after ``after_chunks`` chunks; otherwise a full stream."""
        return cls("malformed_chunk", after_chunks=after_chunks)

    @classmethod
    def no_done(cls, finish_reason: bool = True) -> Fault:
        """A clean stream without ``data: [DONE]`` (and without the finish chunk if False)."""
        return cls("no_done", finish_reason=finish_reason)

    @classmethod
    def empty(cls) -> Fault:
        return cls("empty", text="")

    @classmethod
    def whitespace(cls) -> Fault:
        return cls("whitespace", text="   \n  ")

    @classmethod
    def degenerate(cls) -> Fault:
        return cls("degenerate", text="the cat sat on the mat " * 40)

    @classmethod
    def json_answer(cls, text: str | None = None) -> Fault:
        """One JSON completion (with usage, no final newline) even to ``"stream": true``."""
        return cls("json_answer", text=text)

    @classmethod
    def raw(cls, status: int, content_type: str, body: bytes) -> Fault:
        """Exactly this status, content type and body, whatever was asked."""
        return cls("raw", status_code=status, content_type=content_type, body=body)

    @classmethod
    def proxy_error(cls, status: int = 502) -> Fault:
        """The HTML error page of a proxy in front of the provider (nginx's, verbatim)."""
        return cls.raw(status, "text/html", _PROXY_PAGE.format(status, _phrase(status)).encode())

    @classmethod
    def no_final_newline(cls, done: bool = True) -> Fault:
        """A stream whose last line has no newline: ``data: [DONE]``, or without ``done``
        the usage event (then there is no ``[DONE]``)."""
        return cls("no_final_newline", done=done)

    @classmethod
    def keep_alive(
        cls,
        after_chunks: int = 0,
        *,
        interval_s: float = 0.5,
        comment: str = ": keep-alive",
        seconds: float | None = None,
    ) -> Fault:
        """``after_chunks`` content chunks, then only ``comment`` lines every ``interval_s``
        (for ``seconds``, None: until the client leaves), then a close mid-body."""
        return cls(
            "keep_alive",
            after_chunks=after_chunks,
            interval_s=interval_s,
            comment=comment,
            seconds=seconds,
        )

    @classmethod
    def huge_line(cls, size: int, *, json_body: bool = False) -> Fault:
        """Streaming: one content event of ``size`` bytes ("x" each) in a single line, then a
        normal end. Non-streaming (or with ``json_body``, whatever was asked): a JSON
        completion whose content has ``size`` bytes. Usage counts the content as one word."""
        return cls("huge_line", size=size, content_type=_JSON if json_body else None)

    @classmethod
    def crlf(cls) -> Fault:
        """A normal answer whose stream ends every line in CRLF instead of LF."""
        return cls("crlf")

    @classmethod
    def linger(cls, seconds: float | None = None) -> Fault:
        """A complete stream up to ``data: [DONE]``, then the body stays open for ``seconds``
        (None: until the client leaves) without its end, then a close."""
        return cls("linger", seconds=seconds)

    @classmethod
    def leak(cls, secret: str | None = None) -> Fault:
        """An answer that quotes ``secret`` (None: the bearer token received) in its text,
        split across two content events, and names it as its ``model``."""
        return cls("leak", secret=secret)

    @classmethod
    def reject_prefill(cls) -> Fault:
        """400 when the last message is the assistant's (a prefill); else like ``ok()``."""
        return cls("reject_prefill")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server read it. ``fault`` is None for routes other than completions."""

    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    fault: Fault | None
    connection: int  # ordinal of the TCP connection it arrived on (keep-alive shows as repeats)


def refused_port() -> int:
    """A 127.0.0.1 port with nothing listening on it (connecting gets ECONNREFUSED)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _text_of(content: Any) -> str:
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # e.g. 529
        return "Error"


def _error_body(status: int, message: str, error_type: str | None, code: str | None) -> bytes:
    if error_type is None:
        error_type = "server_error" if status >= 500 else _ERROR_TYPES.get(status)
    error = {"message": message, "type": error_type or "invalid_request_error"}
    return json.dumps({"error": {**error, "param": None, "code": code}}).encode()


def tool_call_deltas(calls: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """The ``delta`` of each chunk that streams ``calls``; call i has the id ``call_i``."""
    deltas: list[dict[str, Any]] = []
    for index, (name, arguments) in enumerate(calls):
        head = {"index": index, "id": f"call_{index}", "type": "function"}
        deltas.append({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]})
        deltas += [
            {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            for piece in _PIECES.findall(arguments)
        ]
    return deltas


def _logprob(index: int, piece: str) -> dict[str, Any]:
    """A logprob entry for a piece (values of a test double: they only have to round-trip)."""
    return {
        "token": piece,
        "logprob": -index / 8,
        "bytes": list(piece.encode()),
        "top_logprobs": [],
    }


@dataclass(frozen=True)
class _Answer:
    """The (possibly truncated) answer to one completion request, rendered either way."""

    id: str
    created: int
    model: str
    text: str
    finish_reason: str
    prompt_tokens: int
    include_usage: bool
    calls: tuple[tuple[str, str], ...] = ()
    logprobs: bool = False

    @classmethod
    def build(
        cls, body: dict[str, Any], text: str | None, calls: tuple[tuple[str, str], ...] = ()
    ) -> _Answer:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        users = [_text_of(m.get("content")) for m in messages if m.get("role") == "user"]
        text = text if text is not None else "Echo: " + (users[-1] if users else "")
        finish, limit = "stop", body.get("max_completion_tokens", body.get("max_tokens"))
        words = [p for p in _PIECES.findall(text) if not p.isspace()]
        if isinstance(limit, int) and len(words) > limit:
            text, finish = "".join(words[:limit]), "length"
        options = body.get("stream_options") or {}
        return cls(
            id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
            created=int(time.time()),
            model=str(body.get("model", "unknown")),
            text=text,
            finish_reason="tool_calls" if calls else finish,
            prompt_tokens=sum(len(_text_of(m.get("content")).split()) for m in messages),
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            calls=calls,
            logprobs=body.get("logprobs") is True,
        )

    @property
    def usage(self) -> dict[str, int]:
        done = len(self.text.split()) + sum(len(a.split()) for _, a in self.calls)
        total = self.prompt_tokens + done
        return dict(prompt_tokens=self.prompt_tokens, completion_tokens=done, total_tokens=total)

    def _envelope(self, kind: str, **rest: Any) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, **rest}

    def body(self) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.calls:
            message["content"] = self.text or None
            message["tool_calls"] = [
                {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
                for i, (n, a) in enumerate(self.calls)
            ]
        choice = {"index": 0, "message": message, "finish_reason": self.finish_reason}
        if self.logprobs:
            pieces = _PIECES.findall(self.text)
            choice["logprobs"] = {"content": [_logprob(i, p) for i, p in enumerate(pieces)]}
        payload = self._envelope("chat.completion", choices=[choice], usage=self.usage)
        return json.dumps(payload).encode()

    def _event(self, **rest: Any) -> bytes:
        return f"data: {json.dumps(self._envelope('chat.completion.chunk', **rest))}\n\n".encode()

    def chunks(self, pieces: Sequence[str] | None = None) -> list[bytes]:
        """The content events: the first carries the role, joining the deltas gives the text;
        then the tool calls' (see ``tool_call_deltas``).

        One per word unless ``pieces`` (which must join into the text) says otherwise.
        """
        if pieces is None:
            pieces = _PIECES.findall(self.text) or ([] if self.calls else [""])
        deltas: list[dict[str, Any]] = [{"content": piece} for piece in pieces]
        deltas += tool_call_deltas(self.calls)
        deltas[0] = {"role": "assistant", "content": None, **deltas[0]}
        choices = [{"index": 0, "delta": d, "finish_reason": None} for d in deltas]
        if self.logprobs:
            for i, (choice, piece) in enumerate(zip(choices, pieces, strict=False)):
                choice["logprobs"] = {"content": [_logprob(i, piece)], "refusal": None}
        return [self._event(choices=[choice]) for choice in choices]

    def tail(self) -> list[bytes]:
        """The finish-reason event and, when asked for, the usage event."""
        finish = [{"index": 0, "delta": {}, "finish_reason": self.finish_reason}]
        usage = [self._event(choices=[], usage=self.usage)] if self.include_usage else []
        return [self._event(choices=finish), *usage]


class _Exchange:
    """One request/response cycle on an h11 connection."""

    def __init__(
        self,
        conn: h11.Connection,
        rd: asyncio.StreamReader,
        wr: asyncio.StreamWriter,
        request: RecordedRequest,
        on_client_gone: Callable[[], None],
    ) -> None:
        self.conn, self.reader, self.writer, self.request = conn, rd, wr, request
        self.on_client_gone = on_client_gone
        self.body: dict[str, Any] = request.body or {}
        self.streaming = self.body.get("stream") is True

    def answer(self, fault: Fault) -> _Answer:
        return _Answer.build(self.body, fault.text, fault.calls)

    async def _send(self, event: h11.Event) -> None:
        """Write one h11 event; returns once the kernel has it (see ``_on_connect``)."""
        if self.writer.is_closing():
            raise ConnectionResetError("the client went away")
        self.writer.write(self.conn.send(event) or b"")
        await self.writer.drain()

    async def start(self, status: int, content_type: str, length: int | None = None) -> None:
        headers = [("content-type", content_type), ("x-request-id", uuid.uuid4().hex)]
        if length is None:
            headers += [("cache-control", "no-cache"), ("transfer-encoding", "chunked")]
        else:
            headers.append(("content-length", str(length)))
        fault = self.request.fault
        if fault is not None:
            headers += fault.headers
            if fault.retry_after is not None:
                headers.append(("retry-after", str(fault.retry_after)))
        await self._send(h11.Response(status_code=status, headers=headers, reason=_phrase(status)))

    async def data(self, *parts: bytes) -> None:
        for part in parts:
            await self._send(h11.Data(data=part))

    async def end(self) -> bool:
        await self._send(h11.EndOfMessage())
        return True

    async def respond(self, status: int, body: bytes) -> bool:
        await self.start(status, _JSON, len(body))
        await self.data(body)
        return await self.end()

    async def error(self, status: int, message: str, code: str | None, kind: str | None) -> bool:
        return await self.respond(status, _error_body(status, message, kind, code))

    async def abort(self, *, rst: bool) -> bool:
        """Close after what was sent: with RST (SO_LINGER 0) or a plain FIN. No keep-alive."""
        if rst:
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.writer.transport.abort()
        else:
            self.writer.close()
        return False


async def _pause(ex: _Exchange, seconds: float | None) -> None:
    """Wait ``seconds`` (None: until the server stops), watching the connection meanwhile.

    A client that closes its side ends the wait: it is recorded (``FaultServer.client_closed``)
    and the exchange ends, as a real server notices a peer that went away.
    """
    deadline = None if seconds is None else asyncio.get_running_loop().time() + seconds
    while True:
        read = asyncio.ensure_future(ex.reader.read(65536))
        wait = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            done, _ = await asyncio.wait({read}, timeout=wait)
        finally:
            read.cancel()
        if not done:
            return
        try:
            data = read.result()
        except OSError:  # a reset
            data = b""
        if not data:
            ex.on_client_gone()
            raise ConnectionResetError("the client went away")
        ex.conn.receive_data(data)  # a pipelined request: h11 keeps it for the next cycle


async def _answer(ex: _Exchange, fault: Fault) -> bool:
    """A complete answer: JSON, or an SSE stream ending in ``data: [DONE]``."""
    answer = ex.answer(fault)
    if not ex.streaming:
        return await ex.respond(200, answer.body())
    await ex.start(200, "text/event-stream")
    await ex.data(*answer.chunks(), *answer.tail(), _DONE)
    return await ex.end()


async def _ok(ex: _Exchange, fault: Fault) -> bool:
    """The client gets a normal answer, ``delay_s`` late (before the headers)."""
    await asyncio.sleep(fault.delay_s)
    return await _answer(ex, fault)


async def _status(ex: _Exchange, fault: Fault) -> bool:
    """The client gets an OpenAI error body with the fault's status (and Retry-After)."""
    message = fault.message or _MESSAGES.get(fault.status_code, _phrase(fault.status_code))
    if fault.echo_key:
        key = ex.request.headers.get("authorization", "").removeprefix("Bearer ")
        message = f"Incorrect API key provided: {key}. You can find your API key at {_KEYS_URL}."
    elif fault.error_code == "invalid_api_key" and fault.message is None:
        message = "Incorrect API key provided."
    return await ex.error(fault.status_code, message, fault.error_code, fault.error_type)


async def _reset(ex: _Exchange, fault: Fault) -> bool:
    """The client sees a connection reset instead of a response."""
    return await ex.abort(rst=True)


async def _hang(ex: _Exchange, fault: Fault) -> bool:
    """The client waits (read timeout); after ``seconds`` the server closes without answering."""
    await _pause(ex, fault.seconds)
    return await ex.abort(rst=False)


async def _slow_first_token(ex: _Exchange, fault: Fault) -> bool:
    """Streaming: headers at once, then nothing for ``delay_s``. Non-streaming: late headers."""
    if not ex.streaming:
        return await _ok(ex, fault)
    answer = ex.answer(fault)
    await ex.start(200, "text/event-stream")
    await asyncio.sleep(fault.delay_s)
    await ex.data(*answer.chunks(), *answer.tail(), _DONE)
    return await ex.end()


async def _partial(ex: _Exchange, fault: Fault) -> None:
    """``after_chunks`` content chunks of a stream, or the first half of a JSON body."""
    answer = ex.answer(fault)
    if ex.streaming:
        await ex.start(200, "text/event-stream")
        await ex.data(*answer.chunks()[: fault.after_chunks])
    else:
        body = answer.body()
        await ex.start(200, _JSON, len(body))
        await ex.data(body[: len(body) // 2])


async def _cut(ex: _Exchange, fault: Fault) -> bool:
    """The body stops after ``after_chunks`` chunks: an incomplete chunked read (or a reset)."""
    await _partial(ex, fault)
    return await ex.abort(rst=fault.rst)


async def _stall(ex: _Exchange, fault: Fault) -> bool:
    """The body stops after ``after_chunks`` chunks; silence for ``seconds``; then a close."""
    await _partial(ex, fault)
    await _pause(ex, fault.seconds)
    return await ex.abort(rst=False)


async def _malformed_chunk(ex: _Exchange, fault: Fault) -> bool:
    """One undecodable ``data:`` line after ``after_chunks`` chunks (non-streaming: bad JSON)."""
    if not ex.streaming:
        return await ex.respond(200, b'{"choices": [')
    answer, n = ex.answer(fault), fault.after_chunks
    chunks = answer.chunks()
    await ex.start(200, "text/event-stream")
    await ex.data(*chunks[:n], _MALFORMED, *chunks[n:], *answer.tail(), _DONE)
    return await ex.end()


async def _no_done(ex: _Exchange, fault: Fault) -> bool:
    """The stream ends cleanly but without ``data: [DONE]`` (and maybe no finish_reason)."""
    if not ex.streaming:
        return await _answer(ex, fault)
    answer = ex.answer(fault)
    await ex.start(200, "text/event-stream")
    await ex.data(*answer.chunks(), *(answer.tail() if fault.finish_reason else []))
    return await ex.end()


async def _reject_prefill(ex: _Exchange, fault: Fault) -> bool:
    """400 if the last message has role ``assistant``; otherwise a normal answer."""
    messages = ex.body.get("messages") or [{}]
    if isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
        message = "This model does not support assistant message prefill"
        return await ex.error(400, message, None, "invalid_request_error")
    return await _answer(ex, fault)


async def _json_answer(ex: _Exchange, fault: Fault) -> bool:
    """A JSON completion whatever was asked, like a server that ignores ``"stream": true``."""
    return await ex.respond(200, ex.answer(fault).body())


async def _raw(ex: _Exchange, fault: Fault) -> bool:
    """The fault's own status, content type and body."""
    body = fault.body or b""
    await ex.start(fault.status_code, fault.content_type or "text/plain", len(body))
    await ex.data(body)
    return await ex.end()


async def _no_final_newline(ex: _Exchange, fault: Fault) -> bool:
    """A stream whose last line (``[DONE]``, or the usage event) ends without a newline."""
    if not ex.streaming:
        return await _answer(ex, fault)
    answer = ex.answer(fault)
    events = [*answer.chunks(), *answer.tail(), *([_DONE] if fault.done else [])]
    await ex.start(200, "text/event-stream")
    await ex.data(*events[:-1], events[-1].rstrip(b"\n"))
    return await ex.end()


async def _keep_alive(ex: _Exchange, fault: Fault) -> bool:
    """Content chunks, then only comment lines (never a token), then a close mid-body."""
    answer = ex.answer(fault)
    await ex.start(200, "text/event-stream")
    await ex.data(*answer.chunks()[: fault.after_chunks])
    line = f"{fault.comment}\n\n".encode()
    until = None if fault.seconds is None else time.monotonic() + fault.seconds
    while until is None or time.monotonic() < until:
        await ex.data(line)
        await asyncio.sleep(fault.interval_s)
    return await ex.abort(rst=False)


async def _huge_line(ex: _Exchange, fault: Fault) -> bool:
    """One content event of ``size`` bytes on one line (or a JSON body that large).

    Written 64 KiB at a time, so the server itself holds little of it.
    """
    answer = ex.answer(dataclasses.replace(fault, text=_MARK))
    if ex.streaming and fault.content_type != _JSON:
        head, tail = answer.chunks()[0].split(_MARK.encode())
        after = [*answer.tail(), _DONE]
        await ex.start(200, "text/event-stream")
    else:
        head, tail = answer.body().split(_MARK.encode())
        after = []
        await ex.start(200, _JSON, len(head) + fault.size + len(tail))
    await ex.data(head)
    piece = b"x" * 65536
    for _ in range(fault.size // len(piece)):
        await ex.data(piece)
    await ex.data(piece[: fault.size % len(piece)], tail, *after)
    return await ex.end()


async def _crlf(ex: _Exchange, fault: Fault) -> bool:
    """A normal answer; streamed, every line ends in CRLF."""
    if not ex.streaming:
        return await _answer(ex, fault)
    answer = ex.answer(fault)
    await ex.start(200, "text/event-stream")
    events = [*answer.chunks(), *answer.tail(), _DONE]
    await ex.data(*(event.replace(b"\n", b"\r\n") for event in events))
    return await ex.end()


async def _linger(ex: _Exchange, fault: Fault) -> bool:
    """Everything up to ``[DONE]``, but the body's end never comes: silence, then a close."""
    answer = ex.answer(fault)
    await ex.start(200, "text/event-stream")
    await ex.data(*answer.chunks(), *answer.tail(), _DONE)
    await _pause(ex, fault.seconds)
    return await ex.abort(rst=False)


async def _leak(ex: _Exchange, fault: Fault) -> bool:
    """An answer quoting the secret, split across two events, with the secret as its model."""
    secret = fault.secret or ex.request.headers.get("authorization", "").removeprefix("Bearer ")
    half = len(secret) // 2
    pieces = ["The key is ", secret[:half], secret[half:], ", as you asked."]
    answer = dataclasses.replace(_Answer.build(ex.body, "".join(pieces)), model=secret or "unknown")
    if not ex.streaming:
        return await ex.respond(200, answer.body())
    await ex.start(200, "text/event-stream")
    await ex.data(*answer.chunks(pieces), *answer.tail(), _DONE)
    return await ex.end()


async def _raw_stream(ex: _Exchange, fault: Fault) -> bool:
    """The fault's events as they are, then ``[DONE]``; for shapes no other fault sends."""
    await ex.start(200, "text/event-stream")
    await ex.data(*(f"data: {event}\n\n".encode() for event in fault.events), _DONE)
    return await ex.end()


# Fault.kind -> handler; a handler returns whether the connection may serve another request.
_HANDLERS: dict[str, Callable[[_Exchange, Fault], Awaitable[bool]]] = {
    **dict.fromkeys(["ok", "empty", "whitespace", "degenerate", "tool_calls"], _ok),
    **{f.__name__[1:]: f for f in (_status, _reset, _hang, _slow_first_token, _cut, _stall)},
    **{f.__name__[1:]: f for f in (_malformed_chunk, _no_done, _reject_prefill, _raw_stream)},
    **{f.__name__[1:]: f for f in (_json_answer, _raw, _no_final_newline, _keep_alive)},
    **{f.__name__[1:]: f for f in (_huge_line, _crlf, _linger, _leak)},
}


class FaultServer:
    """An OpenAI-compatible server on 127.0.0.1 that misbehaves on cue. Thread-safe."""

    def __init__(self, default: Fault | None = None, *, models: Sequence[str] = ()) -> None:
        self._lock = threading.Lock()
        self._default = default or Fault.ok()
        self._script: deque[Fault] = deque()
        self._requests: list[RecordedRequest] = []
        self._client_closed: list[int] = []
        self._models: dict[str, None] = dict.fromkeys(models)
        self._models_fault: Fault | None = None
        self._outage: tuple[float, Fault] | None = None
        self._ids = itertools.count(1)
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stopped = False
        self._error: BaseException | None = None
        self._port = 0
        self._tasks: set[asyncio.Task[None]] = set()  # owned by the server thread
        self._writers: set[asyncio.StreamWriter] = set()  # owned by the server thread

    # -- test-facing API -------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def default(self) -> Fault:
        with self._lock:
            return self._default

    @default.setter
    def default(self, fault: Fault) -> None:
        with self._lock:
            self._default = fault

    @property
    def models_fault(self) -> Fault | None:
        """What ``GET /v1/models`` does instead of listing the models (None: it lists them)."""
        with self._lock:
            return self._models_fault

    @models_fault.setter
    def models_fault(self, fault: Fault | None) -> None:
        with self._lock:
            self._models_fault = fault

    def fail_until(self, until: float, fault: Fault) -> None:
        """Answer every completion with ``fault`` until ``time.monotonic()`` reaches
        ``until`` (scripted faults first), then as ``default`` says: an outage that ends
        at a known instant, with no test thread racing to end it."""
        with self._lock:
            self._outage = (until, fault)

    def script(self, *faults: Fault) -> None:
        """Queue faults for the next completion requests (FIFO), before ``default`` applies."""
        with self._lock:
            self._script.extend(faults)

    @property
    def pending(self) -> int:
        """How many scripted faults have not been used yet."""
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request read so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def client_closed(self) -> list[int]:
        """Connections (``RecordedRequest.connection``) the client closed while a hang or
        stall held its response: how a test sees that a request was cancelled upstream."""
        with self._lock:
            return list(self._client_closed)

    @property
    def completions(self) -> list[RecordedRequest]:
        """The completion requests that got a fault (``POST /v1/chat/completions``, JSON body)."""
        return [r for r in self.requests if r.fault is not None]

    def clear(self) -> None:
        """Forget the recorded requests and drop any unused scripted faults."""
        with self._lock:
            self._requests.clear()
            self._script.clear()
            self._client_closed.clear()

    def start(self) -> Self:
        """Bind a free port and serve from a daemon thread; returns once listening."""
        if self._thread is not None:
            raise RuntimeError("a FaultServer can only be started once")
        self._thread = threading.Thread(target=self._run, name="FaultServer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        """Close the listener and every open connection. Idempotent."""
        with self._lock:
            thread, already, self._stopped = self._thread, self._stopped, True
        if thread is None or already:
            return
        if self._loop is not None and self._stopping is not None:
            with suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stopping.set)
        thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- server thread ---------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        try:
            server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self._port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stopping.wait()
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        # No write buffering: drain() returns only once the kernel has every byte, so a
        # chunk is on the wire before a pause and is not discarded by an abort.
        writer.transport.set_write_buffer_limits(high=0)
        try:
            await self._serve(reader, writer, next(self._ids))
        except (OSError, h11.RemoteProtocolError):
            pass  # the client went away or spoke garbage: nothing to answer
        except asyncio.CancelledError:
            pass  # stop(); ending normally spares 3.11's start_server callback a CancelledError
        except Exception:
            logger.exception("FaultServer bug while serving a connection")
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, rd: asyncio.StreamReader, wr: asyncio.StreamWriter, n: int) -> None:
        conn = h11.Connection(h11.SERVER)

        def gone() -> None:
            with self._lock:
                self._client_closed.append(n)

        while (request := await self._read(conn, rd, n)) is not None:
            if not await self._respond(_Exchange(conn, rd, wr, request, gone)):
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # e.g. the client sent "Connection: close"
            conn.start_next_cycle()

    async def _read(
        self, conn: h11.Connection, reader: asyncio.StreamReader, connection: int
    ) -> RecordedRequest | None:
        """Read one whole request and record it (with its fault); None when the client left."""
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                break
            else:
                return None
        headers: dict[str, str] = {}
        for raw_name, raw_value in head.headers:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        method, path = head.method.decode(), head.target.decode("latin-1").partition("?")[0]
        with self._lock:
            fault = None
            if method == "POST" and path == "/v1/chat/completions" and isinstance(parsed, dict):
                now, outage = time.monotonic(), self._outage
                if self._script:
                    fault = self._script.popleft()
                elif outage is not None and now < outage[0]:
                    fault = outage[1]
                else:
                    fault = self._default
                if isinstance(parsed.get("model"), str):
                    self._models.setdefault(parsed["model"])
            json_body = parsed if isinstance(parsed, dict) else None
            request = RecordedRequest(
                time.monotonic(), method, path, headers, json_body, fault, connection
            )
            self._requests.append(request)
        return request

    async def _respond(self, ex: _Exchange) -> bool:
        request = ex.request
        if request.fault is not None:
            return await _HANDLERS[request.fault.kind](ex, request.fault)
        if request.path == "/v1/chat/completions" and request.method == "POST":
            message = "We could not parse the JSON body of your request."
            return await ex.error(400, message, None, "invalid_request_error")
        if request.path == "/v1/models" and request.method == "GET":
            with self._lock:
                names, fault = list(self._models), self._models_fault
            if fault is not None:
                return await _HANDLERS[fault.kind](ex, fault)
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "faults"} for m in names]
            return await ex.respond(200, json.dumps({"object": "list", "data": data}).encode())
        message = f"Unknown request URL: {request.method} {request.path}."
        return await ex.error(404, message, "unknown_url", "invalid_request_error")
