"""The OpenAI-compatible routes: chat completions (JSON and SSE) and the model list."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sincere.answer import Answer
from sincere.errors import ErrorContext, ServiceUnavailable
from sincere.identity import Caller
from sincere.llm.provider import Delta
from sincere.llm.request import ChatRequest
from sincere.runtime import Runtime
from sincere.server import http_errors
from sincere.server.chat_in import ChatCompletionIn
from sincere.server.http_errors import bearer_key, request_id
from sincere.server.lifecycle import RequestStopped, Shutdown, Watch, WatchedStream, close_stopped
from sincere.server.serving import READ_TIMED_OUT
from sincere.server.sse import error_event, openai_sse
from sincere.stop import StopReason
from sincere.tiers.queue import QueueStatus

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the response

router = APIRouter(prefix="/v1")

# Documented so that clients (and schemathesis) know every status these routes can return.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed JSON or an invalid request (OpenAI error object)"},
    401: {"description": "Missing, unknown or revoked API key"},
    404: {"description": "Unknown model"},
    408: {"description": "The body did not arrive within server.body_timeout_s (then closed)"},
    413: {"description": "The body is larger than server.max_body_bytes"},
    429: {"description": "Rate-limited by the tier's limits or by every provider"},
    500: {"description": "A defect in sincere (the operator's log has the details)"},
    502: {
        "description": "A provider failed in a way no other route could make up for, "
        "or the response guard withheld every answer"
    },
    503: {"description": "No route could answer (attempts are listed), or the gateway is stopping"},
    504: {"description": "No route answered within the deadline"},
}


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def caller(request: Request) -> Caller:
    # A verified key is served from the key store's cache; a miss queries off the loop.
    return await runtime(request).auth.caller(bearer_key(request.headers), request_id(request))


@router.get("/models", responses=ERRORS)
async def list_models(request: Request) -> dict[str, Any]:
    """The models this gateway serves (each with its ordered deployments and fallbacks)."""
    await caller(request)
    return {
        "object": "list",
        "data": [
            {
                # No "created": nothing records when a model was made, and 0 would be invented.
                "id": m.name,
                "object": "model",
                "owned_by": "sincere",
                "deployments": list(m.deployments),
                "fallbacks": list(m.fallbacks),
            }
            for m in runtime(request).settings.models
        ],
    }


class ChatRoute(APIRoute):
    """The chat route: registered once, published by FastAPI (OpenAPI), served by itself.

    ``serve`` answers a request without FastAPI's request handler: the endpoint checks the
    key before it reads the body, and pydantic parses and validates the bytes in one step.
    ``server/app.py`` calls it ahead of FastAPI's exception middleware and router, whose
    machinery costs about 0.1 ms of CPU a request and buys this route nothing (measured in
    docs/benchmarks.md); FastAPI's own dispatch of the route ends in the same handler. A
    dependency would never run, so declaring one is an error here rather than a silent
    no-op. Every exception is rendered by ``http_errors.render``, as on every other route.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self.dependant.dependencies:
            raise TypeError(
                f"{path} is served without FastAPI's dependency solving: "
                "do the dependency's work in the endpoint"
            )

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self._handle

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request for this route, as an ASGI app."""
        request = Request(scope, receive, send)
        response = await self._handle(request)
        await response(scope, receive, send)

    async def _handle(self, request: Request) -> Response:
        endpoint: Callable[[Request], Awaitable[Response]] = self.endpoint
        shutdown: Shutdown = request.app.state.shutdown
        with shutdown.request():
            try:
                return await endpoint(request)
            except ClientDisconnect:
                # Gone during the upload or the wait: nobody to answer, nothing to log (or
                # the body was late and the protocol answered 408 and closed).
                late = request.scope.get("state", {}).get(READ_TIMED_OUT)
                status = 408 if late else CLIENT_CLOSED_REQUEST
                runtime(request).metrics.count_request("chat", status)
                return _NOTHING
            except Exception as exc:  # noqa: BLE001 - each becomes its response; render logs the unexpected
                return await http_errors.render(request, exc)


class _Nothing(Response):
    """No response at all: the client is gone."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


_NOTHING = _Nothing()


async def chat_completions(request: Request) -> Response:
    """Chat completion from a real model, with its provenance in the ``sincere`` member."""
    rt = runtime(request)
    who = await caller(request)
    try:
        body = ChatCompletionIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    chat = body.to_request()
    rid = request_id(request)
    # Stopped when the client leaves (the cascade cancels the upstream request) or when
    # the shutdown grace runs out.
    watch = Watch(request.scope, request.receive, request.app.state.shutdown)
    if body.stream:
        return await _stream(rt, who, body, chat, rid, watch)
    try:
        async with watch:
            answer = await rt.pipeline.complete(who, chat, request_id=rid, surface="http")
    except RequestStopped as stop:
        raise _stopped(who, rid, stop.reason) from None
    return Response(
        orjson.dumps(_completion_body(rid, answer)),
        media_type="application/json",
        headers=_provenance_headers(answer),
    )


