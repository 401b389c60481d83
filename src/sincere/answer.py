"""Answers and where they came from.

An ``Answer`` has no text of its own: its text is the ``Completion`` a provider produced,
and it cannot be built without a ``Provenance`` that names that same deployment and usage.
So no code path can hand a user words that no model generated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sincere.attempts import Attempt
from sincere.tool_calls import ToolCall


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as reported by the provider (or counted by the embedded runtime)."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    """What one deployment produced: made only by providers.

    ``text`` may be empty when the model answered with ``tool_calls`` only; ``logprobs`` is
    the provider's own ``choice.logprobs`` (its ``content`` lists joined over a stream),
    present only when the caller asked for it and the provider sent it.
    """

    text: str
    finish_reason: str
    deployment: str
    provider: str
    upstream_model: str
    usage: Usage | None
    latency_s: float
    time_to_first_token_s: float | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.deployment or not self.provider:
            raise ValueError("a completion must name the deployment and provider that made it")


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where an answer came from and what it took; every number is measured or computed."""

    model: str
    requested_model: str
    deployment: str
    provider: str
    upstream_model: str
    usage: Usage | None
    cost_usd: float | None
    latency_s: float
    time_to_first_token_s: float | None
    finish_reason: str
    attempts: tuple[Attempt, ...]
    selection_reasoning: str
    cache_hit: bool = False
    # After a stream broke mid-answer: the deployment whose text was kept as a prefill.
    continued_from: str | None = None
    prefill_chars: int = 0
    # The request named no max_tokens: its tier's max_output_tokens was applied.
    tier_max_tokens: int | None = None
    # Measured time spent waiting in deployments' admission queues (0: none was full).
    queue_wait_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.attempts or not self.attempts[-1].succeeded:
            raise ValueError("provenance needs the attempt that produced the answer, last")
        if self.attempts[-1].deployment != self.deployment:
            raise ValueError("the successful attempt must be on the answering deployment")

    @property
    def truncated(self) -> bool:
        """The answer stopped at the requested token limit, not at a natural end."""
        return self.finish_reason == "length"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "requested_model": self.requested_model,
            "deployment": self.deployment,
            "provider": self.provider,
            "upstream_model": self.upstream_model,
            "finish_reason": self.finish_reason,
            "truncated": self.truncated,
            "latency_s": round(self.latency_s, 6),
            "queue_wait_ms": round(self.queue_wait_s * 1000, 1),
            "cache_hit": self.cache_hit,
            "selection_reasoning": self.selection_reasoning,
            "attempts": [a.to_dict() for a in self.attempts],
        }
        if self.usage is not None:
            out["usage"] = {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
                "total_tokens": self.usage.total_tokens,
            }
        if self.cost_usd is not None:
            out["cost_usd"] = self.cost_usd
        if self.time_to_first_token_s is not None:
            out["time_to_first_token_s"] = round(self.time_to_first_token_s, 6)
        if self.tier_max_tokens is not None:
            out["tier_max_tokens"] = self.tier_max_tokens
        if self.continued_from is not None:
            out["continued_from"] = {
                "deployment": self.continued_from,
                "prefill_chars": self.prefill_chars,
            }
        return out


@dataclass(frozen=True, slots=True)
class Answer:
    """A model's answer with its provenance. Its text is the completion's, never supplied."""

    completion: Completion
    provenance: Provenance

    def __post_init__(self) -> None:
        if not isinstance(self.completion, Completion):
            raise TypeError("an Answer needs the Completion a provider returned")
        if not isinstance(self.provenance, Provenance):
            raise TypeError("an Answer needs its Provenance")
        c, p = self.completion, self.provenance
        if (c.deployment, c.provider, c.usage) != (p.deployment, p.provider, p.usage):
            raise ValueError("provenance does not describe the completion it is attached to")

    @property
    def text(self) -> str:
        return self.completion.text

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return self.completion.tool_calls

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "provenance": self.provenance.to_dict()}
        if self.tool_calls:
            out["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        return out
