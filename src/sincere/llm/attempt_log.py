"""The record of one request's way through the cascade: attempts, errors, what was sent."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from sincere.answer import Completion
from sincere.attempts import OK, Attempt
from sincere.config import DeploymentConfig
from sincere.errors import (
    BadRequest,
    ContentRejected,
    ContextTooLong,
    ServiceError,
    UnsupportedParameter,
)
from sincere.errors import ServiceUnavailable as Unavailable
from sincere.llm.pricing import cost_usd
from sincere.llm.request import ChatRequest, Message
from sincere.llm.routes import Route


@dataclass(slots=True)
class AttemptLog:
    """Mutable state of one request's cascade run; never shared between requests."""

    request: ChatRequest
    streaming: bool
    attempts: list[Attempt] = field(default_factory=list)
    errors: list[ServiceError] = field(default_factory=list)
    sent: str = ""  # text that already reached the caller
    sent_by: str | None = None  # the deployment that produced it
    stream_error: ServiceError | None = None  # the failure that cut a stream mid-answer
    context_bound: int = 0  # a prompt did not fit a window this large
    rejected_models: set[str] = field(default_factory=set)
    stop: bool = False  # no other route can help
    tier_max_tokens: int | None = None  # the tier's cap, applied to a request without one
    queued_s: float = 0.0  # time spent in deployments' admission queues
    queue_budget_s: float = 0.0  # the tier's max_queue_wait_s: the most queued_s may reach
    queue_position: int | None = None  # the last place it had in a queue, if it waited

    def request_for_next_attempt(self) -> ChatRequest:
        """The request as asked; after a mid-stream cut, with the sent text as a prefill."""
        if not self.sent:
            return self.request
        prefill = Message("assistant", self.sent)
        return replace(self.request, messages=(*self.request.messages, prefill))

    def skip_reason(self, route: Route) -> str | None:
        """Why a route cannot help this request, or None to try it."""
        deployment = route.deployment
        if route.model in self.rejected_models:
            return "content policy already rejected this model"
        if self.sent and not deployment.supports_prefill:
            return "cannot continue a partial answer (no prefill support)"
        window = deployment.context_window
        if self.context_bound and window is not None and window <= self.context_bound:
            return (
                f"context window {window} cannot hold a prompt that overflowed {self.context_bound}"
            )
        return None

    def skip(self, route: Route, reason: str) -> None:
        """A route passed over without a request; listed when the reason is news to the user."""
        if reason.startswith("context window"):
            self.attempts.append(
                Attempt(
                    route.model,
                    route.name,
                    route.provider.kind,
                    "skipped",
                    0.0,
                    detail=reason,
                    cost_usd=0.0,
                )
            )

    def record(
        self,
        route: Route,
        started: float,
        error: ServiceError | None,
        completion: Completion | None = None,
        *,
        text_received: bool = False,
        outcome: str | None = None,
    ) -> Attempt:
        """Add what one attempt came to; its error, if any, joins the request's errors."""
        attempt = self.attempt(
            route, started, error, completion, text_received=text_received, outcome=outcome
        )
        self.attempts.append(attempt)
        if error is not None:
            self.errors.append(error)
        return attempt

    def attempt(
        self,
        route: Route,
        started: float,
        error: ServiceError | None,
        completion: Completion | None = None,
        *,
        text_received: bool = False,
        outcome: str | None = None,
    ) -> Attempt:
        """What one attempt came to, not yet recorded (an answer still to be checked)."""
        return Attempt(
            model=route.model,
            deployment=route.name,
            provider=route.provider.kind,
            outcome=outcome or (error.error_type if error else OK),
            duration_s=round(time.monotonic() - started, 6),
            status_code=error.status_code if error else None,
            detail=error.message if error else None,
            retry_after_s=error.retry_after if error else None,
            cost_usd=_attempt_cost(route.deployment, error, completion, text_received),
        )

    def learn(self, error: ServiceError, route: Route, failover_on_content_policy: bool) -> None:
        """What a failure says about the routes after it."""
        if isinstance(error, ContextTooLong):
            self.context_bound = max(self.context_bound, route.deployment.context_window or 0)
        elif isinstance(error, ContentRejected):
            self.rejected_models.add(route.model)
            self.stop = self.stop or not failover_on_content_policy
        elif isinstance(error, UnsupportedParameter):
            pass  # this deployment cannot honour a parameter; another one may
        elif isinstance(error, BadRequest) and not self.sent:
            self.stop = True  # a malformed request fails the same way everywhere


def _attempt_cost(
    deployment: DeploymentConfig,
    error: ServiceError | None,
    completion: Completion | None,
    text_received: bool,
) -> float | None:
    """What an attempt was billed, when that is known; None when it cannot be."""
    if completion is not None:
        return cost_usd(completion.usage, deployment)
    if deployment.input_price_per_mtok == 0 and deployment.output_price_per_mtok == 0:
        return 0.0
    if (
        error is not None
        and not text_received
        and (error.status_code is not None or isinstance(error, Unavailable))
    ):
        return 0.0  # refused, unreachable or answered with an error: nothing was generated
    return None  # tokens may have been generated before it failed: the bill is unknown
