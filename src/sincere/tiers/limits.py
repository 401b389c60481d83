"""The most output tokens one request of a tier may ask for.

A tier's rate and concurrency limits are a port (``sincere.ports.Limiter``): in one
process ``sincere.backends.memory.limits``, in a fleet ``sincere.backends.redis.limits``;
both refuse with the errors ``backends.memory.limits`` makes, so a user reads the same
words from either."""

from __future__ import annotations

from dataclasses import replace

from sincere.config import TierLimits
from sincere.errors import ErrorContext, MaxTokensExceeded
from sincere.llm.request import ChatRequest


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
