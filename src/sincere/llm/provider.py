"""The one interface every provider implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sincere.answer import Completion, Usage
from sincere.config import DeploymentConfig
from sincere.health import HealthReport
from sincere.llm.request import AttemptLimits, ChatRequest
from sincere.tool_calls import ToolCallFragment


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the answer, as it arrives; the cascade adds the model producing it.

    A piece is text, tool-call fragments (``text`` then empty), or both; ``logprobs`` is
    the provider's ``choice.logprobs`` for it, when the caller asked for them.
    """

    text: str
    model: str | None = None
    tool_calls: tuple[ToolCallFragment, ...] = ()
    logprobs: Mapping[str, Any] | None = None


StreamItem = Delta | Completion
"""A provider's stream yields deltas, then exactly one Completion; anything less is an error."""


PROBE_REQUEST = ChatRequest.of("probe", "Say OK.", max_tokens=1)
"""A shadow probe's request: one token (the deployment's own model name is sent)."""


async def collect(stream: AsyncIterator[StreamItem]) -> Completion:
    """Drain a provider's stream and return its Completion."""
    async for item in stream:
        if isinstance(item, Completion):
            return item
    raise RuntimeError("a provider stream ended without a Completion")  # a provider bug


class Provider(Protocol):
    """One deployment's way of producing completions. Failures raise ``ServiceError``.

    There is only a streaming call: the cascade streams from upstream even for
    non-streaming clients, so a silent route is caught by the first-token limit.
    """

    kind: str
    deployment: DeploymentConfig

    @property
    def started(self) -> bool:
        """True once ``start`` has succeeded; requests do not wait for initialization then."""

    async def start(self) -> HealthReport:
        """Initialize (load weights, open clients) and say whether it can serve."""

    def stream(self, request: ChatRequest, limits: AttemptLimits) -> AsyncIterator[StreamItem]: ...

    async def probe(self, limits: AttemptLimits) -> Usage | None:
        """Test the deployment with the smallest real request it serves, for an open
        circuit: returns the probe's usage (None when unknown); a failure raises its
        ``ServiceError``. Never a user's request: nobody waits on it."""

    async def aclose(self) -> None: ...
