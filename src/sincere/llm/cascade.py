"""ModelCascade: a model name maps to deployments, then fallback models; try them in order.

Each route is guarded by a circuit breaker and retried with backoff on transient failures.
A stream that breaks after text reached the caller continues on a prefill-capable fallback,
or ends in an error: it is never presented as complete. The answer names the route that
really answered, with its usage and cost, and every failed attempt before it; when no
route answers, one ServiceError lists every attempt.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from sincere.answer import Answer, Completion, Provenance, Usage
from sincere.attempts import BLOCKED, OK, Attempt
from sincere.config import Settings
from sincere.context import RequestContext
from sincere.errors import (
    AtCapacity,
    BadRequest,
    GuardViolation,
    LoopRejected,
    ModelBusy,
    ProviderAuthFailed,
    QualityRejected,
    QueueTimeout,
    RateLimited,
    RetryAfterSource,
    ServiceError,
    ServiceUnavailable,
)
from sincere.events import EventType
from sincere.guard.response_guard import ResponseGuard, StreamHoldback
from sincere.health import HealthReport, HealthState, ServiceRegistry
from sincere.llm.attempt_log import AttemptLog
from sincere.llm.breaker import BreakerState, BreakerTransition
from sincere.llm.failure import final_error
from sincere.llm.pricing import cost_usd
from sincere.llm.provider import Delta, Provider
from sincere.llm.quality import rejection
from sincere.llm.request import AnswerCheck, AttemptLimits, ChatRequest
from sincere.llm.retry import RetryPolicy, backoff_s, is_retryable
from sincere.llm.routes import Route, resolve_routes
from sincere.ports import AdmissionQueue, Breakers, BreakerView, ProbeObserver, ProbeRecord
from sincere.tiers.flags import Flag
from sincere.tiers.limits import cap_output
from sincere.tiers.queue import AdmissionQueues, QueueStatus

FlagReader = Callable[[Flag], bool]
"""Whether a feature is on now (``FlagStore.enabled``): read, never waited for."""


def every_feature_on(_flag: Flag) -> bool:
    """The flags of a cascade built without a flag store: every feature on."""
    return True


# The quality gate looks at a growing stream every this many pieces, to stop a loop early.
_GATE_EVERY = 16

_TRANSITION_EVENTS = {
    BreakerState.OPEN: (EventType.SERVICE_UNAVAILABLE, HealthState.UNAVAILABLE),
    BreakerState.HALF_OPEN: (EventType.SERVICE_DEGRADED, HealthState.DEGRADED),
    BreakerState.CLOSED: (EventType.SERVICE_RECOVERED, HealthState.READY),
}


@dataclass(slots=True)
class _Try:
    """One attempt on one route as it goes: what arrived, what the caller saw, the verdict."""

    started: float
    received: list[str] = field(default_factory=list)  # the text the provider produced
    called: bool = False  # tool-call fragments arrived: no prefill can continue those
    shown: list[str] = field(default_factory=list)  # the text that reached the caller
    shown_calls: bool = False
    completion: Completion | None = None
    answer: Answer | None = None
    error: ServiceError | None = None


class ModelCascade:
    """Serves chat requests from the configured routes, in order, honestly."""

    def __init__(
        self,
        settings: Settings,
        providers: Mapping[str, Provider],
        registry: ServiceRegistry,
        breakers: Breakers,
        queues: AdmissionQueue | None = None,
        *,
        flags: FlagReader | None = None,
    ) -> None:
        self.settings = settings
        # Read at each decision it switches, so an operator's change applies to requests
        # already running as soon as this process has read it.
        self.flags = flags or every_feature_on
        self.registry = registry
        self.guard = ResponseGuard(settings.guard.forbidden_phrases)
        self.breakers = breakers
        # A deployment at its capacity makes the attempt wait in its queue (with queueing
        # off, refuses it: 429).
        self.queues = queues or AdmissionQueues(
            settings, queueing=lambda: self.flags(Flag.QUEUEING)
        )
        self._providers = dict(providers)
        d = settings.defaults
        self._retry = RetryPolicy(d.max_retries, d.retry_base_s, d.retry_max_s)
        self._open_cause: dict[str, type[ServiceError]] = {}
        # Requests in flight per deployment: they hear about its breaker transitions.
        self._dependents: dict[str, dict[str, RequestContext]] = {n: {} for n in self._providers}
        self._routes: dict[str, list[Route]] = {}  # settings are fixed: resolved once per model
        self._probe_observers: list[ProbeObserver] = []
        breakers.listen(self._announce_heard)  # another process's transitions reach ours too

    def observe_probes(self, observer: ProbeObserver) -> None:
        """Tell ``observer`` about every shadow probe (its outcome and cost)."""
        self._probe_observers.append(observer)

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()

    def model_names(self) -> list[str]:
        return [m.name for m in self.settings.models]

    def route_names(self, model: str) -> list[str]:
        """The deployments a request for ``model`` may go to, in order ([] for no such model)."""
        cached = self._routes.get(model)
        if cached is None:
            if self.settings.model(model) is None:
                return []
            cached = self.routes(model)
        return [r.name for r in cached]

    def routes(self, model: str) -> list[Route]:
        """The model's deployments, then each fallback model's, transitively, each once."""
        cached = self._routes.get(model)
        if cached is None:
            cached = self._routes[model] = resolve_routes(self.settings, self._providers, model)
        return cached

    async def complete(self, ctx: RequestContext, request: ChatRequest) -> Answer:
        """The whole answer (its places in queues are told as events only)."""
        async for item in self._run(ctx, request, streaming=False):
            if isinstance(item, Answer):
                return item
        raise AssertionError("the cascade ends with an Answer or raises")  # pragma: no cover

    def stream(
        self, ctx: RequestContext, request: ChatRequest
    ) -> AsyncGenerator[Delta | Answer | QueueStatus, None]:
        """Deltas as they are generated, then the Answer; or a ServiceError. While an
        attempt waits for a deployment at capacity, its places in the queue come first.

        A ServiceError after some deltas means the answer is incomplete: the caller must
        show it as failed (for example an in-band error event), never as finished.
        Cancelling the task that iterates it reaches the provider's call, which lets go of
        the upstream request. The request's own events (started, completed or failed) are
        the pipeline's: the cascade tells the user about the services it tries.
        """
        return self._run(ctx, request, streaming=True)

    async def _run(
        self, ctx: RequestContext, request: ChatRequest, *, streaming: bool
    ) -> AsyncGenerator[Delta | Answer | QueueStatus, None]:
        started = time.monotonic()
        try:
            routes = self.routes(request.model)
            tier = str(ctx.tier)
            request, tier_cap = cap_output(request, tier, self.settings.tiers[tier])
        except ServiceError as exc:
            raise exc.with_context(ctx.error_context("model_cascade")) from None
        names = [r.deployment.name for r in routes]
        for name in names:
            self._dependents[name][ctx.request_id] = ctx
        try:
            log = AttemptLog(
                request,
                streaming,
                tier_max_tokens=tier_cap,
                queue_budget_s=self.settings.tiers[tier].max_queue_wait_s,
            )
            for route in routes:
                if log.stop or ctx.remaining() <= 0:
                    break
                skip = log.skip_reason(route)
                if skip is not None:
                    log.skip(route, skip)
                    continue
                answer: Answer | None = None
                # Shadow probes rolled back: a due circuit takes this request as its probe,
                # as a classic half-open breaker does, so an outage still ends.
                probe = not self.flags(Flag.SHADOW_PROBE) and await self._claim(ctx, route)
                tries = self._as_probe if probe else self._try_route
                async for item in tries(ctx, route, log, started):
                    if isinstance(item, Answer):
                        answer = item  # it passed the quality gate and the guard
                    else:
                        yield item
                if answer is not None:
                    yield answer
                    return
            if not log.stop and ctx.remaining() > 0 and _nobody_asked(log):
                # Every route's circuit is open: a shadow probe spares users a wait only
                # when another route can answer. With none left, a due circuit takes this
                # request as its probe rather than hand the user a certain error.
                async for item in self._last_resort(ctx, routes, log, started):
                    yield item
                    if isinstance(item, Answer):
                        return
            raise self._final_error(ctx, request, log, routes)
        finally:
            for name in names:
                self._dependents[name].pop(ctx.request_id, None)

    async def _try_route(
        self, ctx: RequestContext, route: Route, log: AttemptLog, started: float
    ) -> AsyncIterator[Delta | Answer | QueueStatus]:
        """One route: attempts with retries, each admitted by the route's breaker, then
        by its capacity (waiting in its queue when it is full)."""
        loop_retry = False  # the one more attempt after a loop, with stronger settings
        for retry in itertools.count(1):
            if not await self._admitted(route, log):
                return
            run = _Try(time.monotonic())
            try:
                slot = await self.queues.enter(ctx, route.name)
            except AtCapacity as refused:  # queueing is off: the next route, if any
                log.record(route, run.started, refused)
                return
            async with slot:
                try:
                    # The tier's wait is the request's, whichever routes it waits for.
                    async for status in slot.waiting(log.queue_budget_s - log.queued_s):
                        if not status.dequeued:
                            log.queue_position = status.position
                        yield status
                except QueueTimeout as timeout:  # like a busy model: the next route, if any
                    log.queued_s += slot.waited_s
                    log.record(route, run.started, timeout)
                    return
                log.queued_s += slot.waited_s
                run.started = time.monotonic()
                attempt = self._attempt(ctx, route, log, run, loop_retry, started)
                async with aclosing(attempt) as deltas:
                    async for delta in deltas:
                        yield delta
            if run.answer is not None:
                await self._announce(await self.breakers.record_success(route.name))
                yield run.answer
                return
            wait, loop_retry = await self._after_failure(ctx, route, log, run, retry, loop_retry)
            if wait is None:
                return
            await asyncio.sleep(wait)

    async def _last_resort(
        self, ctx: RequestContext, routes: list[Route], log: AttemptLog, started: float
    ) -> AsyncIterator[Delta | Answer]:
        """The first route whose probe is due, with this request as the probe: its answer
        closes the circuit, its failure re-opens it for the schedule's next step."""
        for route in routes:
            if log.skip_reason(route) is None and await self._claim(ctx, route):
                async for item in self._as_probe(ctx, route, log, started):
                    yield item
                return  # one probe per request

    async def _claim(self, ctx: RequestContext, route: Route) -> bool:
        """Whether this request took the route's due probe (the prober, or another
        process, may hold it now)."""
        if not self.breakers.view(route.name).probe_due():
            return False
        claimed, transition = await self.breakers.claim_probe(
            route.name, lease_s=max(0.0, ctx.remaining()) + 1.0
        )
        if claimed:
            await self._announce(transition)
        return claimed

    async def _as_probe(
        self, ctx: RequestContext, route: Route, log: AttemptLog, started: float
    ) -> AsyncIterator[Delta | Answer]:
        """One attempt on a route whose probe this request claimed: its deltas, then its
        answer (which closes the circuit); a failure re-opens it and is recorded."""
        run = _Try(time.monotonic())
        try:
            async with aclosing(self._attempt(ctx, route, log, run, False, started)) as deltas:
                async for delta in deltas:
                    yield delta
        finally:
            if run.answer is None and run.error is None:
                await self.breakers.release(route.name)  # no verdict: it stays due
        if run.answer is not None:
            verdict = await self.breakers.probe_succeeded(
                route.name, "a request it served as the probe succeeded"
            )
            await self._announce(verdict)
            yield run.answer
            return
        if run.error is not None:
            self._record_failure(route, log, run)
            reason, open_for = self._failure_reason(run.error, retried=False)
            failed = await self.breakers.probe_failed(route.name, reason, open_for)
            await self._opened(failed, run.error)

    async def _after_failure(
        self,
        ctx: RequestContext,
        route: Route,
        log: AttemptLog,
        run: _Try,
        retry: int,
        loop_retry: bool,
    ) -> tuple[float | None, bool]:
        """A failed attempt recorded, counted and told: the wait before the same route is
        tried again (None: move on), and whether the loop's one more attempt is taken."""
        error = run.error
        assert error is not None
        self._record_failure(route, log, run)
        wait, again_for_loop = self._retry_wait(ctx, route, log, run, retry, loop_retry)
        await self._count_failure(route, error, retried=wait is not None)
        if again_for_loop:
            step = "sincere retries it once with stronger repetition penalties"
        else:
            step = _next_step(error, wait)
        if not self.flags(Flag.DETAILED_EVENTS):
            return wait, loop_retry or again_for_loop
        await ctx.emit(
            EventType.SERVICE_DEGRADED,
            f"{route.name} failed ({error.error_type}); {step}",
            service=route.name,
            outcome=error.error_type,
            retry_in_s=None if wait is None else round(wait, 3),
        )
        return wait, loop_retry or again_for_loop

    async def _admitted(self, route: Route, log: AttemptLog) -> bool:
        """Whether the route's breaker lets an attempt through; a refusal is recorded."""
        admission = await self.breakers.admit(route.name)
        if admission.allowed:
            return True
        cause = self._open_cause.get(route.name, ServiceUnavailable)
        wait = admission.retry_after_s
        reason = _skip_reason(self.breakers.view(route.name), wait)
        refusal = cause(
            reason, retry_after=wait, retry_after_source=RetryAfterSource.CIRCUIT_BREAKER
        )
        log.record(route, time.monotonic(), refusal, outcome="circuit_open")
        return False

    async def _attempt(
        self,
        ctx: RequestContext,
        route: Route,
        log: AttemptLog,
        run: _Try,
        loop_retry: bool,
        started: float,
    ) -> AsyncGenerator[Delta, None]:
        """One attempt, through the quality gate and the response guard: the deltas the
        caller may see, as soon as no forbidden phrase can begin in them.

        Ends with ``run.answer`` or ``run.error`` set, or neither when the consumer left.
        """
        # Only a stream shows text before the answer is whole; a plain request's answer is
        # checked whole (in _guarded_answer) before anyone sees it.
        holdback = (
            StreamHoldback[Delta](self.guard, ctx.error_context("response_guard"), log.sent)
            if log.streaming
            else None
        )
        try:
            await self._ensure_started(ctx, route)
            request = log.request_for_next_attempt()
            if loop_retry:
                request = replace(request, loop_retry=True)
            async for item in route.provider.stream(request, self._limits(ctx)):
                if isinstance(item, Completion):
                    run.completion = item
                    continue
                run.called = run.called or bool(item.tool_calls)
                if item.text:
                    run.received.append(item.text)
                    if len(run.received) % _GATE_EVERY == 0:
                        _gate(route.name, log.sent + "".join(run.received))
                if holdback is not None:
                    for delta in holdback.push(item, item.text):
                        yield self._shown(route, run, delta)
            completion = run.completion
            # Tool calls alone are an answer: only the text that comes with them is gated.
            if completion is not None and (completion.text.strip() or not completion.tool_calls):
                _gate(route.name, log.sent + completion.text)
            if completion is not None and request.answer_check is not None:
                _check(route.name, request.answer_check, log.sent + completion.text)
            if completion is not None:
                run.answer = self._guarded_answer(ctx, log, route, run, completion, started)
            if holdback is not None:
                for delta in holdback.release_rest():
                    yield self._shown(route, run, delta)
        except ServiceError as exc:
            run.error = exc

    @staticmethod
    def _shown(route: Route, run: _Try, delta: Delta) -> Delta:
        """A delta on its way to the caller, named for the model producing it."""
        if delta.text:
            run.shown.append(delta.text)
        run.shown_calls = run.shown_calls or bool(delta.tool_calls)
        return Delta(delta.text, route.model, delta.tool_calls, delta.logprobs)

    def _guarded_answer(
        self,
        ctx: RequestContext,
        log: AttemptLog,
        route: Route,
        run: _Try,
        completion: Completion,
        started: float,
    ) -> Answer:
        """The attempt's answer, once the guard passed it (else its GuardViolation)."""
        succeeded = log.attempt(route, run.started, None, completion)
        answer = self._answer(log, route, completion, started, succeeded)
        self.guard.check(answer, ctx.error_context("response_guard"))
        log.attempts.append(succeeded)
        return answer

    def _record_failure(self, route: Route, log: AttemptLog, run: _Try) -> None:
        """A failed attempt in the log, and what it means for the routes after it."""
        error = run.error
        assert error is not None
        log.record(
            route,
            run.started,
            error,
            run.completion,
            text_received=bool(run.received) or run.called,
            outcome=BLOCKED if isinstance(error, GuardViolation) else None,
        )
        if run.shown or run.shown_calls:
            # The caller holds part of an answer: only a prefill of exactly what it holds
            # can go on from there.
            log.stream_error = log.stream_error or error
            if not isinstance(error, QualityRejected) and not run.shown_calls:
                log.sent_by = log.sent_by or route.name
                log.sent += "".join(run.shown)
                # Rolled back (the flag off), a cut stream ends in its error at once.
                log.stop = log.stop or not self.flags(Flag.STREAM_CONTINUATION)
            else:
                log.stop = True
        model = self.settings.model(route.model)
        log.learn(error, route, bool(model and model.failover_on_content_policy))

    def _retry_wait(
        self,
        ctx: RequestContext,
        route: Route,
        log: AttemptLog,
        run: _Try,
        retry: int,
        loop_retry: bool,
    ) -> tuple[float | None, bool]:
        """Seconds until the same route is tried again (None: move on), and whether that is
        the one more attempt a loop earns."""
        error = run.error
        assert error is not None
        if is_retryable(error, bool(run.received) or run.called) and not log.sent:
            budget = min(ctx.remaining(), self._retry.max_s)  # never park a request long
            return backoff_s(self._retry, retry, error.retry_after, budget), False
        if not loop_retry and _loop_retry_helps(route, error, run):
            return 0.0, True
        return None, False

    async def _count_failure(self, route: Route, error: ServiceError, *, retried: bool) -> None:
        """Failures of the deployment (not of the request) count against its breaker."""
        if isinstance(error, BadRequest | QualityRejected | ModelBusy | GuardViolation):
            # The request's own failure, or sincere's verdict on a busy local model. A
            # blocked answer counts neither: a user's prompt can make a model say the
            # phrase, and counting it would let any user open the circuit for everyone.
            return
        reason, open_for = self._failure_reason(error, retried=retried)
        transition = await self.breakers.record_failure(route.name, reason, open_for)
        await self._opened(transition, error)

    def _failure_reason(self, error: ServiceError, *, retried: bool) -> tuple[str, float | None]:
        """Why a failure counts against a breaker, and how long it opens the circuit when
        that is not the schedule's decision."""
        if isinstance(error, ProviderAuthFailed):
            # The key will not heal.
            return "the provider rejected its API key (auth_failure_open_s)", (
                self.settings.defaults.auth_failure_open_s
            )
        if (
            isinstance(error, RateLimited)
            and error.retry_after
            and error.retry_after_source is RetryAfterSource.PROVIDER
            and not retried
        ):
            # The provider said when: nobody asks before that.
            wait = error.retry_after
            return f"the provider asked it to wait {_seconds(wait)} s (Retry-After)", wait
        return error.error_type, None

    async def _opened(self, transition: BreakerTransition | None, error: ServiceError) -> None:
        """Announce a transition a failure caused, remembering why a circuit opened."""
        if transition is not None and transition.after is BreakerState.OPEN:
            rate_limited = isinstance(error, RateLimited)
            self._open_cause[transition.deployment] = (
                RateLimited if rate_limited else ServiceUnavailable
            )
        await self._announce(transition)

    async def _announce_heard(self, transition: BreakerTransition, made_here: bool) -> None:
        """A transition the breakers tell of: another process's (which recorded it in the
        history), or one made here in the background."""
        await self._announce(transition, made_here=made_here)

    async def _announce(self, transition: BreakerTransition | None, made_here: bool = True) -> None:
        """Record a breaker transition and tell every request that depends on the deployment."""
        if transition is None:
            return
        event, state = _TRANSITION_EVENTS[transition.after]
        name = transition.deployment
        message = f"{name}: circuit {transition.after.replace('_', '-')}: " + _decision(transition)
        if name in self.registry:
            self.registry.report(name, HealthReport(state, message), recorded=not made_here)
        if not self.flags(Flag.DETAILED_EVENTS):
            return  # recorded for /status and the history; the users' streams are spared
        for ctx in list(self._dependents.get(name, {}).values()):
            await ctx.emit(
                event,
                message,
                service=name,
                breaker=str(transition.after),
                next_probe_in_s=transition.next_probe_in_s,
            )

    async def _ensure_started(self, ctx: RequestContext, route: Route) -> None:
        """Initialize a route's provider for this request, telling the user while it loads."""
        if route.provider.started:
            return
        result = await self.registry.initialize_for_context(
            ctx, [route.deployment.name], announce=self.flags(Flag.DETAILED_EVENTS)
        )
        report = result.services[route.deployment.name]
        if report.state is not HealthState.READY:
            raise ServiceUnavailable(f"{route.deployment.name}: {report.message}")

    def _limits(self, ctx: RequestContext) -> AttemptLimits:
        d = self.settings.defaults
        return AttemptLimits(
            total_s=max(0.0, min(d.timeout_s, ctx.remaining())),
            connect_s=d.connect_timeout_s,
            first_token_s=d.first_token_timeout_s,
            stream_idle_s=d.stream_idle_timeout_s,
            queue_s=d.max_queue_wait_s,
        )

    def _final_error(
        self, ctx: RequestContext, request: ChatRequest, log: AttemptLog, routes: list[Route]
    ) -> ServiceError:
        if log.stream_error is not None:
            # The caller holds part of an answer: the failure that cut it is the news, not
            # whatever a fallback said about the prefill afterwards.
            error = log.stream_error.with_context(ctx.error_context("model_cascade"), log.attempts)
        else:
            error = final_error(
                request.model,
                log.errors,
                log.attempts,
                ctx.error_context("model_cascade"),
                max((r.deployment.context_window or 0 for r in routes), default=0) or None,
            )
        if log.queue_position is not None:  # it waited: the place it had, and how long
            error.members.setdefault("queue_position", log.queue_position)
            error.members.setdefault("queue_waited_ms", round(log.queued_s * 1000))
        return error

    def _answer(
        self,
        log: AttemptLog,
        route: Route,
        completion: Completion,
        started: float,
        succeeded: Attempt,
    ) -> Answer:
        attempts = (*log.attempts, succeeded)
        if log.sent:
            completion = replace(completion, text=log.sent + completion.text)
        provenance = Provenance(
            model=route.model,
            requested_model=log.request.model,
            deployment=route.deployment.name,
            provider=route.provider.kind,
            upstream_model=completion.upstream_model,
            usage=completion.usage,
            cost_usd=cost_usd(completion.usage, route.deployment),
            latency_s=time.monotonic() - started,
            time_to_first_token_s=completion.time_to_first_token_s,
            finish_reason=completion.finish_reason,
            attempts=attempts,
            selection_reasoning=_reasoning(log, route, attempts),
            continued_from=log.sent_by if log.sent else None,
            prefill_chars=len(log.sent),
            tier_max_tokens=log.tier_max_tokens,
            queue_wait_s=log.queued_s,
        )
        return Answer(completion, provenance)

    def due_probes(self) -> list[str]:
        """The deployments whose circuit waits for a probe now (as this process knows it)."""
        return [name for name in self._providers if self.breakers.view(name).probe_due()]

    async def probe(self, name: str) -> None:
        """One shadow probe of ``name``, if this process wins its claim: the provider's
        smallest real request, never a user's. Success closes the circuit; a failure
        re-opens it for the schedule's next step (or as the error demands: a rejected
        key, a Retry-After). Its transitions are announced like any other; its cost is
        told to the probe observers like any attempt's."""
        provider = self._providers[name]
        d = self.settings.defaults
        total = d.connect_timeout_s + d.first_token_timeout_s  # one token: its first one
        limits = AttemptLimits(total, d.connect_timeout_s, d.first_token_timeout_s, total)
        claimed, transition = await self.breakers.claim_probe(name, lease_s=total + 1.0)
        if not claimed:
            return  # another process (or an earlier round) holds it
        await self._announce(transition)
        at, started = time.time(), time.monotonic()
        try:
            usage = await provider.probe(limits)
        except ServiceError as error:
            reason, open_for = self._failure_reason(error, retried=False)
            await self._opened(await self.breakers.probe_failed(name, reason, open_for), error)
            await self._probed(name, at, started, None, error)
            return
        except BaseException:
            await self.breakers.release(name)  # no verdict: the next round may probe
            raise
        await self._announce(await self.breakers.probe_succeeded(name))
        await self._probed(name, at, started, usage, None)

    async def _probed(
        self, name: str, at: float, started: float, usage: Usage | None, error: ServiceError | None
    ) -> None:
        """Tell the probe observers what a probe did and cost (0 for an error status: no
        tokens were generated; unknown when it broke otherwise)."""
        if error is None:
            cost = cost_usd(usage, self.settings.deployment(name))
        else:
            cost = 0.0 if error.status_code is not None else None
        attempt = Attempt(
            model="",
            deployment=name,
            provider=self._providers[name].kind,
            outcome=OK if error is None else error.error_type,
            duration_s=time.monotonic() - started,
            status_code=None if error is None else error.status_code,
            detail=None if error is None else error.message,
            cost_usd=cost,
        )
        record = ProbeRecord(attempt, usage, at)
        for observer in self._probe_observers:
            await observer.probed(record)


