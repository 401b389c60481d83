"""Every failure sincere reports, in one hierarchy, and its two renderings.

A ``ServiceError`` is the only way a failure reaches a user: it says what was tried
(``attempts``), whether trying again can help (``should_retry``), when (``retry_after``,
only when known) and what the user can do (``suggestions``). Its renderings, RFC 9457
problem details and the OpenAI error object, never contain a secret or a stack trace.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, ClassVar

from sincere.attempts import Attempt
from sincere.redact import redact

PROBLEM_TYPE_BASE = "https://sincere.dev/problems/"


@dataclass(frozen=True, slots=True)
class ErrorContext:
    """Who was affected and where: copied from the request context when the error is raised."""

    user_id: str | None = None
    request_id: str | None = None
    service: str | None = None
    tier: str | None = None


class RetryAfterSource(StrEnum):
    """Who set a ``retry_after``: what a message may claim about the wait depends on it."""

    PROVIDER = "provider"  # the provider's Retry-After header
    CIRCUIT_BREAKER = "circuit_breaker"  # sincere's breaker: when it lets requests through again
    TIER_LIMIT = "tier_limit"  # sincere's per-tier window
    # sincere's estimate from the service times measured on a deployment (a busy local model,
    # a queue): the work ahead of the request times how long such work took
    MEASURED_SERVICE_TIMES = "measured_service_times"


class ServiceError(Exception):
    """Base of every failure sincere reports to a user."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "service_error"
    title: ClassVar[str] = "Service error"
    should_retry: ClassVar[bool] = False
    openai_type: ClassVar[str] = "server_error"
    param: str | None = None  # the request member at fault; a class default or per error
    retry_after_by: ClassVar[RetryAfterSource | None] = None  # who sets this kind's wait

    def __init__(
        self,
        message: str,
        *,
        context: ErrorContext | None = None,
        attempts: Sequence[Attempt] = (),
        retry_after: float | None = None,
        retry_after_source: RetryAfterSource | None = None,
        suggestions: Iterable[str] = (),
        status_code: int | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.context = context or ErrorContext()
        self.attempts: tuple[Attempt, ...] = tuple(attempts)
        self.retry_after = retry_after
        # Who decided that wait; carried explicitly, never read back from a message.
        source = retry_after_source or self.retry_after_by
        self.retry_after_source = None if retry_after is None else source
        self.suggestions: tuple[str, ...] = tuple(suggestions)
        # The upstream HTTP status that caused this error, when there was one.
        self.status_code = status_code
        if param is not None:
            self.param = param
        # Further members of this occurrence for both renderings (a queue position, a
        # ticket): set by whoever learns them on the way out, never a secret.
        self.members: dict[str, Any] = {}

    def __str__(self) -> str:
        return self.message

    def with_context(
        self, context: ErrorContext, attempts: Sequence[Attempt] | None = None
    ) -> ServiceError:
        """The same error, bound to a request and (optionally) its full list of attempts."""
        clone = type(self)(
            self.message,
            context=replace(context, service=self.context.service or context.service),
            attempts=self.attempts if attempts is None else attempts,
            retry_after=self.retry_after,
            retry_after_source=self.retry_after_source,
            suggestions=self.suggestions,
            status_code=self.status_code,
            param=self.param,
        )
        clone.members = dict(self.members)
        clone.__cause__ = self.__cause__
        return clone

    @property
    def code(self) -> str:
        return self.error_type

    def retry_after_header(self) -> str | None:
        """The ``Retry-After`` value in whole seconds, or ``None`` when the wait is unknown."""
        if self.retry_after is None:
            return None
        return str(max(0, math.ceil(self.retry_after)))

    def to_problem(self) -> dict[str, Any]:
        """RFC 9457 problem details (``application/problem+json``)."""
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.error_type.replace("_", "-"),
            "title": self.title,
            "status": self.status,
            "detail": redact(self.message),
            "error_type": self.error_type,
            "retryable": self.should_retry,
        }
        ctx = self.context
        if ctx.request_id:
            body["instance"] = f"urn:sincere:request:{ctx.request_id}"
            body["request_id"] = ctx.request_id
        if ctx.service:
            body["service"] = ctx.service
        if ctx.tier:
            body["tier"] = ctx.tier
        body.update(self._shared_members())
        return body

    def to_openai_error(self) -> dict[str, Any]:
        """The OpenAI error object, extended with sincere's members."""
        error: dict[str, Any] = {
            "message": redact(self.message),
            "type": self.openai_type,
            "param": self.param,
            "code": self.code,
        }
        if self.context.request_id:
            error["request_id"] = self.context.request_id
        error.update(self._shared_members())
        return {"error": error}

    def _shared_members(self) -> dict[str, Any]:
        members: dict[str, Any] = {}
        if self.retry_after is not None:
            members["retry_after"] = self.retry_after
        if self.attempts:
            members["attempts"] = [_redacted(a.to_dict()) for a in self.attempts]
        if self.suggestions:
            members["suggestions"] = [redact(s) for s in self.suggestions]
        for name, value in self.members.items():
            members[name] = redact(value) if isinstance(value, str) else value
        return members


def _redacted(item: dict[str, Any]) -> dict[str, Any]:
    return {k: redact(v) if isinstance(v, str) else v for k, v in item.items()}


# Availability: the service could not be reached or could not serve.


class ServiceUnavailable(ServiceError):
    """A model, deployment or service is down, overloaded or refusing connections."""

    status = 503
    error_type = "service_unavailable"
    title = "Service unavailable"
    should_retry = True


