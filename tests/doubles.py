"""Test providers, chosen by name through the composition root (never by swapping parts of
a built runtime): ``build_runtime(settings, provider_kinds={"defective": defective()})``
with a deployment whose ``provider = "defective"``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from sincere.answer import Usage
from sincere.config import DeploymentConfig
from sincere.health import HealthReport, HealthState
from sincere.llm.provider import Delta, Provider, StreamItem
from sincere.llm.request import AttemptLimits, ChatRequest
from sincere.runtime import ProviderFactory

DEFECT = "bug in /srv/sincere/provider.py line 7 with key sk-live-0123456789abcdef"


class DefectiveProvider:
    """A provider with a bug: what it raises is no ServiceError, and it names a secret."""

    kind = "defective"
    started = True

    def __init__(self, deployment: DeploymentConfig, *, after_text: bool = False) -> None:
        self.deployment = deployment
        self.after_text = after_text

    async def start(self) -> HealthReport:
        return HealthReport(HealthState.READY, "ready")

    async def stream(
        self, request: ChatRequest, limits: AttemptLimits
    ) -> AsyncIterator[StreamItem]:
        if self.after_text:
            yield Delta("Half an answer")
        raise RuntimeError(DEFECT)

    async def probe(self, limits: AttemptLimits) -> Usage | None:
        raise RuntimeError(DEFECT)

    async def aclose(self) -> None:
        return None


def defective(*, after_text: bool = False) -> ProviderFactory:
    def make(deployment: DeploymentConfig, _env: Mapping[str, str]) -> Provider:
        return DefectiveProvider(deployment, after_text=after_text)

    return make
