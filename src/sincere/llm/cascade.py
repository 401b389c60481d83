"""ModelCascade: a model name maps to deployments, then fallback models; try them in order.

The answer names the route that really answered, with its usage and cost, and every failed
attempt before it. When no route answers, one ServiceError lists every attempt.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from sincere.answer import Answer, Completion, Provenance
from sincere.attempts import OK, Attempt
from sincere.config import DeploymentConfig, Settings
from sincere.context import RequestContext
from sincere.errors import (
    BadRequest,
    ContextTooLong,
    ModelNotFound,
    ServiceError,
    ServiceUnavailable,
)
from sincere.events import EventType
from sincere.health import HealthState, ServiceRegistry
from sincere.llm.embedded import EmbeddedProvider
from sincere.llm.failure import final_error
from sincere.llm.openai_http import OpenAIProvider
from sincere.llm.pricing import cost_usd
from sincere.llm.provider import Delta, Provider
from sincere.llm.request import AttemptLimits, ChatRequest


@dataclass(frozen=True, slots=True)
class Route:
    """One place a request can go: a model's deployment, in cascade order."""

    model: str
    deployment: DeploymentConfig
    provider: Provider


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
        self._providers = dict(providers)
        self.registry = registry

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
                    routes.append(Route(name, self.settings.deployment(d), self._providers[d]))
            queue.extend(config.fallbacks)
        return routes

    async def complete(self, ctx: RequestContext, request: ChatRequest) -> Answer:
        async for item in self._run(ctx, request, streaming=False):
            if isinstance(item, Answer):
                return item
        raise AssertionError("the cascade ends with an Answer or raises")  # pragma: no cover

    def stream(self, ctx: RequestContext, request: ChatRequest) -> AsyncIterator[Delta | Answer]:
        """Deltas as they are generated, then the Answer; or a ServiceError."""
        return self._run(ctx, request, streaming=True)

    async def _run(
        self, ctx: RequestContext, request: ChatRequest, *, streaming: bool
    ) -> AsyncIterator[Delta | Answer]:
        started = time.monotonic()
        try:
            routes = self.routes(request.model)
        except ServiceError as exc:
            raise exc.with_context(ctx.error_context("model_cascade")) from None
        await ctx.emit(
            EventType.REQUEST_STARTED,
            f"Request for {request.model} started",
            service="model_cascade",
            model=request.model,
            routes=[r.deployment.name for r in routes],
        )
        attempts: list[Attempt] = []
        errors: list[ServiceError] = []
        for route in routes:
            if ctx.remaining() <= 0:
                break
            sent_text = False
            attempt_started = time.monotonic()
            try:
                await self._ensure_started(ctx, route)
                limits = self._limits(ctx)
                if streaming:
                    completion: Completion | None = None
                    async for item in route.provider.stream(request, limits):
                        if isinstance(item, Delta):
                            sent_text = True
                            yield item
                        else:
                            completion = item
                    if completion is None:  # pragma: no cover - providers end with one
                        raise ServiceUnavailable(f"{route.deployment.name}: no completion")
                else:
                    completion = await route.provider.complete(request, limits)
            except ServiceError as exc:
                attempt = self._attempt(route, exc.error_type, attempt_started, exc)
                attempts.append(attempt)
                errors.append(exc)
                await ctx.emit(
                    EventType.SERVICE_UNAVAILABLE,
                    f"{route.deployment.name} failed: {exc.message}",
                    service=route.deployment.name,
                    outcome=exc.error_type,
                )
                if sent_text or not _worth_another_route(exc):
                    # Text already reached the caller: switching models now would splice two
                    # answers into one. (Prefill continuation comes with stream recovery.)
                    break
                continue
            attempts.append(self._attempt(route, OK, attempt_started, None))
            answer = self._answer(request, route, completion, attempts, started)
            await ctx.emit(
                EventType.REQUEST_COMPLETED,
                f"Answered by {route.deployment.name}",
                service="model_cascade",
                deployment=route.deployment.name,
                model=route.model,
            )
            yield answer
            return
        error = final_error(
            request.model,
            errors,
            attempts,
            ctx.error_context("model_cascade"),
            max((r.deployment.context_window or 0 for r in routes), default=0) or None,
        )
        await ctx.emit(
            EventType.REQUEST_FAILED,
            error.message,
            service="model_cascade",
            error_type=error.error_type,
            attempts=len(attempts),
        )
        raise error

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
        )

    @staticmethod
    def _attempt(route: Route, outcome: str, started: float, error: ServiceError | None) -> Attempt:
        return Attempt(
            model=route.model,
            deployment=route.deployment.name,
            provider=route.provider.kind,
            outcome=outcome,
            duration_s=round(time.monotonic() - started, 6),
            status_code=error.status_code if error else None,
            detail=error.message if error else None,
            retry_after_s=error.retry_after if error else None,
        )

    def _answer(
        self,
        request: ChatRequest,
        route: Route,
        completion: Completion,
        attempts: list[Attempt],
        started: float,
    ) -> Answer:
        provenance = Provenance(
            model=route.model,
            requested_model=request.model,
            deployment=route.deployment.name,
            provider=route.provider.kind,
            upstream_model=completion.upstream_model,
            usage=completion.usage,
            cost_usd=cost_usd(completion.usage, route.deployment),
            latency_s=time.monotonic() - started,
            time_to_first_token_s=completion.time_to_first_token_s,
            finish_reason=completion.finish_reason,
            attempts=tuple(attempts),
            selection_reasoning=_reasoning(request.model, route, attempts),
        )
        return Answer(completion, provenance)


def _worth_another_route(error: ServiceError) -> bool:
    """A malformed or policy-rejected request fails the same everywhere; a long one may fit."""
    return isinstance(error, ContextTooLong) or not isinstance(error, BadRequest)


def _reasoning(requested: str, route: Route, attempts: list[Attempt]) -> str:
    """What actually happened, in one sentence, from the recorded attempts."""
    where = f"{route.deployment.name!r} (model {route.model}"
    where += ")" if route.model == requested else f", a fallback for {requested})"
    failed = attempts[:-1]
    if not failed:
        return f"Answered by {where} at the first attempt."
    tried = "; ".join(f"{a.deployment}: {a.outcome}" for a in failed)
    plural = "s" if len(failed) > 1 else ""
    return f"Answered by {where} after {len(failed)} failed attempt{plural} ({tried})."