class ModelBusy(ServiceUnavailable):
    """A local model is busy with other requests for longer than this one may wait.

    sincere's own decision, not a failure of the model: it never counts against the
    deployment's breaker, and ``retry_after`` is only set from measured generation times.
    """

    error_type = "model_busy"
    title = "Model busy"
    retry_after_by = RetryAfterSource.MEASURED_SERVICE_TIMES


class QueueTimeout(ServiceUnavailable):
    """A request waited in a deployment's admission queue for as long as its tier allows
    (``max_queue_wait_s``) or its deadline left. Its members say the place it had and how
    long it waited; ``retry_after`` is set only from measured service times."""

    error_type = "queue_timeout"
    title = "Queue wait exceeded"
    retry_after_by = RetryAfterSource.MEASURED_SERVICE_TIMES


class UpstreamError(ServiceError):
    """A provider answered with something that is not a usable response (5xx, bad body)."""

    status = 502
    error_type = "upstream_error"
    title = "Upstream error"
    should_retry = True


class ServiceTimeout(ServiceError):
    """A wait ran out: connect, first token, stream idle or the request's deadline."""

    status = 504
    error_type = "timeout"
    title = "Timed out"
    should_retry = True


class RateLimited(ServiceError):
    """A provider or sincere's own limits refused the request for now."""

    status = 429
    error_type = "rate_limited"
    title = "Rate limited"
    should_retry = True
    openai_type = "rate_limit_error"

    @property
    def code(self) -> str:
        return "rate_limit_exceeded"


class AtCapacity(RateLimited):
    """A deployment serves as many requests as its ``max_concurrency`` and queueing is
    turned off (the ``queueing`` flag): sincere's own verdict, never counted against the
    deployment's breaker; ``retry_after`` is set only from measured service times."""

    error_type = "at_capacity"
    title = "At capacity"
    retry_after_by = RetryAfterSource.MEASURED_SERVICE_TIMES


class ProviderAuthFailed(ServiceError):
    """A provider rejected sincere's credentials for a deployment (401/403 upstream)."""

    status = 502
    error_type = "provider_auth_failed"
    title = "Provider rejected the gateway's credentials"


class QualityRejected(ServiceError):
    """A completion failed the quality gate: empty, whitespace only, or a degenerate loop."""

    status = 502
    error_type = "quality_rejected"
    title = "Completion rejected by the quality gate"


class LoopRejected(QualityRejected):
    """The quality gate rejected a completion that ended in a repeated phrase."""


class NumbersRejected(QualityRejected):
    """A narrative stated numbers that none of its findings holds (the analyst's number
    rule): invented data. A failed attempt like the quality gate's; the next route is tried."""

    error_type = "invented_numbers"
    title = "Narrative rejected: numbers not in the findings"


# The request itself cannot succeed as it is.


class BadRequest(ServiceError):
    """The request is malformed or asks for something impossible."""

    status = 400
    error_type = "bad_request"
    title = "Bad request"
    openai_type = "invalid_request_error"


class UnsupportedParameter(BadRequest):
    """A deployment cannot honour a parameter of the request (``param``); another route may.

    Not a failure of the deployment: it does not count against its circuit breaker, and
    the cascade moves on. Only when every route refused does the caller get it (400).
    """

    error_type = "unsupported_parameter"
    title = "Unsupported parameter"


class ContextTooLong(BadRequest):
    """The prompt does not fit the context window of any deployment that was tried."""

    error_type = "context_length_exceeded"
    title = "Context too long"
    param = "messages"


class MaxTokensExceeded(BadRequest):
    """The request asks for more output tokens than its tier allows."""

    error_type = "max_tokens_exceeded"
    title = "max_tokens above the tier's limit"
    param = "max_tokens"


class ContentRejected(BadRequest):
    """A provider's content policy rejected the request; its reason is in the message."""

    error_type = "content_policy_violation"
    title = "Content rejected"


class ModelNotFound(ServiceError):
    """The requested model is not configured here, or a provider does not know it."""

    status = 404
    error_type = "model_not_found"
    title = "Model not found"
    openai_type = "invalid_request_error"
    param = "model"


class PayloadTooLarge(BadRequest):
    """The request body is larger than the configured limit."""

    status = 413
    error_type = "payload_too_large"
    title = "Payload too large"
    param = None


# Callers: who may do what.


class AuthenticationFailed(ServiceError):
    """The request carried no API key, or one that is unknown or revoked."""

    status = 401
    error_type = "invalid_api_key"
    title = "Authentication failed"
    openai_type = "authentication_error"


class PermissionDenied(ServiceError):
    """The key is valid but its role may not do this."""

    status = 403
    error_type = "permission_denied"
    title = "Permission denied"
    openai_type = "permission_error"


# The gateway's own guarantees.


class GuardViolation(ServiceError):
    """The response guard withheld a deployment's answer that failed its honesty checks
    (a known fallback phrase, or provenance that does not describe it).

    A failed attempt: the cascade moves on to the next route. It never counts against the
    deployment's breaker (a prompt can make a model say the phrase), and a later request
    may well be answered: 502, retryable.
    """

    status = 502
    error_type = "mock_response_blocked"
    title = "Blocked by the response guard"
    should_retry = True


class InternalError(ServiceError):
    """A defect in sincere itself: the client learns that it happened and the request id;
    the exception goes to the operator's log only."""

    error_type = "internal_error"
    title = "Internal error"

    @classmethod
    def of(cls, context: ErrorContext | None = None) -> InternalError:
        return cls("internal error; the operator's log has the details", context=context)


# Data.


class DataUnavailable(ServiceError):
    """No data source could provide the requested data; nothing was generated instead."""

    status = 503
    error_type = "data_unavailable"
    title = "Data unavailable"
    should_retry = True


class ConfigError(Exception):
    """The configuration is invalid; raised at start, never during a request."""
