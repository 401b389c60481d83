"""Any OpenAI-compatible chat completions endpoint: OpenAI, vLLM, Ollama, llama.cpp server, …"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
from aiohttp.http_exceptions import ContentEncodingError

from sincere.answer import Completion, Usage
from sincere.config import DeploymentConfig
from sincere.errors import (
    BadRequest,
    ContentRejected,
    ContextTooLong,
    ModelNotFound,
    ProviderAuthFailed,
    RateLimited,
    RetryAfterSource,
    ServiceError,
    ServiceTimeout,
    ServiceUnavailable,
    UpstreamError,
)
from sincere.health import HealthReport, HealthState
from sincere.llm.choices import StreamedChoice
from sincere.llm.provider import PROBE_REQUEST, StreamItem, collect
from sincere.llm.request import AttemptLimits, ChatRequest
from sincere.redact import (
    StreamRedactor,
    forget_secret,
    known_secrets,
    redact,
    remember_secret,
)

# Provider error codes that say more than the HTTP status does.
_ERROR_CODES: dict[str, type[ServiceError]] = {
    "context_length_exceeded": ContextTooLong,
    "string_above_max_length": ContextTooLong,
    "content_policy_violation": ContentRejected,
    "content_filter": ContentRejected,
    "invalid_api_key": ProviderAuthFailed,
    "model_not_found": ModelNotFound,
    "rate_limit_exceeded": RateLimited,
    "insufficient_quota": RateLimited,
}

_STATUSES: dict[int, type[ServiceError]] = {
    400: BadRequest,
    401: ProviderAuthFailed,
    403: ProviderAuthFailed,
    404: ModelNotFound,
    408: ServiceTimeout,
    413: BadRequest,
    422: BadRequest,
    429: RateLimited,
    502: UpstreamError,
    503: ServiceUnavailable,
    504: ServiceTimeout,
    529: ServiceUnavailable,
}


class OpenAIProvider:
    """Talks to one OpenAI-compatible deployment over a pooled aiohttp session.

    aiohttp rather than httpx on this path: per request it costs a sixth of httpx's CPU
    (docs/benchmarks.md), and this call is most of what a gateway does.
    """

    kind = "openai"

    def __init__(self, deployment: DeploymentConfig, api_key: str | None) -> None:
        assert deployment.base_url is not None  # guaranteed by DeploymentConfig validation
        self.deployment = deployment
        self._api_key = api_key
        remember_secret(api_key)  # no answer of any deployment may carry it (until aclose)
        self._remembered = api_key
        self._url = deployment.base_url.rstrip("/") + "/chat/completions"
        self._models_url = deployment.base_url.rstrip("/") + "/models"
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None
        # The last model name an upstream reported, with the secrets then known, redacted.
        self._last_model: tuple[str, tuple[str, ...], str] = ("", (), "")

    @property
    def started(self) -> bool:
        # Nothing to load: whether the endpoint serves is learnt from each attempt.
        return True

    async def start(self) -> HealthReport:
        return HealthReport(HealthState.READY, "HTTP client ready")

    async def probe(self, limits: AttemptLimits) -> Usage | None:
        """A one-token chat completion: the call users need, not merely a listing that a
        provider may serve while its model is down. A deployment that refuses the probe's
        shape (400, say ``max_tokens`` on a reasoning model) is asked for its model list
        instead; if it has none either, the refusal stands."""
        try:
            return (await collect(self.stream(PROBE_REQUEST, limits))).usage
        except BadRequest:
            if await self._list_models(limits.connect_s):
                return None
            raise

    async def _list_models(self, timeout_s: float) -> bool:
        """GET {base_url}/models with the key, within ``timeout_s``: True on a 2xx answer,
        False when the endpoint has no such route (404, 405). Any other answer or failure
        raises the ServiceError a chat request would have got."""
        limits = AttemptLimits(timeout_s, timeout_s, timeout_s, timeout_s)
        timeout = aiohttp.ClientTimeout(total=timeout_s, connect=timeout_s)
        with self._map_transport_errors(limits):
            async with self._client().get(self._models_url, timeout=timeout) as response:
                body = await _read_body(response)
                if response.status in (404, 405):
                    return False
                if response.status >= 300:
                    raise self._error_from_response(response.status, body, response)
        return True

    async def aclose(self) -> None:
        forget_secret(self._remembered)
        self._remembered = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the event loop that will use it.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                # One session serves every user: a cookie one answer sets must never
                # travel with another user's request.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            **request.extra,
            "model": self.deployment.model,
            "messages": request.wire_messages(),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop"] = list(request.stop)
        return body

    async def stream(
        self, request: ChatRequest, limits: AttemptLimits
    ) -> AsyncIterator[StreamItem]:
        # No asyncio.timeout spans a yield (it would cancel whatever the consumer awaits):
        # every wait is bounded on its own, and by the attempt's deadline.
        read = _Reading(StreamedChoice(self.deployment.name, _content_redactor()), limits)
        with self._map_transport_errors(limits):
            response = await self._head(request, limits)
            try:
                if response.status >= 400:
                    raise await self._error_answer(response, read.deadline)
                if response.content_type == "application/json":
                    # A server that ignores "stream": true: one complete JSON completion.
                    pieces = self._json_pieces(response, read)
                else:
                    pieces = self._sse_pieces(response, read)
                async with contextlib.aclosing(pieces):
                    async for piece in pieces:
                        yield piece
            finally:
                response.release()
        if (held := read.parts.flush()) is not None:
            yield held
        yield self._completion(read)

    async def _head(self, request: ChatRequest, limits: AttemptLimits) -> aiohttp.ClientResponse:
        """Send the request and read the response's head, within connect + first token."""
        timeout = aiohttp.ClientTimeout(total=None, connect=limits.connect_s)
        bound = min(limits.total_s, limits.connect_s + limits.first_token_s)
        async with self._response_within(bound):
            return await self._client().post(
                self._url, data=orjson.dumps(self._body(request)), timeout=timeout
            )

    async def _error_answer(
        self, response: aiohttp.ClientResponse, deadline: float
    ) -> ServiceError:
        """An error status: its body, read within the deadline, as a ServiceError."""
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            body = await _read_body(response)
        return self._error_from_response(response.status, body, response)

    async def _sse_pieces(
        self, response: aiohttp.ClientResponse, read: _Reading
    ) -> AsyncGenerator[StreamItem, None]:
        """The pieces of a server-sent event stream, as its events arrive."""
        lines = _SSELines(response.content, self.deployment.name)
        parts, done = read.parts, False
        read.token_at = time.monotonic()  # the waits run from the response's head
        while not done:
            until = read.wait_until()
            try:
                batch = await lines.next_batch(min(until, read.deadline))
            except TimeoutError:
                if read.finish is not None:  # complete; only [DONE] or usage was missing
                    break
                raise self._no_token(
                    read.first_token_at is None, until, read.deadline, read.limits, lines.ignored
                ) from None
            if batch is None:  # the body ended
                break
            before = parts.pieces
            for line in batch:
                event = self._parse_event(line)
                if event is _DONE:
                    done = True
                    break
                assert isinstance(event, dict)
                if event.get("usage"):
                    read.payload = event
                for choice in event.get("choices") or ():
                    piece = parts.add(choice)
                    if read.first_token_at is None and parts.pieces:
                        read.first_token_at = time.monotonic()
                    if piece is not None:
                        yield piece
                    read.finish = choice.get("finish_reason") or read.finish
            if parts.pieces != before:
                read.token_at = time.monotonic()
                lines.ignored = 0
        if done:
            await _drain(response)
        if read.finish is None:
            if not lines.events:
                raise UpstreamError(
                    f"{self.deployment.name}: the upstream answered 200 with a "
                    f"{response.content_type} body that holds no stream events"
                )
            raise UpstreamError(
                f"{self.deployment.name}: the upstream ended the stream without a finish "
                "reason, so the answer may be incomplete"
            )

    def _parse_event(self, line: bytes) -> dict[str, Any] | object:
        """One ``data:`` line: a chat completion chunk as a dict, or ``_DONE``."""
        data = line[5:].strip()
        if data == b"[DONE]":
            return _DONE
        try:
            event = _loads(data)
        except ValueError:
            raise UpstreamError(
                f"{self.deployment.name}: the upstream sent a stream event that is not valid JSON"
            ) from None
        if type(event) is not dict:
            raise UpstreamError(
                f"{self.deployment.name}: the upstream sent a stream event that is not an object"
            )
        if "error" in event:
            raise self._error_from_payload(200, event, {})
        choices = event.get("choices")
        if choices and not _are_chunk_choices(choices):
            raise UpstreamError(
                f"{self.deployment.name}: the upstream sent a stream event that is not a chat "
                "completion chunk"
            )
        return event

    async def _json_pieces(
        self, response: aiohttp.ClientResponse, read: _Reading
    ) -> AsyncGenerator[StreamItem, None]:
        """A whole chat completion sent as one JSON body instead of a stream: its content
        and tool calls as one piece."""
        name = self.deployment.name
        # The body is the first token: it is waited for as long as one.
        until = min(time.monotonic() + read.limits.first_token_s, read.deadline)
        try:
            async with asyncio.timeout(max(0.0, until - time.monotonic())):
                body = await _read_body(response)
        except TimeoutError:
            raise self._no_token(True, until, read.deadline, read.limits, 0) from None
        if body is None:
            raise UpstreamError(
                f"{name}: the upstream answered with a JSON body over {_mib(MAX_BODY_BYTES)}, "
                "more than sincere reads from one answer"
            )
        read.first_token_at = time.monotonic()
        try:
            payload = _loads(body)
        except ValueError:
            payload = None
        if type(payload) is dict and "error" in payload:
            raise self._error_from_payload(200, payload, {})
        choice, finish = _json_choice(payload)
        if choice is None:
            raise UpstreamError(
                f"{name}: the upstream answered 200 with JSON that is not a chat completion"
            )
        if finish is None:
            raise UpstreamError(
                f"{name}: the upstream's JSON completion has no finish reason, so the answer "
                "may be incomplete"
            )
        assert type(payload) is dict  # _json_choice found a choice in it
        read.finish, read.payload = finish, payload
        message = choice["message"]
        calls = message.get("tool_calls")
        if type(calls) is list:  # whole calls: as one fragment each, in their order
            calls = [{**c, "index": i} if type(c) is dict else c for i, c in enumerate(calls)]
        delta = {"content": message.get("content"), "tool_calls": calls}
        piece = read.parts.add({"delta": delta, "logprobs": choice.get("logprobs")})
        if piece is not None:
            yield piece

    def _completion(self, read: _Reading) -> Completion:
        """The completion, assembled from what was read."""
        parts, payload = read.parts, read.payload
        assert read.finish is not None  # the readers raise without one
        finish = read.finish
        ttft = None if read.first_token_at is None else read.first_token_at - read.started
        usage = None
        raw = payload.get("usage")
        if isinstance(raw, dict) and isinstance(raw.get("prompt_tokens"), int):
            usage = Usage(int(raw["prompt_tokens"]), int(raw.get("completion_tokens") or 0))
        # The model's name and the finish reason are the upstream's words, passed to the user.
        if finish not in _FINISH_REASONS:
            finish = redact(finish)[:_MAX_FIELD_CHARS]
        model = str(payload.get("model") or self.deployment.model)
        known, last = known_secrets(), self._last_model
        if last[0] != model or last[1] is not known:  # an upstream names one model each time
            self._last_model = last = (model, known, redact(model)[:_MAX_FIELD_CHARS])
        return Completion(
            text=parts.text,
            finish_reason=finish,
            deployment=self.deployment.name,
            provider=self.kind,
            upstream_model=last[2],
            usage=usage,
            latency_s=time.monotonic() - read.started,
            time_to_first_token_s=ttft,
            tool_calls=parts.tool_calls(),
            logprobs=parts.logprobs,
        )

    # Mapping of everything that can go wrong into ServiceError, in one place.

    def _no_token(
        self, first: bool, until: float, deadline: float, limits: AttemptLimits, ignored: int
    ) -> ServiceTimeout:
        """sincere stopped waiting: which wait ran out, and what came instead of tokens."""
        what = "first token" if first else "next token"
        if until >= deadline:
            message = f"{self.deployment.name}: no {what} before the attempt's time limit"
        else:
            limit = limits.first_token_s if first else limits.stream_idle_s
            message = f"{self.deployment.name}: no {what} within {limit:.3g} s"
        if ignored:
            plural = "s" if ignored > 1 else ""
            message += f"; the upstream sent only {ignored} keep-alive line{plural} meanwhile"
        return ServiceTimeout(message)

    def _error_from_response(
        self, status: int, body: bytearray | None, response: aiohttp.ClientResponse
    ) -> ServiceError:
        payload: object = None
        if body:
            with contextlib.suppress(ValueError):
                payload = _loads(body)
        if isinstance(payload, dict):
            return self._error_from_payload(status, payload, response.headers)
        if body is None:
            what = f"a body over {_mib(MAX_BODY_BYTES)}"
        elif not body.strip():
            what = "an empty body"
        elif payload is None:  # a proxy's or load balancer's page, not the provider's answer
            what = f"a non-JSON ({response.content_type}) body"
        else:
            what = "JSON that is not an error object"
        return _error_class("", status)(
            f"{self.deployment.name}: the upstream (or a proxy in front of it) answered "
            f"{status} with {what}",
            retry_after=_retry_after(response.headers),
            retry_after_source=RetryAfterSource.PROVIDER,
            status_code=status,
        )

    def _error_from_payload(
        self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str]
    ) -> ServiceError:
        error = payload.get("error")
        error = error if isinstance(error, dict) else {}
        code = str(error.get("code") or error.get("type") or "")
        upstream_message = error.get("message") if isinstance(error.get("message"), str) else None
        if status == 200:
            message = f"{self.deployment.name}: the upstream reported an error in its answer"
        else:
            message = f"{self.deployment.name}: the upstream answered {status}"
        if upstream_message:
            message += f": {self._scrub(upstream_message)[:500]}"
        return _error_class(code, status)(
            message,
            retry_after=_retry_after(headers),
            retry_after_source=RetryAfterSource.PROVIDER,
            status_code=status,
        )

    def _scrub(self, text: str) -> str:
        secrets = [self._api_key] if self._api_key else []
        return redact(text, secrets)

    @asynccontextmanager
    async def _response_within(self, seconds: float) -> AsyncIterator[None]:
        """Bounds the wait for the response's head, naming the bound when it is hit."""
        try:
            async with asyncio.timeout(seconds):
                yield
        except aiohttp.ConnectionTimeoutError:
            raise  # the connect limit's own message (below) is the more precise one
        except TimeoutError:
            raise ServiceTimeout(
                f"{self.deployment.name}: no response within {seconds:.3g} s"
            ) from None

    @contextmanager
    def _map_transport_errors(self, limits: AttemptLimits) -> Iterator[None]:
        """aiohttp's exceptions as sentences: what the upstream or the network did."""
        name = self.deployment.name
        try:
            yield
        except aiohttp.ConnectionTimeoutError:
            raise ServiceTimeout(f"{name}: no connection within {limits.connect_s:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            raise ServiceUnavailable(f"{name}: cannot connect: {_connect_failure(exc)}") from None
        except TimeoutError:
            raise ServiceTimeout(f"{name}: no answer within the time limit") from None
        except aiohttp.ClientPayloadError as exc:
            if isinstance(exc.__cause__, ContentEncodingError):
                what = "the upstream sent a compressed body that cannot be decompressed"
            else:
                what = "the upstream's body ended before the answer was complete"
            raise UpstreamError(f"{name}: the connection broke: {what}") from None
        except aiohttp.ServerDisconnectedError:
            raise UpstreamError(
                f"{name}: the connection broke: the upstream closed it before the answer "
                "was complete"
            ) from None
        except aiohttp.ClientOSError as exc:
            raise UpstreamError(f"{name}: the connection broke: {_os_reason(exc)}") from None
        except aiohttp.ClientResponseError:
            raise UpstreamError(
                f"{name}: the upstream's answer is not valid HTTP, so sincere cannot read it"
            ) from None
        except aiohttp.ClientError:
            raise UpstreamError(f"{name}: the request to the upstream failed in transit") from None


_DONE = object()
_DONE_GRACE_S = 0.25


class _Reading:
    """What one attempt has read so far: the choice's parts, the finish, the waits."""

    __slots__ = (
        "_complete_at",
        "deadline",
        "finish",
        "first_token_at",
        "limits",
        "parts",
        "payload",
        "started",
        "token_at",
    )

    def __init__(self, parts: StreamedChoice, limits: AttemptLimits) -> None:
        self.parts = parts
        self.limits = limits
        self.started = time.monotonic()
        self.deadline = self.started + limits.total_s
        self.finish: str | None = None
        self.payload: Mapping[str, Any] = {}  # the event (or body) with usage and model
        self.first_token_at: float | None = None
        # The waits are for tokens, not bytes: keep-alive comments and events without text
        # do not restart them.
        self.token_at = self.started  # from the response's head on, once it arrived
        self._complete_at: float | None = None

    def wait_until(self) -> float:
        """When to stop waiting for the next read (``time.monotonic()``)."""
        if self.finish is not None and self.payload:
            # All that matters has arrived; [DONE] normally follows in the same packet,
            # and a missing one must not hold the answer back.
            self._complete_at = self._complete_at or time.monotonic()
            return self._complete_at + _DONE_GRACE_S
        first = self.first_token_at is None
        return self.token_at + (self.limits.first_token_s if first else self.limits.stream_idle_s)


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read the body's end after [DONE], so the connection goes back to the pool; if it
    does not come soon, releasing the response closes the connection."""
    if response.content.at_eof():
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_DONE_GRACE_S):
            while await response.content.readany():
                pass


# What sincere holds of one upstream answer, at most (each request has its own):
# - one server-sent event line: a chunk event carries one delta of a few hundred bytes, and
#   even a server that sends a whole answer as one event stays far below 1 MiB (about
#   250,000 tokens of text);
# - one buffered body (a JSON answer to a stream request, or an error page): the longest
#   answers today (128k tokens, about 0.5 MB of text) fit 8 times over, \u-escaped
#   non-ASCII text included.
# An upstream that sends more fails the attempt, and the cascade moves on.
MAX_LINE_BYTES = 1 << 20
MAX_BODY_BYTES = 4 << 20

_ORJSON_MAX = 1 << 16

_FINISH_REASONS = frozenset(
    {"stop", "length", "tool_calls", "content_filter", "function_call", "eos"}
)
_MAX_FIELD_CHARS = 200  # an upstream's model name or finish reason, as passed on


def _mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"


def _content_redactor() -> StreamRedactor | None:
    """Removes the deployments' keys from generated text; None when no key is known."""
    known = known_secrets()
    return StreamRedactor(known) if known else None


def _are_chunk_choices(choices: object) -> bool:
    """The choices of a chat completion chunk, with the fields the reader uses in their types.

    Checked per event: a number where text belongs is the upstream's fault, not a defect.
    """
    if type(choices) is not list:
        return False
    for choice in choices:
        if type(choice) is not dict or type(choice.get("finish_reason")) not in _TEXT:
            return False
        delta = choice.get("delta") or {}
        if type(delta) is not dict or type(delta.get("content")) not in _TEXT:
            return False
    return True


_TEXT = frozenset({str, type(None)})


def _json_choice(payload: object) -> tuple[dict[str, Any] | None, str | None]:
    """The first choice (with a message) and its finish reason; no choice when the payload
    is not a chat completion."""
    if type(payload) is not dict:
        return None, None
    choices = payload.get("choices")
    if type(choices) is not list or not choices or type(choices[0]) is not dict:
        return None, None
    choice = choices[0]
    message = choice.get("message")
    if type(message) is not dict or type(message.get("content")) not in _TEXT:
        return None, None
    finish = choice.get("finish_reason")
    return choice, finish if type(finish) is str and finish else None


def _error_class(code: str, status: int) -> type[ServiceError]:
    return (
        _ERROR_CODES.get(code)
        or _STATUSES.get(status)
        or (UpstreamError if status >= 500 or status < 400 else BadRequest)
    )


def _connect_failure(exc: aiohttp.ClientConnectorError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "the upstream's host name does not resolve"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "the upstream's TLS certificate is not trusted"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "the TLS handshake with the upstream failed"
    return _os_reason(exc.os_error)


def _os_reason(error: OSError) -> str:
    """The system's words for a socket error ("connection refused"), never its address."""
    if isinstance(error, socket.gaierror):
        return "the upstream's host name does not resolve"
    if error.errno:
        return os.strerror(error.errno).lower()
    return "the network failed"


def _loads(data: bytes | bytearray) -> Any:
    """JSON: orjson, except for large documents, which it parses with a working buffer of
    about 13 times their size where the standard library needs about 3 times."""
    return orjson.loads(data) if len(data) <= _ORJSON_MAX else json.loads(data)


async def _read_body(response: aiohttp.ClientResponse) -> bytearray | None:
    """The whole body, or None (and the rest unread) when it is over MAX_BODY_BYTES."""
    if (response.content_length or 0) > MAX_BODY_BYTES:
        return None
    body = bytearray()
    while data := await response.content.readany():
        body += data
        if len(body) > MAX_BODY_BYTES:
            return None
    return body


class _SSELines:
    """The ``data:`` lines of a server-sent event stream, a batch per read.

    One bounded wait per batch rather than per line: most responses arrive in one or two
    reads, and every ``asyncio.timeout`` costs a timer. Lines end in LF, CRLF or CR; the
    last one may lack its end. Other lines (comments such as ``: keep-alive``, ``event:``,
    ``id:``) carry no tokens: they are counted, never returned, and never end a wait.
    """

    __slots__ = ("_content", "_ended", "_name", "_rest", "events", "ignored")

    def __init__(self, content: aiohttp.StreamReader, name: str) -> None:
        self._content = content
        self._name = name
        self._rest = b""
        self._ended = False
        self.events = 0  # data lines returned
        self.ignored = 0  # other non-blank lines, read in batches without data lines

    async def next_batch(self, until: float) -> list[bytes] | None:
        """The data lines of the next read that has any, or None once the body has ended.

        ``until`` (``time.monotonic()``) bounds the whole call, however many reads it takes.
        """
        while not self._ended:
            async with asyncio.timeout(max(0.0, until - time.monotonic())):
                data = await self._content.readany()
            if data:
                lines = self._split(data)
            else:  # the end of the body, which ends the last line too
                self._ended = True
                lines = self._data_lines([self._rest])
                self._rest = b""
            if lines:
                self.events += len(lines)
                return lines
        return None

    def _split(self, data: bytes) -> list[bytes]:
        if self._rest:
            data = self._rest + data
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *complete, self._rest = data.split(b"\n")
        if len(data) > MAX_LINE_BYTES and max(map(len, (*complete, self._rest))) > MAX_LINE_BYTES:
            raise UpstreamError(
                f"{self._name}: the upstream sent a stream line over {_mib(MAX_LINE_BYTES)}, "
                "more than sincere reads as one line"
            )
        return self._data_lines(complete)

    def _data_lines(self, lines: list[bytes]) -> list[bytes]:
        data = [line for line in lines if line.startswith(b"data:")]
        if not data:
            self.ignored += sum(1 for line in lines if line)
        return data


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    if ms := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
