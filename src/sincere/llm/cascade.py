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
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, replace

from sincere.answer import Answer, Completion, Provenance
from sincere.attempts import Attempt
from sincere.config import DeploymentConfig, Settings
from sincere.context import RequestContext
from sincere.errors import (
    BadRequest,
    InternalError,
    LoopRejected,
    ModelBusy,
    ModelNotFound,
    ProviderAuthFailed,
    QualityRejected,
    RateLimited,
    RetryAfterSource,
    ServiceError,
    ServiceUnavailable,
)
from sincere.events import EventType
from sincere.guard.response_guard import ResponseGuard
from sincere.health import HealthReport, HealthState, ServiceRegistry
from sincere.llm.attempt_log import AttemptLog
from sincere.llm.breaker import BreakerPolicy, BreakerState, BreakerTransition, CircuitBreaker
from sincere.llm.embedded import EmbeddedProvider
from sincere.llm.failure import final_error
from sincere.llm.openai_http import OpenAIProvider
from sincere.llm.pricing import cost_usd
from sincere.llm.provider import Delta, Provider
from sincere.llm.quality import rejection
from sincere.llm.request import AttemptLimits, ChatRequest
from sincere.llm.retry import RetryPolicy, backoff_s, is_retryable
from sincere.stop import stop_reason
from sincere.tiers.limits import cap_output

# The quality gate looks at a growing stream every this many pieces, to stop a loop early.
_GATE_EVERY = 16

_TRANSITION_EVENTS = {
    BreakerState.OPEN: (EventType.SERVICE_UNAVAILABLE, HealthState.UNAVAILABLE),
    BreakerState.HALF_OPEN: (EventType.SERVICE_DEGRADED, HealthState.DEGRADED),
    BreakerState.CLOSED: (EventType.SERVICE_RECOVERED, HealthState.READY),
}


@dataclass(frozen=True, slots=True)
class Route:
    """One place a request can go: a model's deployment, in cascade order."""

    model: str
    deployment: DeploymentConfig
    provider: Provider
    breaker: CircuitBreaker


def build_provider(deployment: DeploymentConfig, env: Mapping[str, str]) -> Provider:
    if deployment.provider == "embedded":
        return EmbeddedProvider(deployment)
    return OpenAIProvider(deployment, deployment.api_key(env))


