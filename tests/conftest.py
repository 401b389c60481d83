"""Shared fixtures: real event bus, real contexts, the embedded model loaded once per run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sincere.backends.memory.events import InProcessEventBus
from sincere.config import BUILTIN_DEPLOYMENT, Settings, load_settings
from sincere.context import ContextFactory
from sincere.llm.embedded import EmbeddedProvider
from sincere.runtime import build_runtime
from tests.faults import FaultServer
from tests.live import LiveGateway, LiveServer, run, settings_for

T = TypeVar("T")


_open: list[Any] = []


def closing(resource: T) -> T:
    """Close ``resource`` (its ``aclose()``) when the current test ends."""
    _open.append(resource)
    return resource


@pytest.fixture(autouse=True)
async def _close_resources() -> AsyncIterator[None]:
    yield
    while _open:
        await _open.pop().aclose()


@pytest.fixture
def bus() -> InProcessEventBus:
    return InProcessEventBus()


@pytest.fixture
def contexts(bus: InProcessEventBus) -> ContextFactory:
    return ContextFactory(bus, default_timeout_s=60)


@pytest.fixture
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(None, env={"SINCERE_DATA_DIR": str(tmp_path_factory.mktemp("data"))})


@pytest.fixture
async def embedded() -> AsyncIterator[EmbeddedProvider]:
    provider = EmbeddedProvider(BUILTIN_DEPLOYMENT)
    await provider.start()
    return provider


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture
def live(tmp_path: Path, fault_server: FaultServer) -> Iterator[LiveGateway]:
    """A running gateway whose model 'gpt' is the fault server; keys for three users."""
    gateway = build_runtime(settings_for(tmp_path, fault_server.base_url), env={})
    with LiveServer(gateway) as running:
        for name, tier, role in (
            ("admin", "enterprise", "admin"),
            ("alice", "free", "user"),
            ("bob", "enterprise", "user"),
        ):
            running.keys[name], _ = run(gateway.keys.create(name, tier, role))
        yield running
