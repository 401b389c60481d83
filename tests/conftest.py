"""Shared fixtures: real event bus, real contexts, the embedded model loaded once per run."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import create_engine, text

from sincere.backends.memory.events import InProcessEventBus
from sincere.config import BUILTIN_DEPLOYMENT, Settings, load_settings
from sincere.context import ContextFactory
from sincere.llm.embedded import EmbeddedProvider
from sincere.runtime import build_runtime
from tests.faults import FaultServer
from tests.live import LiveGateway, LiveServer, run, settings_for

T = TypeVar("T")
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


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


@pytest.fixture
def fresh_schema() -> Iterator[str]:
    """A PostgreSQL URL (the machine's 127.0.0.1:5432, database test) whose tables live in a
    schema of their own, dropped afterwards."""
    schema = f"sincere_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
