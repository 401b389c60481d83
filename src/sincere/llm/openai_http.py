"""Any OpenAI-compatible chat completions endpoint: OpenAI, vLLM, Ollama, llama.cpp server, …"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from sincere.answer import Completion, Usage
from sincere.config import DeploymentConfig
from sincere.errors import (
    BadRequest,
    ContentRejected,
    ContextTooLong,
    ModelNotFound,
    ProviderAuthFailed,
    RateLimited,
    ServiceError,
    ServiceTimeout,
    ServiceUnavailable,
    UpstreamError,
)
from sincere.health import HealthReport, HealthState
from sincere.llm.choices import StreamedChoice
from sincere.llm.provider import StreamItem
from sincere.llm.request import AttemptLimits, ChatRequest
from sincere.redact import redact

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
        self._url = deployment.base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None

    @property
    def started(self) -> bool:
        # Nothing to load: whether the endpoint serves is learnt from each attempt.
        return True

    async def start(self) -> HealthReport:
        return HealthReport(HealthState.READY, "HTTP client ready")

    async def aclose(self) -> None:
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
        started = time.monotonic()
        deadline = started + limits.total_s
        first_token_at: float | None = None
        finish: str | None = None
        usage_payload: dict[str, Any] = {}
        parts = StreamedChoice(self.deployment.name)
        with self._map_transport_errors(limits):
            timeout = aiohttp.ClientTimeout(total=None, connect=limits.connect_s)
            bound = min(limits.total_s, limits.connect_s + limits.first_token_s)
            async with self._response_within(bound):
                response = await self._client().post(
                    self._url, data=orjson.dumps(self._body(request)), timeout=timeout
                )
            try:
                if response.status >= 400:
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        body = await response.read()
                    raise self._error_from_response(response.status, body, response.headers)
                done = False
                lines = _SSELines(response.content)
                while not done:
                    limit = limits.first_token_s if first_token_at is None else limits.stream_idle_s
                    if finish is not None and usage_payload:
                        # All that matters has arrived; [DONE] normally follows in the same
                        # packet, and a missing one must not hold the answer back.
                        limit = min(limit, _DONE_GRACE_S)
                    wait = min(limit, deadline - time.monotonic())
                    try:
                        batch = await lines.next_batch(max(0.0, wait))
                    except TimeoutError:
                        if finish is not None:  # complete; only [DONE] or usage was missing
                            break
                        what = "first token" if first_token_at is None else "next token"
                        raise ServiceTimeout(
                            f"{self.deployment.name}: no {what} within {wait:.3g} s"
                        ) from None
                    if batch is None:  # the body ended
                        break
                    for line in batch:
                        event = self._parse_event(line)
                        if event is None:
                            continue
                        if event is _DONE:
                            done = True
                            break
                        assert isinstance(event, dict)
                        if event.get("usage"):
                            usage_payload = event
                        for choice in event.get("choices") or ():
                            piece = parts.add(choice)
                            if piece is not None:
                                if first_token_at is None:
                                    first_token_at = time.monotonic()
                                yield piece
                            finish = choice.get("finish_reason") or finish
                if done and not response.content.at_eof():
                    # Read the body's end, so the connection goes back to the pool.
                    async with asyncio.timeout(_DONE_GRACE_S):
                        await response.content.read()
            finally:
                response.release()
        if finish is None:
            raise UpstreamError(f"{self.deployment.name}: the stream ended without a finish reason")
        ttft = None if first_token_at is None else first_token_at - started
        yield self._completion(parts, finish, usage_payload, started, ttft)

    def _parse_event(self, line: str) -> dict[str, Any] | object | None:
        """One SSE line: a JSON event, ``_DONE``, or None for comments, blanks, other fields."""
        if not line.startswith("data:"):
            return None
        data = line[5:].strip()
        if data == "[DONE]":
            return _DONE
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError(
                f"{self.deployment.name}: the stream carried an undecodable event"
            ) from None
        if not isinstance(event, dict):
            raise UpstreamError(f"{self.deployment.name}: the stream carried a non-object event")
        if "error" in event:
            raise self._error_from_payload(200, event, {})
        return event

    def _completion(
        self,
        parts: StreamedChoice,
        finish: str,
        payload: Mapping[str, Any],
        started: float,
        ttft: float | None,
    ) -> Completion:
        usage = None
        raw = payload.get("usage")
        if isinstance(raw, dict) and isinstance(raw.get("prompt_tokens"), int):
            usage = Usage(int(raw["prompt_tokens"]), int(raw.get("completion_tokens") or 0))
        return Completion(
            text=parts.text,
            finish_reason=finish,
            deployment=self.deployment.name,
            provider=self.kind,
            upstream_model=str(payload.get("model") or self.deployment.model),
            usage=usage,
            latency_s=time.monotonic() - started,
            time_to_first_token_s=ttft,
            tool_calls=parts.tool_calls(),
            logprobs=parts.logprobs,
        )

    # Mapping of everything that can go wrong into ServiceError, in one place.

    def _error_from_response(
        self, status: int, body: bytes, headers: Mapping[str, str]
    ) -> ServiceError:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        return self._error_from_payload(
            status, payload if isinstance(payload, dict) else {}, headers
        )

    def _error_from_payload(
        self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str]
    ) -> ServiceError:
        error = payload.get("error")
        error = error if isinstance(error, dict) else {}
        code = str(error.get("code") or error.get("type") or "")
        upstream_message = error.get("message") if isinstance(error.get("message"), str) else None
        cls = (
            _ERROR_CODES.get(code)
            or _STATUSES.get(status)
            or (UpstreamError if status >= 500 or status < 400 else BadRequest)
        )
        message = f"{self.deployment.name}: upstream answered {status}"
        if upstream_message:
            message += f": {self._scrub(upstream_message)[:500]}"
        return cls(message, retry_after=_retry_after(headers), status_code=status)

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
        name = self.deployment.name
        try:
            yield
        except aiohttp.ConnectionTimeoutError:
            raise ServiceTimeout(f"{name}: no connection within {limits.connect_s:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            raise ServiceUnavailable(
                f"{name}: cannot connect: {self._scrub(str(exc.os_error))}"
            ) from None
        except TimeoutError:
            raise ServiceTimeout(f"{name}: no answer within the time limit") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise UpstreamError(f"{name}: the connection broke: {self._scrub(str(exc))}") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"{name}: transport failure ({type(exc).__name__}): {self._scrub(str(exc))}"
            ) from None


_DONE = object()


class _SSELines:
    """Server-sent event lines, a batch per read: whatever the socket delivered at once.

    One bounded wait per batch rather than per line: most responses arrive in one or two
    reads, and every ``asyncio.timeout`` costs a timer.
    """

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content
        self._rest = b""

    async def next_batch(self, wait_s: float) -> list[str] | None:
        """The complete lines of the next read, or None at the end of the body."""
        while True:
            async with asyncio.timeout(wait_s):
                data = await self._content.readany()
            if not data:
                return [self._rest.decode("utf-8", "replace")] if self._rest else None
            *complete, self._rest = (self._rest + data).split(b"\n")
            # Blank lines only separate events: the caller never sees them.
            lines = [line.decode("utf-8", "replace").rstrip("\r") for line in complete]
            if lines := [line for line in lines if line]:
                return lines


_DONE_GRACE_S = 0.25


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
