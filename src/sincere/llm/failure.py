"""When every route failed: the one honest error that sums up all attempts."""

from __future__ import annotations

import math
from collections.abc import Sequence

from sincere.attempts import Attempt
from sincere.errors import (
    AtCapacity,
    BadRequest,
    ContentRejected,
    ContextTooLong,
    ErrorContext,
    GuardViolation,
    ModelBusy,
    QueueTimeout,
    RateLimited,
    RetryAfterSource,
    ServiceError,
    ServiceTimeout,
    ServiceUnavailable,
    UnsupportedParameter,
)


def final_error(
    model: str,
    errors: Sequence[ServiceError],
    attempts: Sequence[Attempt],
    context: ErrorContext,
    largest_context_window: int | None,
) -> ServiceError:
    """The most actionable error: what the caller can fix, else when to retry, else 503/504."""
    context = ErrorContext(context.user_id, context.request_id, "model_cascade", context.tier)
    tried = f"{len(attempts)} attempt{'s' if len(attempts) != 1 else ''}"
    # A route that could not honour a parameter is the news only when every route said so:
    # if another one failed for other reasons, that one could have answered.
    errors = [e for e in errors if not isinstance(e, UnsupportedParameter)] or list(errors)
    for kind in (ContentRejected, BadRequest):  # the request itself must change
        caller = next((e for e in errors if isinstance(e, kind)), None)
        if caller is not None:
            suggestions = _caller_suggestions(caller, largest_context_window)
            return type(caller)(
                caller.message,
                context=context,
                attempts=attempts,
                suggestions=suggestions,
                status_code=caller.status_code,
                param=caller.param,
            )
    for verdict in (ModelBusy, AtCapacity, QueueTimeout):
        if errors and all(isinstance(e, verdict) for e in errors):
            # sincere's own verdict: its message says who decided and from what the wait
            # comes.
            busy = min(errors, key=lambda e: math.inf if e.retry_after is None else e.retry_after)
            own = verdict(
                busy.message,
                context=context,
                attempts=attempts,
                retry_after=busy.retry_after,
                retry_after_source=busy.retry_after_source,
                suggestions=busy.suggestions,
            )
            own.members.update(busy.members)
            return own
    withheld = sum(isinstance(e, GuardViolation) for e in errors)
    if errors and withheld == len(errors):
        # Never quoted: each attempt's detail names the phrase by its number in the list.
        return GuardViolation(
            f"no route for {model!r} could answer: the response guard withheld "
            f"{_answers(withheld)} ({tried})",
            context=context,
            attempts=attempts,
            suggestions=[
                "Retry later or ask another model: the deployments answered with text that "
                "sincere does not pass on (each attempt below says why).",
            ],
        )
    soonest = min(
        (e for e in errors if e.retry_after is not None),
        key=lambda e: e.retry_after or 0.0,
        default=None,
    )
    retry_after = soonest.retry_after if soonest is not None else None
    source = soonest.retry_after_source if soonest is not None else None
    if errors and all(isinstance(e, RateLimited) for e in errors):
        cls: type[ServiceError] = RateLimited
        message = f"every route for {model!r} is rate-limited ({tried})"
    elif errors and all(isinstance(e, ServiceTimeout) for e in errors):
        cls = ServiceTimeout
        message = f"no route for {model!r} answered in time ({tried})"
    elif not errors:
        cls = ServiceTimeout
        message = f"the request's deadline passed before {model!r} could be tried"
    else:
        cls = ServiceUnavailable
        message = f"no route for {model!r} could answer ({tried})"
    if withheld:
        message += f"; the response guard withheld {_answers(withheld)}"
    suggestions = []
    if retry_after is not None:
        when = _WHEN.get(source, "") if source is not None else ""
        suggestions.append(f"Retry after {retry_after:.0f} s{when}.")
    if cls.should_retry:
        suggestions.append("Each attempt below says which deployment failed and how.")
    return cls(
        message,
        context=context,
        attempts=attempts,
        retry_after=retry_after,
        retry_after_source=source,
        suggestions=suggestions,
    )


def _answers(count: int) -> str:
    return "an answer" if count == 1 else f"{count} answers"


# Who set the wait decides what may be said about it.
_WHEN = {
    RetryAfterSource.PROVIDER: ", when the provider said to",
    RetryAfterSource.CIRCUIT_BREAKER: (
        ", when sincere lets requests through to the deployment again (each attempt below "
        "says why it stopped using it)"
    ),
    RetryAfterSource.MEASURED_SERVICE_TIMES: (
        ", sincere's estimate from the measured generation times of the busy local model"
    ),
}


def _caller_suggestions(error: ServiceError, largest_context_window: int | None) -> list[str]:
    if isinstance(error, ContextTooLong):
        hint = "Shorten the messages or ask for a model with a larger context window"
        if largest_context_window:
            hint += f" (the largest configured here is {largest_context_window} tokens)"
        return [hint + "."]
    if isinstance(error, ContentRejected):
        return ["The provider's content policy rejected this request; rephrase it."]
    if isinstance(error, UnsupportedParameter):
        return [f"Leave out '{error.param}', or ask for a model whose deployments support it."]
    return ["Check the request against the provider's reason above."]