def _nobody_asked(log: AttemptLog) -> bool:
    """No attempt reached a provider: every route was refused by its circuit (or ruled out)."""
    return all(a.outcome in ("circuit_open", "skipped") for a in log.attempts)


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _decision(transition: BreakerTransition) -> str:
    """What sincere decided about a deployment at a breaker transition, and why."""
    if transition.after is BreakerState.OPEN:
        period = _seconds(transition.next_probe_in_s or 0.0)
        return f"sincere stopped using it for {period} s because {transition.reason}"
    if transition.after is BreakerState.HALF_OPEN:
        return (
            f"sincere tests it with a one-token probe (no user's request waits on it) "
            f"because {transition.reason}"
        )
    return f"sincere is using it again because {transition.reason}"


def _skip_reason(breaker: BreakerView, wait: float | None) -> str:
    """Why sincere passed a deployment over without asking it: its breaker's decision."""
    name = breaker.deployment
    opened = breaker.transitions[-1] if breaker.transitions else None
    if wait is None or opened is None or opened.after is not BreakerState.OPEN:
        return f"sincere is testing {name!r} with a probe and waits for its outcome"
    period = _seconds(opened.next_probe_in_s or 0.0)
    return (
        f"sincere stopped using {name!r} for {period} s because {opened.reason}; "
        f"it tries again in {_seconds(wait)} s"
    )


