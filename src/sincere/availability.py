"""What recorded attempts say about a deployment's availability: which outcomes are its
failures, the counts the status page shows, and the partial-outage rule.

An attempt is one request sent to one deployment (``telemetry_attempts``, one row each).
Outcomes fall in three groups, decided here once for the SQL counts and the rule alike:

* not sent: the deployment was never asked (``NOT_SENT``: its circuit was open, sincere's
  own queue or capacity refused, the route was skipped): not counted at all;
* failed by the deployment's fault (``DEPLOYMENT_FAILURES``): it was unreachable, erred,
  timed out, refused (429), rejected the gateway's key, or did not know its model; the
  same failures that count against its circuit breaker;
* every other outcome counts as an attempt that did not fail by the deployment's fault:
  ``ok``; an answer the guard withheld (``blocked``: a prompt can make a model say the
  phrase); a caller that went away (``cancelled``); the request's own faults (a bad request,
  a context too long, a content-policy rejection); the quality gate's verdicts and
  sincere's internal errors (neither counts against a breaker either).

An outcome this module does not know is counted as an attempt, never as a failure: a
failure is claimed only where the vocabulary says so (``tests/test_status_history.py``
checks that every error type of ``sincere.errors`` is placed in one group).
"""

from __future__ import annotations

from dataclasses import dataclass

# Failures of the deployment itself (error types of sincere.errors).
DEPLOYMENT_FAILURES = frozenset(
    {
        "service_unavailable",  # unreachable, refused the connection, 503
        "upstream_error",  # 5xx, an unusable body, a stream cut or malformed
        "timeout",  # connect, first token, stream idle
        "rate_limited",  # the provider's 429 (sincere's own limits come before any attempt)
        "provider_auth_failed",  # the provider rejected the gateway's key
        "model_not_found",  # the provider does not know the configured model
    }
)
# Attempts the deployment never received.
NOT_SENT = frozenset({"circuit_open", "skipped", "at_capacity", "queue_timeout", "model_busy"})
# Attempts it received that did not fail by its fault (counted, never as failures).
NOT_ITS_FAILURE = frozenset(
    {
        "ok",
        "blocked",  # the response guard withheld its answer
        "mock_response_blocked",
        "cancelled",  # the caller went away
        "bad_request",  # the request's own faults
        "unsupported_parameter",
        "context_length_exceeded",
        "max_tokens_exceeded",
        "content_policy_violation",
        "payload_too_large",
        "not_found",  # the HTTP request's own (no route, a method it lacks, a slow client)
        "method_not_allowed",
        "request_timeout",
        "quality_rejected",  # the quality gate's verdicts (not a breaker's failure either)
        "invented_numbers",
        "internal_error",  # a defect of sincere's
        "invalid_api_key",  # the caller's key (never reaches a deployment)
        "permission_denied",
        "data_unavailable",
        "service_error",
    }
)


@dataclass(frozen=True, slots=True)
class AttemptCounts:
    """The attempts sent to one deployment in a period (a UTC day, or a recent window)."""

    deployment: str
    day: str | None  # YYYY-MM-DD (UTC) for a day's counts; None for a window's
    attempts: int  # sent to the deployment (NOT_SENT excluded)
    failed: int  # of which failed by its fault (DEPLOYMENT_FAILURES)
    answered: int  # of which came back ok

    @property
    def failure_share(self) -> float | None:
        return self.failed / self.attempts if self.attempts else None


@dataclass(frozen=True, slots=True)
class PartialOutage:
    """Why a deployment with a closed circuit is in partial outage: measured, never guessed."""

    window_s: float
    attempts: int
    failed: int

    def describe(self) -> str:
        return (
            f"{self.failed} of {self.attempts} requests failed in the last "
            f"{_duration(self.window_s)}"
        )


def partial_outage(
    counts: AttemptCounts | None, window_s: float, min_share: float, min_attempts: int
) -> PartialOutage | None:
    """The partial-outage verdict on a deployment's attempts of the last ``window_s``:
    at least ``min_attempts`` attempts of which at least ``min_share`` failed by its fault.
    Below ``min_attempts`` the rule does not apply (None): too few to say."""
    if counts is None or counts.attempts < min_attempts:
        return None
    if counts.failed < min_share * counts.attempts:
        return None
    return PartialOutage(window_s, counts.attempts, counts.failed)


def _duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
