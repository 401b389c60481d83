"""Every request's events end with exactly one request_completed or request_failed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sincere.config import Settings
from sincere.context import ContextFactory
from sincere.events import InProcessEventBus
from sincere.llm.cascade import ModelCascade
from sincere.llm.request import ChatRequest
from sincere.stop import StopReason
from tests.conftest import closing
from tests.faults import Fault, FaultServer
from tests.live import settings_for

WAIT_S = 20  # bound on every wait for something that should happen


def patient_settings(tmp_path: Path, upstream: str) -> Settings:
    """Limits far longer than any test: only the client (or the test) ends a request."""
    settings = settings_for(tmp_path, upstream)
    defaults = settings.defaults.model_copy(
        update={"first_token_timeout_s": 120, "stream_idle_timeout_s": 120, "timeout_s": 120}
    )
    return settings.model_copy(update={"defaults": defaults})


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (StopReason.CLIENT_GONE, "client_gone"),
        (StopReason.SHUTTING_DOWN, "shutting_down"),
        (None, "cancelled"),
    ],
)
async def test_a_cancelled_cascade_ends_its_events_once_with_the_cancellations_reason(
    tmp_path: Path,
    fault_server: FaultServer,
    bus: InProcessEventBus,
    contexts: ContextFactory,
    message: str | None,
    reason: str,
) -> None:
    settings = patient_settings(tmp_path, fault_server.base_url)
    cascade = closing(ModelCascade.from_settings(settings, env={}))
    fault_server.script(Fault.hang())
    ctx = contexts.create("alice")
    task = asyncio.create_task(cascade.complete(ctx, ChatRequest.of("gpt", "Hi")))
    await until(lambda: len(fault_server.completions) == 1)
    task.cancel(message)
    with pytest.raises(asyncio.CancelledError):
        await task
    events = [(str(e.type), e.data.get("reason")) for e in bus.replay("alice").events]
    assert events == [("request_started", None), ("request_failed", reason)]
    upstream = fault_server.completions[0].connection
    await until(lambda: upstream in fault_server.client_closed)
