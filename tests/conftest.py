"""Shared fixtures: real event bus, real contexts, the embedded model loaded once per run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from sincere.config import BUILTIN_DEPLOYMENT, Settings, load_settings
from sincere.context import ContextFactory
from sincere.events import InProcessEventBus
from sincere.llm.embedded import EmbeddedProvider
from tests.faults import FaultServer


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