# The request body as OpenAPI sees it: the route parses it itself, so FastAPI cannot infer
# it; app.py publishes the models it refers to as components.
CHAT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionIn"}}
        },
    }
}

router.add_api_route(
    "/chat/completions",
    chat_completions,
    methods=["POST"],
    responses=ERRORS,
    openapi_extra=CHAT_BODY,
    route_class_override=ChatRoute,
)


def _registered() -> ChatRoute:
    route = router.routes[-1]
    assert isinstance(route, ChatRoute)
    return route


CHAT_ROUTE = _registered()  # the one registration: FastAPI publishes it, app.py serves it


def _stopped(who: Caller, rid: str, reason: StopReason) -> Exception:
    """What a stopped request answers: nothing to a client that left, else 503."""
    if reason is StopReason.CLIENT_GONE:
        return ClientDisconnect()
    return _shutting_down(who, rid)


def _shutting_down(who: Caller, rid: str) -> ServiceUnavailable:
    # No Retry-After: when another instance (or this one, restarted) serves is unknown here.
    return ServiceUnavailable(
        StopReason.SHUTTING_DOWN.message,
        context=ErrorContext(who.user_id, rid, "gateway", str(who.tier)),
        suggestions=["Retry the request: it was not finished."],
    )


async def _stream(
    rt: Runtime, who: Caller, body: ChatCompletionIn, chat: ChatRequest, rid: str, watch: Watch
) -> Response:
    stream = rt.pipeline.stream(who, chat, request_id=rid, surface="sse")
    # The first item decides the status: a failure before any text is a plain HTTP error.
    try:
        async with watch:
            first = await anext(stream)
    except RequestStopped as stop:
        raise _stopped(who, rid, stop.reason) from None

    async def items() -> AsyncIterator[Delta | Answer | QueueStatus]:
        yield first
        async for item in stream:
            yield item

    async def events() -> AsyncGenerator[bytes, None]:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        sse = openai_sse(
            items(), request_id=rid, requested_model=body.model, include_usage=include_usage
        )
        try:
            async for chunk in sse:
                yield chunk
        finally:
            await sse.aclose()
            await stream.aclose()

    async def stopped(reason: StopReason) -> bytes:
        await close_stopped(stream, reason)  # its request_failed says why
        return b"" if reason is StopReason.CLIENT_GONE else error_event(_shutting_down(who, rid))

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if not isinstance(first, QueueStatus):
        # It did not wait for its first item. A stream that starts while queued learns its
        # wait later: its dequeued comment and its final chunk's sincere.queue_wait_ms.
        headers["x-sincere-queue-wait-ms"] = "0.0"
    return WatchedStream(
        events(),
        shutdown=watch.shutdown,
        on_stop=stopped,
        media_type="text/event-stream",
        headers=headers,
        background=BackgroundTask(stream.aclose),  # ends the request if the body never ran
    )


def _completion_body(rid: str, answer: Answer) -> dict[str, Any]:
    p = answer.provenance
    body: dict[str, Any] = {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": p.model,
        "choices": [
            {
                "index": 0,
                "message": _message(answer),
                "finish_reason": p.finish_reason,
                "logprobs": answer.completion.logprobs,
            }
        ],
        "sincere": p.to_dict(),
    }
    if p.usage is not None:
        body["usage"] = {
            "prompt_tokens": p.usage.prompt_tokens,
            "completion_tokens": p.usage.completion_tokens,
            "total_tokens": p.usage.total_tokens,
        }
    return body


def _message(answer: Answer) -> dict[str, Any]:
    """The assistant message: its text and the tool calls it made (content null without text)."""
    calls = answer.tool_calls
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.text if answer.text or not calls else None,
    }
    if calls:
        message["tool_calls"] = [call.to_dict() for call in calls]
    return message


def _provenance_headers(answer: Answer) -> dict[str, str]:
    p = answer.provenance
    headers = {
        "x-sincere-model": p.model,
        "x-sincere-deployment": p.deployment,
        "x-sincere-attempts": str(len(p.attempts)),
        "x-sincere-latency-ms": f"{p.latency_s * 1000:.1f}",
        "x-sincere-queue-wait-ms": f"{p.queue_wait_s * 1000:.1f}",
    }
    if p.cost_usd is not None:
        headers["x-sincere-cost-usd"] = f"{p.cost_usd:.8f}"
    if p.time_to_first_token_s is not None:
        headers["x-sincere-ttft-ms"] = f"{p.time_to_first_token_s * 1000:.1f}"
    return headers
