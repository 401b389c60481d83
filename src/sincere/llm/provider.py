"""The one interface every provider implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from sincere.answer import Completion
from sincere.config import DeploymentConfig
from sincere.health import HealthReport
from sincere.llm.request import AttemptLimits, ChatRequest


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of generated text, as it arrives."""

    text: str


StreamItem = Delta | Completion
"""A provider's stream yields deltas, then exactly one Completion; anything less is an error."""


class Provider(Protocol):
    """One deployment's way of producing completions. Failures raise ``ServiceError``."""

    kind: str
    deployment: DeploymentConfig

    @property
    def started(self) -> bool:
        """True once ``start`` has succeeded; requests do not wait for initialization then."""

    async def start(self) -> HealthReport:
        """Initialize (load weights, open clients) and say whether it can serve."""

    async def complete(self, request: ChatRequest, limits: AttemptLimits) -> Completion: ...

    def stream(self, request: ChatRequest, limits: AttemptLimits) -> AsyncIterator[StreamItem]: ...

    async def aclose(self) -> None: ...
