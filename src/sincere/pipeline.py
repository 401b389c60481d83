"""The chat pipeline: the steps every chat request takes, whatever surface it came from.

    admit (the tier's limits) → cascade (routes, breakers, quality gate and response
    guard) → record (every RequestObserver: metrics, telemetry, escalation) → exactly
    one terminal event (request_completed or request_failed)

The caller is authenticated first (``Authenticator``: by key over HTTP, as the operator
from the CLI). Edges only translate: they build the ``ChatRequest``, call ``complete``
or ``stream``, and render what comes back. Releasing the tier's slot, recording and the
terminal event are tied to the structure (context managers around the run), so no path
that ends a request, however it ends, can skip them or do them twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import AbstractAsyncContextManager, aclosing
from types import TracebackType
from typing import Any

from sincere.answer import Answer
from sincere.context import ContextFactory, RequestContext
from sincere.errors import InternalError, ServiceError
from sincere.events import EventType
from sincere.identity import Caller
from sincere.llm.cascade import ModelCascade
from sincere.llm.provider import Delta
from sincere.llm.request import ChatRequest
from sincere.ports import Limiter, RequestObserver, RequestRecord
from sincere.stop import StopReason, stop_reason
from sincere.tiers.queue import QueueStatus

log = logging.getLogger("sincere.pipeline")


class ChatPipeline:
    """Serves one chat request from admission to its terminal event."""

    def __init__(
        self,
        cascade: ModelCascade,
        limiter: Limiter,
        contexts: ContextFactory,
        observers: Sequence[RequestObserver] = (),
    ) -> None:
        self.cascade = cascade
        self._limiter = limiter
        self._contexts = contexts
        self._observers = tuple(observers)

    async def complete(
        self, caller: Caller, chat: ChatRequest, *, request_id: str | None = None, surface: str
    ) -> Answer:
        """The whole answer, or the ServiceError that says why there is none."""
        async with self._request(caller, chat, request_id, surface) as run:
            answer = await self.cascade.complete(run.ctx, chat)
            await run.answered(answer)
            return answer

    async def stream(
        self, caller: Caller, chat: ChatRequest, *, request_id: str | None = None, surface: str
    ) -> AsyncGenerator[Delta | Answer | QueueStatus, None]:
        """Deltas as they pass the guard, then the Answer; or a ServiceError. Places in a
        deployment's queue come first while an attempt waits for one at capacity.

        A ServiceError after some deltas means the answer is incomplete: the edge must show
        it as failed, never as finished. To stop the request from outside, cancel the task
        that iterates it or throw ``CancelledError(StopReason…)`` in; closing it early
        counts as the client having gone.
        """
        async with (
            self._request(caller, chat, request_id, surface) as run,
            aclosing(self.cascade.stream(run.ctx, chat)) as items,
        ):
            async for item in items:
                if isinstance(item, Answer):
                    await run.answered(item)
                yield item

    def _request(
        self, caller: Caller, chat: ChatRequest, request_id: str | None, surface: str
    ) -> _Run:
        ctx = self._contexts.create(caller.user_id, caller.tier, request_id=request_id)
        return _Run(self, ctx, chat, surface, caller.contact)


class _Run:
    """One request, as an ``async with`` block: it starts (the event, the tier's slot)
    on entry, and on exit, however the block is left, gives the slot back and records and
    announces the outcome exactly once."""

    def __init__(
        self,
        pipeline: ChatPipeline,
        ctx: RequestContext,
        chat: ChatRequest,
        surface: str,
        contact: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.ctx = ctx
        self.chat = chat
        self.surface = surface
        self.contact = contact
        self.started_at = time.time()
        self.started = time.monotonic()
        self.ended = False
        self._slot: AbstractAsyncContextManager[None] | None = None

    async def __aenter__(self) -> _Run:
        ctx, chat = self.ctx, self.chat
        slot = self.pipeline._limiter.admit(ctx.user_id, str(ctx.tier), ctx.error_context("limits"))
        # Not waited for: the bus writes it in order, before this request's end, and
        # nothing a stopped request does can take it back.
        ctx.post(
            EventType.REQUEST_STARTED,
            f"Request for {chat.model} started",
            service="model_cascade",
            model=chat.model,
            routes=self.pipeline.cascade.route_names(chat.model),
        )
        try:
            await slot.__aenter__()
        except BaseException as exc:
            await self.failed(exc)
            raise
        self._slot = slot
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            assert self._slot is not None
            await self._slot.__aexit__(exc_type, exc, tb)
        finally:
            if exc is not None:
                await self.failed(exc)
            elif not self.ended:  # pragma: no cover - complete() and stream() end with one
                await self.failed(InternalError.of(self.ctx.error_context("pipeline")))

    async def answered(self, answer: Answer) -> None:
        """The answer passed every check: record it, then say so."""
        provenance = answer.provenance
        await self._end(
            EventType.REQUEST_COMPLETED,
            f"Answered by {provenance.deployment}",
            {"deployment": provenance.deployment, "model": provenance.model},
            answer=answer,
        )

    async def failed(self, exc: BaseException) -> None:
        """The request ended without an answer (or was stopped after it: nothing to add)."""
        if self.ended:
            return
        if isinstance(exc, ServiceError):
            await self._end(
                EventType.REQUEST_FAILED,
                exc.message,
                {"error_type": exc.error_type, "attempts": len(exc.attempts)},
                service=exc.context.service or "model_cascade",
                error=exc,
            )
            return
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            # Stopped from outside: the client left, the gateway is stopping, a caller
            # cancelled. An edge that stops reading (closes the stream) has lost its client.
            reason = stop_reason(exc) if isinstance(exc, asyncio.CancelledError) else None
            reason = reason or StopReason.CLIENT_GONE
            await self._end(
                EventType.REQUEST_FAILED,
                reason.message,
                {"error_type": "cancelled", "reason": str(reason)},
                stop=reason,
            )
            return
        # A defect, not a provider's failure: the user's events still end, and the details
        # stay in the operator's log (the edge logs the exception).
        defect = InternalError.of(self.ctx.error_context("pipeline"))
        await self._end(
            EventType.REQUEST_FAILED,
            defect.message,
            {"error_type": defect.error_type},
            error=defect,
        )

    async def _end(
        self,
        type: EventType,
        message: str,
        data: dict[str, Any],
        *,
        service: str = "model_cascade",
        answer: Answer | None = None,
        error: ServiceError | None = None,
        stop: StopReason | None = None,
    ) -> None:
        """Record the request with every observer, then post its one terminal event (even
        if the recording is interrupted: a cancelled request may be cancelled again at
        every await). Posted, not waited for: the bus writes it in order, within a round
        trip, while the admission slot is released."""
        self.ended = True
        attempts = answer.provenance.attempts if answer else error.attempts if error else ()
        record = RequestRecord(
            request_id=self.ctx.request_id,
            user_id=self.ctx.user_id,
            tier=str(self.ctx.tier),
            surface=self.surface,
            requested_model=self.chat.model,
            started_at=self.started_at,
            duration_s=time.monotonic() - self.started,
            attempts=tuple(attempts),
            answer=answer,
            error=error,
            stop_reason=None if stop is None else str(stop),
            contact=self.contact,
        )
        try:
            for observer in self.pipeline._observers:
                try:
                    await observer.finished(record)
                except Exception:  # an observer's failure must not change the user's answer
                    log.exception("request observer %r failed", observer)
        finally:
            self.ctx.post(type, message, service=service, **data)