def _next_step(error: ServiceError, wait: float | None) -> str:
    """What sincere does after a failed attempt, and on whose word it waits."""
    if wait is None:
        return "sincere moves on to the next route, if there is one"
    step = f"sincere retries it in {wait:.2f} s"
    if error.retry_after is not None and error.retry_after_source is RetryAfterSource.PROVIDER:
        step += ", as the provider asked (Retry-After)"
    return step


def _gate(deployment: str, text: str) -> None:
    found = rejection(text)
    if found is not None:
        error = LoopRejected if found.loop else QualityRejected
        raise error(f"{deployment}: rejected by sincere's quality gate: {found.reason}")


def _check(deployment: str, check: AnswerCheck, text: str) -> None:
    """The caller's own check of a finished answer (``ChatRequest.answer_check``)."""
    rejected = check(text)
    if rejected is not None:
        raise type(rejected)(f"{deployment}: {rejected.message}")


def _loop_retry_helps(route: Route, error: ServiceError, run: _Try) -> bool:
    """One more attempt with stronger repetition penalties, after a loop on the embedded
    model (whose sampling sincere sets), unless a streaming caller already saw the loop."""
    return isinstance(error, LoopRejected) and route.provider.kind == "embedded" and not run.shown


def _reasoning(log: AttemptLog, route: Route, attempts: Sequence[Attempt]) -> str:
    """What actually happened, in one sentence, from the recorded attempts."""
    requested = log.request.model
    where = f"{route.deployment.name!r} (model {route.model}"
    where += ")" if route.model == requested else f", a fallback for {requested})"
    failed: list[Attempt] = [a for a in attempts[:-1] if a.outcome != "skipped"]
    if not failed:
        return f"Answered by {where} at the first attempt."
    tried = "; ".join(f"{a.deployment}: {a.outcome}" for a in failed)
    plural = "s" if len(failed) > 1 else ""
    text = f"Answered by {where} after {len(failed)} failed attempt{plural} ({tried})"
    if log.sent:
        text += (
            f"; {log.sent_by}'s stream broke after {len(log.sent)} characters and "
            f"{route.deployment.name} continued from them"
        )
    return text + "."
