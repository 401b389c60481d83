"""The OpenAI-compatible routes: chat completions (JSON and SSE) and the model list."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from sincere.answer import Answer
from sincere.context import RequestContext
from sincere.errors import GuardViolation, ServiceError, ServiceUnavailable
from sincere.events import EventType
from sincere.identity import KeyRecord
from sincere.llm.provider import Delta
from sincere.server.chat_in import ChatCompletionIn
from sincere.server.gateway import Gateway, bearer_key
from sincere.server.http_errors import request_id
from sincere.server.lifecycle import RequestStopped, Shutdown, Watch, WatchedStream, close_stopped
from sincere.server.sse import error_event, openai_sse
from sincere.stop import StopReason

router = APIRouter(prefix="/v1")

# Documented so that clients (and schemathesis) know every status these routes can return.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed JSON or an invalid request (OpenAI error object)"},
    401: {"description": "Missing, unknown or revoked API key"},
    404: {"description": "Unknown model"},
    408: {"description": "The body did not arrive within server.body_timeout_s (then closed)"},
    413: {"description": "The body is larger than server.max_body_bytes"},
    429: {"description": "Rate-limited by the tier's limits or by every provider"},
    500: {"description": "The response guard withheld an answer that failed its checks"},
    502: {"description": "A provider failed in a way no other route could make up for"},
    503: {"description": "No route could answer (attempts are listed), or the gateway is stopping"},
    504: {"description": "No route answered within the deadline"},
}


async def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


async def caller(request: Request, gw: Gateway) -> KeyRecord:
    # A verified key is served from the key store's cache; a miss queries on a thread.
    return await gw.authenticate(bearer_key(request.headers), request_id(request))


@router.get("/models", responses=ERRORS)
async def list_models(request: Request) -> dict[str, Any]:
    """The models this gateway serves (each with its ordered deployments and fallbacks)."""
    gw = await gateway(request)
    await caller(request, gw)
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
            for m in gw.settings.models
        ],
    }


# The request body as OpenAPI sees it; app.py adds the models it refers to as components.
CHAT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionIn"}}
        },
    }
}


@router.post("/chat/completions", responses=ERRORS, openapi_extra=CHAT_BODY)
async def chat_completions(request: Request) -> Response:
    """Chat completion from a real model, with its provenance in the ``sincere`` member."""
    # The key is checked before the body is read, and the body is parsed and validated by
    # pydantic in one step from bytes: FastAPI's dependency and body machinery cost more
    # than the work they do here. The schema is still published (see CHAT_BODY).
    gw = await gateway(request)
    key = await caller(request, gw)
    try:
        body = ChatCompletionIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    chat = body.to_request()
    rid = request_id(request)
    started = time.perf_counter()
    ctx = gw.contexts.create(key.user_id, key.tier, request_id=rid)
    shutdown: Shutdown = request.app.state.shutdown
    async with AsyncExitStack() as admission:
        await admission.enter_async_context(
            gw.limiter.admit(key.user_id, str(key.tier), ctx.error_context("limits"))
        )
        if body.stream:
            return await _stream(
                gw,
                ctx,
                body,
                admission,
                gw.cascade.stream(ctx, chat),
                started,
                Watch(request.scope, request.receive, shutdown),
            )
        try:
            # Stopped when the client leaves (the cascade cancels the upstream request) or
            # when the shutdown grace runs out.
            async with Watch(request.scope, request.receive, shutdown):
                answer = await gw.cascade.complete(ctx, chat)  # checked by the guard
        except ServiceError as exc:
            _count_failure(gw, exc)
            raise
        except RequestStopped as stop:
            raise _stopped(ctx, stop.reason) from None
        gw.metrics.record_attempts(answer.provenance.attempts)
    _count_failover(gw, body.model, answer)
    gw.metrics.observe_latency("chat", time.perf_counter() - started)
    return Response(
        orjson.dumps(_completion_body(rid, answer)),
        media_type="application/json",
        headers=_provenance_headers(answer),
    )


def _stopped(ctx: RequestContext, reason: StopReason) -> Exception:
    """What a stopped request answers: nothing to a client that left, else 503."""
    if reason is StopReason.CLIENT_GONE:
        return ClientDisconnect()
    return _shutting_down(ctx)


def _shutting_down(ctx: RequestContext) -> ServiceUnavailable:
    # No Retry-After: when another instance (or this one, restarted) serves is unknown here.
    return ServiceUnavailable(
        StopReason.SHUTTING_DOWN.message,
        context=ctx.error_context("gateway"),
        suggestions=["Retry the request: it was not finished."],
    )


def _count_failover(gw: Gateway, model: str, answer: Answer) -> None:
    """An answer from another deployment than the first one tried (retries are not failover)."""
    p = answer.provenance
    if p.attempts[0].deployment != p.deployment:
        gw.metrics.failovers.labels(model).inc()


def _count_failure(gw: Gateway, exc: ServiceError) -> None:
    gw.metrics.record_attempts(exc.attempts)
    if isinstance(exc, GuardViolation):  # the cascade's guard withheld a finished answer
        gw.metrics.mock_blocked.inc()


async def _blocked(gw: Gateway, ctx: RequestContext, exc: ServiceError) -> None:
    gw.metrics.mock_blocked.inc()
    await ctx.emit(
        EventType.REQUEST_FAILED,
        exc.message,
        service="response_guard",
        error_type=exc.error_type,
    )


async def _stream(
    gw: Gateway,
    ctx: RequestContext,
    body: ChatCompletionIn,
    admission: AsyncExitStack,
    stream: AsyncGenerator[Delta | Answer, None],
    started: float,
    watch: Watch,
) -> Response:
    # The first item decides the status: a failure before any text is a plain HTTP error.
    try:
        async with watch:
            first = await anext(stream)
    except ServiceError as exc:
        _count_failure(gw, exc)
        raise
    except RequestStopped as stop:
        raise _stopped(ctx, stop.reason) from None
    slot = admission.pop_all()  # the stream's body holds the slot now, and releases it

    async def guarded() -> AsyncIterator[Delta | Answer]:
        sent = ""
        item: Delta | Answer = first
        while True:
            if isinstance(item, Delta):
                sent += item.text
                try:
                    gw.guard.check_text(sent, ctx.error_context("response_guard"), len(item.text))
                except ServiceError as exc:
                    await _blocked(gw, ctx, exc)
                    raise
            else:
                gw.metrics.record_attempts(item.provenance.attempts)
                _count_failover(gw, body.model, item)
                yield item  # the cascade's guard checked it
                return
            yield item
            try:
                item = await anext(stream)
            except ServiceError as exc:
                _count_failure(gw, exc)
                raise

    async def events() -> AsyncGenerator[bytes, None]:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        sse = openai_sse(
            guarded(),
            request_id=ctx.request_id,
            requested_model=body.model,
            include_usage=include_usage,
        )
        try:
            async for chunk in sse:
                yield chunk
        finally:
            await slot.aclose()
            await sse.aclose()
            await stream.aclose()
            gw.metrics.observe_latency("chat_stream", time.perf_counter() - started)

    async def stopped(reason: StopReason) -> bytes:
        await close_stopped(stream, reason)  # its request_failed says why
        return b"" if reason is StopReason.CLIENT_GONE else error_event(_shutting_down(ctx))

    return WatchedStream(
        events(),
        shutdown=watch.shutdown,
        on_stop=stopped,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(slot.aclose),  # if the body never ran
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
    }
    if p.cost_usd is not None:
        headers["x-sincere-cost-usd"] = f"{p.cost_usd:.8f}"
    if p.time_to_first_token_s is not None:
        headers["x-sincere-ttft-ms"] = f"{p.time_to_first_token_s * 1000:.1f}"
    return headers
