"""Per-user request limits by tier: a sliding one-minute window, a concurrency cap, and the
most output tokens one request may ask for."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace

from sincere.config import TierLimits
from sincere.errors import ErrorContext, MaxTokensExceeded, RateLimited, RetryAfterSource
from sincere.llm.request import ChatRequest

WINDOW_S = 60.0


class TierLimiter:
    """Admits a user's request or refuses it with the real wait, when that wait is known."""

    def __init__(
        self, limits: Mapping[str, TierLimits], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._recent: dict[str, deque[float]] = {}
        self._active: dict[str, int] = {}

    def admit(self, user_id: str, tier: str, context: ErrorContext) -> Admission:
        """A slot for one request, or RateLimited; the caller releases the slot when done."""
        limits = self._limits[tier]
        now = self._clock()
        recent = self._recent.setdefault(user_id, deque())
        while recent and recent[0] <= now - WINDOW_S:
            recent.popleft()
        if len(recent) >= limits.requests_per_minute:
            wait = recent[0] + WINDOW_S - now  # when the oldest request leaves the window
            raise RateLimited(
                f"sincere's {tier}-tier limit of {limits.requests_per_minute} requests per "
                "minute is reached",
                context=context,
                retry_after=wait,
                retry_after_source=RetryAfterSource.TIER_LIMIT,
                suggestions=[f"Retry after {wait:.0f} s, when the window has room again."],
            )
        active = self._active.get(user_id, 0)
        if active >= limits.concurrent_requests:
            # How long the running requests will take is unknown: no Retry-After is given.
            raise RateLimited(
                f"sincere's {tier}-tier limit of {limits.concurrent_requests} concurrent "
                "requests is reached",
                context=context,
                suggestions=["Retry when one of your running requests has finished."],
            )
        recent.append(now)
        self._active[user_id] = active + 1
        return Admission(self, user_id)

    def _release(self, user_id: str) -> None:
        remaining = self._active[user_id] - 1
        if remaining:
            self._active[user_id] = remaining
        else:
            del self._active[user_id]


def cap_output(
    request: ChatRequest, tier: str, limits: TierLimits
) -> tuple[ChatRequest, int | None]:
    """The request within its tier's ``max_output_tokens``, and the cap when it was applied.

    Asking for more is a 400 naming max_tokens: a silent clamp would hand back a shorter
    answer than asked for. A request that names no max_tokens gets the cap.
    """
    cap = limits.max_output_tokens
    if cap is None:
        return request, None
    asked = request.token_limit  # max_tokens or max_completion_tokens, the smaller
    if asked is None:
        return replace(request, max_tokens=cap), cap
    if asked > cap:
        name = "max_tokens" if request.max_tokens == asked else "max_completion_tokens"
        raise MaxTokensExceeded(
            f"{name} {asked} is more than sincere's {tier} tier allows "
            f"({cap} output tokens per request)",
            context=ErrorContext(service="limits", tier=tier),
            suggestions=[f"Ask for at most {cap} tokens, or use a key of a higher tier."],
            param=name,
        )
    return request, None


class Admission:
    """One admitted request's concurrency slot. ``release`` is idempotent, so every path
    that can end a request (a streamed body, a response never sent) may call it."""

    __slots__ = ("_limiter", "_user_id")

    def __init__(self, limiter: TierLimiter, user_id: str) -> None:
        self._limiter: TierLimiter | None = limiter
        self._user_id = user_id

    def release(self) -> None:
        if self._limiter is not None:
            self._limiter._release(self._user_id)
            self._limiter = None
