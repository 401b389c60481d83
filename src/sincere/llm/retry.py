"""When to try the same deployment again, and after how long."""

from __future__ import annotations

import random
from dataclasses import dataclass

from sincere.errors import (
    ModelBusy,
    RateLimited,
    ServiceError,
    ServiceUnavailable,
    UpstreamError,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 2
    base_s: float = 0.5
    max_s: float = 8.0


def is_retryable(error: ServiceError, text_received: bool) -> bool:
    """429, 5xx, and connections that broke or were refused before any byte arrived.

    Timeouts are not retried on the same deployment: a silent route fails over instead;
    nor is a busy local model: the request already waited as long as it may; nor an answer
    the response guard blocked: the same prompt can draw the same phrase again.
    """
    if text_received or isinstance(error, ModelBusy):
        return False
    return isinstance(error, RateLimited | ServiceUnavailable | UpstreamError) and (
        error.status_code is None or error.status_code in (429, 500, 502, 503, 504, 529)
    )


def backoff_s(
    policy: RetryPolicy, retry: int, retry_after: float | None, budget_s: float
) -> float | None:
    """Seconds to wait before retry number ``retry`` (1-based), or None to fail over now.

    A provider's ``Retry-After`` is honoured when it fits the remaining budget; otherwise
    capped exponential backoff with equal jitter, so two retries are never back to back.
    """
    if retry > policy.max_retries:
        return None
    if retry_after is not None:
        return retry_after if retry_after <= budget_s else None
    ceiling = min(policy.max_s, policy.base_s * 2 ** (retry - 1))
    wait = ceiling / 2 + random.uniform(0, ceiling / 2)  # jitter spreads synchronized clients
    return wait if wait <= budget_s else None
