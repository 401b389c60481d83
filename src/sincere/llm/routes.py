"""Where a request can go: a model's deployments, then its fallbacks', in cascade order."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sincere.config import DeploymentConfig, Settings
from sincere.errors import ModelNotFound
from sincere.llm.provider import Provider


@dataclass(frozen=True, slots=True)
class Route:
    """One place a request can go: a model's deployment, in cascade order."""

    model: str
    deployment: DeploymentConfig
    provider: Provider

    @property
    def name(self) -> str:
        """The deployment's name: what breakers, events and attempts call this route."""
        return self.deployment.name


def resolve_routes(
    settings: Settings, providers: Mapping[str, Provider], model: str
) -> list[Route]:
    """The model's deployments, then each fallback model's, transitively, each once."""
    if settings.model(model) is None:
        names = ", ".join(m.name for m in settings.models)
        raise ModelNotFound(
            f"model {model!r} is not configured here", suggestions=[f"Use one of: {names}."]
        )
    routes: list[Route] = []
    seen_models: set[str] = set()
    queue = [model]
    while queue:
        name = queue.pop(0)
        if name in seen_models:
            continue
        seen_models.add(name)
        config = settings.model(name)
        assert config is not None  # settings validated every fallback name
        for d in config.deployments:
            if not any(r.deployment.name == d for r in routes):
                routes.append(Route(name, settings.deployment(d), providers[d]))
        queue.extend(config.fallbacks)
    return routes