class ModelCascade:
    """Serves chat requests from the configured routes, in order, honestly."""

    def __init__(
        self, settings: Settings, providers: Mapping[str, Provider], registry: ServiceRegistry
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.guard = ResponseGuard(settings.guard.forbidden_phrases)
        self._providers = dict(providers)
        d = settings.defaults
        policy = BreakerPolicy(
            consecutive_failures=d.breaker_consecutive_failures,
            window=d.breaker_window,
            failure_ratio=d.breaker_failure_ratio,
            min_calls=d.breaker_min_calls,
            open_s=d.breaker_open_s,
            max_open_s=d.breaker_max_open_s,
        )
        self.breakers = {name: CircuitBreaker(name, policy) for name in self._providers}
        self._retry = RetryPolicy(d.max_retries, d.retry_base_s, d.retry_max_s)
        self._open_cause: dict[str, type[ServiceError]] = {}
        # Requests in flight per deployment: they hear about its breaker transitions.
        self._dependents: dict[str, dict[str, RequestContext]] = {n: {} for n in self._providers}
        self._routes: dict[str, list[Route]] = {}  # settings are fixed: resolved once per model

    @classmethod
    def from_settings(
        cls, settings: Settings, env: Mapping[str, str] | None = None
    ) -> ModelCascade:
        env = os.environ if env is None else env
        providers = {d.name: build_provider(d, env) for d in settings.deployments}
        registry = ServiceRegistry()
        for name, provider in providers.items():
            registry.register(name, provider.start, timeout_s=settings.defaults.timeout_s)
        return cls(settings, providers, registry)

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()

    def model_names(self) -> list[str]:
        return [m.name for m in self.settings.models]

    def routes(self, model: str) -> list[Route]:
        """The model's deployments, then each fallback model's, transitively, each once."""
        cached = self._routes.get(model)
        if cached is None:
            cached = self._routes[model] = self._resolve(model)
        return cached

    def _resolve(self, model: str) -> list[Route]:
        if self.settings.model(model) is None:
            raise ModelNotFound(
                f"model {model!r} is not configured here",
                suggestions=[f"Use one of: {', '.join(self.model_names())}."],
            )
        routes: list[Route] = []
        seen_models: set[str] = set()
        queue = [model]
        while queue:
            name = queue.pop(0)
            if name in seen_models:
                continue
            seen_models.add(name)
            config = self.settings.model(name)
            assert config is not None  # settings validated every fallback name
            for d in config.deployments:
                if not any(r.deployment.name == d for r in routes):
                    deployment = self.settings.deployment(d)
                    routes.append(Route(name, deployment, self._providers[d], self.breakers[d]))
            queue.extend(config.fallbacks)
        return routes

    async def complete(self, ctx: RequestContext, request: ChatRequest) -> Answer:
        async for item in self._run(ctx, request, streaming=False):
            if isinstance(item, Answer):
                return item
        raise AssertionError("the cascade ends with an Answer or raises")  # pragma: no cover

    def stream(
        self, ctx: RequestContext, request: ChatRequest
    ) -> AsyncGenerator[Delta | Answer, None]:
        """Deltas as they are generated, then the Answer; or a ServiceError.

        A ServiceError after some deltas means the answer is incomplete: the caller must
        show it as failed (for example an in-band error event), never as finished.
        Cancelling the task that iterates it (or ``athrow(CancelledError(reason))``) ends
        the request as failed, with the ``StopReason`` message as its reason.
        """
        return self._run(ctx, request, streaming=True)

    async def _run(
        self, ctx: RequestContext, request: ChatRequest, *, streaming: bool
    ) -> AsyncGenerator[Delta | Answer, None]:
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
        ended = False  # whether the request's terminal event is out
        try:
            await ctx.emit(
                EventType.REQUEST_STARTED,
                f"Request for {request.model} started",
                service="model_cascade",
                model=request.model,
                routes=names,
            )
            log = AttemptLog(request, streaming, tier_max_tokens=tier_cap)
            for route in routes:
                if log.stop or ctx.remaining() <= 0:
                    break
                skip = log.skip_reason(route.deployment, route.model)
                if skip is not None:
                    log.skip(route.model, route.deployment, route.provider.kind, skip)
                    continue
                answer: Answer | None = None
                async for item in self._try_route(ctx, route, log, started):
                    if isinstance(item, Answer):
                        answer = item
                    else:
                        yield item
                if answer is not None:
                    try:  # the last check before the answer leaves: it is not complete before
                        answer = self.guard.check(answer, ctx.error_context("response_guard"))
                    except ServiceError as blocked:
                        await ctx.emit(
                            EventType.REQUEST_FAILED,
                            blocked.message,
                            service="response_guard",
                            error_type=blocked.error_type,
                        )
                        raise
                    await ctx.emit(
                        EventType.REQUEST_COMPLETED,
                        f"Answered by {route.deployment.name}",
                        service="model_cascade",
                        deployment=route.deployment.name,
                        model=route.model,
                    )
                    ended = True
                    yield answer
                    return
            error = self._final_error(ctx, request, log, routes)
            await ctx.emit(
                EventType.REQUEST_FAILED,
                error.message,
                service="model_cascade",
                error_type=error.error_type,
                attempts=len(log.attempts),
            )
            raise error
        except ServiceError:
            raise  # its request_failed event is out
        except asyncio.CancelledError as exc:
            # The caller stopped the request (its client left, the gateway is stopping):
            # the user's events still end, once, saying why. The cancellation also reaches
            # the provider's call, which closes the upstream request. (A caller that closes
            # the stream itself, aclose(), has decided how the request ended and says so.)
            if not ended:
                reason = stop_reason(exc)
                await ctx.emit(
                    EventType.REQUEST_FAILED,
                    reason.message,
                    service="model_cascade",
                    error_type="cancelled",
                    reason=str(reason),
                )
            raise
        except Exception:
            # A defect, not a provider's failure: the user's event stream still ends, and
            # the details stay in the operator's log (the server logs the exception).
            defect = InternalError.of()
            await ctx.emit(
                EventType.REQUEST_FAILED,
                defect.message,
                service="model_cascade",
                error_type=defect.error_type,
            )
            raise
        finally:
            for name in names:
                self._dependents[name].pop(ctx.request_id, None)

    async def _try_route(
        self, ctx: RequestContext, route: Route, log: AttemptLog, started: float
    ) -> AsyncIterator[Delta | Answer]:
        """One route: attempts with retries, each admitted by the route's breaker."""
        name = route.deployment.name
        loop_retry = False  # the one more attempt after a loop, with stronger settings
        for retry in itertools.count(1):
            admission, transition = route.breaker.admit()
            await self._announce(transition)
            if not admission.allowed:
                cause = self._open_cause.get(name, ServiceUnavailable)
                wait = admission.retry_after_s
                log.record(
                    route.model,
                    route.deployment,
                    route.provider.kind,
                    time.monotonic(),
                    cause(
                        _skip_reason(route.breaker, wait),
                        retry_after=wait,
                        retry_after_source=RetryAfterSource.CIRCUIT_BREAKER,
                    ),
                    outcome="circuit_open",
                )
                return
            attempt_started = time.monotonic()
            received: list[str] = []
            called = False  # tool-call fragments arrived: no prefill can continue those
            completion: Completion | None = None
            error: ServiceError | None = None
            try:
                await self._ensure_started(ctx, route)
                request = log.request_for_next_attempt()
                if loop_retry:
                    request = replace(request, loop_retry=True)
                async for item in route.provider.stream(request, self._limits(ctx)):
                    if isinstance(item, Delta):
                        called = called or bool(item.tool_calls)
                        if log.streaming:
                            yield Delta(item.text, route.model, item.tool_calls, item.logprobs)
                        if item.text:
                            received.append(item.text)
                            if len(received) % _GATE_EVERY == 0:
                                _gate(name, log.sent + "".join(received))
                    else:
                        completion = item
                # Tool calls alone are an answer: only the text that comes with them is gated.
                if completion is not None and (
                    completion.text.strip() or not completion.tool_calls
                ):
                    _gate(name, log.sent + completion.text)
            except ServiceError as exc:
                error = exc
            finally:
                # A consumer that walks away mid-attempt leaves no verdict: free the probe.
                if completion is None and error is None:
                    route.breaker.release()
            if completion is not None and error is None:
                await self._announce(route.breaker.record_success())
                log.record(
                    route.model,
                    route.deployment,
                    route.provider.kind,
                    attempt_started,
                    None,
                    completion,
                )
                yield self._answer(log, route, completion, started)
                return
            assert error is not None
            text = "".join(received)
            log.record(
                route.model,
                route.deployment,
                route.provider.kind,
                attempt_started,
                error,
                completion,
                text_received=bool(text) or called,
            )
            if (text or called) and log.streaming:
                log.stream_error = log.stream_error or error
                if not isinstance(error, QualityRejected) and not called:
                    log.sent_by = log.sent_by or name
                    log.sent += text  # a prefill-capable route may continue from here
                else:
                    log.stop = True
            model = self.settings.model(route.model)
            log.learn(
                error,
                route.deployment,
                route.model,
                bool(model and model.failover_on_content_policy),
            )
            wait = None
            next_step = None
            if is_retryable(error, bool(text) or called) and not log.sent:
                budget = min(ctx.remaining(), self._retry.max_s)  # never park a request long
                wait = backoff_s(self._retry, retry, error.retry_after, budget)
            elif not loop_retry and _loop_retry_helps(route, error, log, text):
                loop_retry, wait = True, 0.0
                next_step = "sincere retries it once with stronger repetition penalties"
            await self._count_failure(route, error, retried=wait is not None)
            await ctx.emit(
                EventType.SERVICE_DEGRADED,
                f"{name} failed ({error.error_type}); {next_step or _next_step(error, wait)}",
                service=name,
                outcome=error.error_type,
                retry_in_s=None if wait is None else round(wait, 3),
            )
            if wait is None:
                return
            await asyncio.sleep(wait)

    async def _count_failure(self, route: Route, error: ServiceError, *, retried: bool) -> None:
        """Failures of the deployment (not of the request) count against its breaker."""
        if isinstance(error, BadRequest | QualityRejected | ModelBusy):
            # The request's own failure, or sincere's verdict on a busy local model.
            route.breaker.release()
            return
        open_for, reason = None, error.error_type
        if isinstance(error, ProviderAuthFailed):
            open_for = self.settings.defaults.auth_failure_open_s  # the key will not heal
            reason = "the provider rejected its API key (auth_failure_open_s)"
        elif (
            isinstance(error, RateLimited)
            and error.retry_after
            and error.retry_after_source is RetryAfterSource.PROVIDER
            and not retried
        ):
            open_for = error.retry_after  # the provider said when: nobody asks before that
            reason = f"the provider asked it to wait {_seconds(open_for)} s (Retry-After)"
        transition = route.breaker.record_failure(reason, open_for)
        if transition is not None and transition.after is BreakerState.OPEN:
            rate_limited = isinstance(error, RateLimited)
            self._open_cause[route.deployment.name] = (
                RateLimited if rate_limited else ServiceUnavailable
            )
        await self._announce(transition)

    async def _announce(self, transition: BreakerTransition | None) -> None:
        """Record a breaker transition and tell every request that depends on the deployment."""
        if transition is None:
            return
        event, state = _TRANSITION_EVENTS[transition.after]
        name = transition.deployment
        message = f"{name}: circuit {transition.after.replace('_', '-')}: " + _decision(transition)
        if name in self.registry:
            self.registry.report(name, HealthReport(state, message))
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
        result = await self.registry.initialize_for_context(ctx, [route.deployment.name])
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
            return log.stream_error.with_context(ctx.error_context("model_cascade"), log.attempts)
        return final_error(
            request.model,
            log.errors,
            log.attempts,
            ctx.error_context("model_cascade"),
            max((r.deployment.context_window or 0 for r in routes), default=0) or None,
        )

    def _answer(
        self, log: AttemptLog, route: Route, completion: Completion, started: float
    ) -> Answer:
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
            attempts=tuple(log.attempts),
            selection_reasoning=_reasoning(log, route),
            continued_from=log.sent_by if log.sent else None,
            prefill_chars=len(log.sent),
            tier_max_tokens=log.tier_max_tokens,
        )
        return Answer(completion, provenance)

    async def probe_overdue(self, overdue_s: float) -> None:
        """Probe each open deployment whose probe has been due for ``overdue_s`` unclaimed.

        Without traffic nobody takes a due probe, and behind a load balancer that sends
        requests to ready instances only, none may ever come. The provider's cheap health
        check then decides, through the breaker as a request's probe would: success closes
        the circuit, failure re-opens it for the next period. Its transitions are announced
        and recorded like any other.
        """
        due = [name for name, breaker in self.breakers.items() if breaker.probe_due(overdue_s)]
        await asyncio.gather(*(self._health_probe(name) for name in due))

    async def _health_probe(self, name: str) -> None:
        breaker, provider = self.breakers[name], self._providers[name]
        admission, transition = breaker.admit()
        if not admission.probe:
            return  # a request took the probe meanwhile
        await self._announce(transition)
        try:
            healthy = await provider.check(self.settings.defaults.connect_timeout_s)
        except ServiceError as error:
            # A probe serves no request: the route has no model of its own.
            route = Route("", self.settings.deployment(name), provider, breaker)
            await self._count_failure(route, error, retried=False)
            return
        except BaseException:
            breaker.release()
            raise
        if healthy:
            await self._announce(breaker.record_success("its health check passed"))
        else:
            breaker.release()  # it cannot tell: the next request is the probe


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _decision(transition: BreakerTransition) -> str:
    """What sincere decided about a deployment at a breaker transition, and why."""
    if transition.after is BreakerState.OPEN:
        period = _seconds(transition.next_probe_in_s or 0.0)
        return f"sincere stopped using it for {period} s because {transition.reason}"
    if transition.after is BreakerState.HALF_OPEN:
        return f"sincere lets one request through to probe it because {transition.reason}"
    return f"sincere is using it again because {transition.reason}"


def _skip_reason(breaker: CircuitBreaker, wait: float | None) -> str:
    """Why sincere passed a deployment over without asking it: its breaker's decision."""
    name = breaker.deployment
    opened = breaker.transitions[-1] if breaker.transitions else None
    if wait is None or opened is None or opened.after is not BreakerState.OPEN:
        return f"sincere is probing {name!r} with another request and waits for its outcome"
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


def _loop_retry_helps(route: Route, error: ServiceError, log: AttemptLog, text: str) -> bool:
    """One more attempt with stronger repetition penalties, after a loop on the embedded
    model (whose sampling sincere sets), unless a streaming caller already saw the loop."""
    shown = bool(text) and log.streaming
    return isinstance(error, LoopRejected) and route.provider.kind == "embedded" and not shown


def _reasoning(log: AttemptLog, route: Route) -> str:
    """What actually happened, in one sentence, from the recorded attempts."""
    requested = log.request.model
    where = f"{route.deployment.name!r} (model {route.model}"
    where += ")" if route.model == requested else f", a fallback for {requested})"
    failed: list[Attempt] = [a for a in log.attempts[:-1] if a.outcome != "skipped"]
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
