"""Issue 9 item 17: a loop of the embedded model gets one more attempt with stronger settings.

The first attempt samples with llama.cpp's defaults (no repetition control, as sincere did
before) on a prompt and seed where SmolLM2 loops; the gate, as strict as ever, rejects it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sincere.backends.memory.breakers import InProcessBreakers
from sincere.backends.memory.events import InProcessEventBus
from sincere.config import BUILTIN_DEPLOYMENT, Settings, load_settings
from sincere.context import ContextFactory
from sincere.errors import ServiceError
from sincere.events import EventType
from sincere.health import ServiceRegistry
from sincere.llm.breaker import BreakerPolicy
from sincere.llm.cascade import ModelCascade
from sincere.llm.embedded import LLAMA_DEFAULTS, EmbeddedProvider
from sincere.llm.provider import Delta
from sincere.llm.quality import rejection
from sincere.llm.request import ChatRequest

# With llama-cpp-python's defaults and this seed, SmolLM2 ends this answer in a loop.
LOOPING = ChatRequest.of(
    "smollm2", "What should I pack for a weekend camping trip?", max_tokens=256, extra={"seed": 1}
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Generous waits: these tests are about loops, not about a slow machine."""
    path = tmp_path / "sincere.toml"
    path.write_text(
        "[defaults]\ntimeout_s = 900\nfirst_token_timeout_s = 300\nstream_idle_timeout_s = 300\n"
    )
    return load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path)})


@pytest.fixture
def contexts(bus: InProcessEventBus) -> ContextFactory:
    return ContextFactory(bus, default_timeout_s=900)


async def _cascade(settings: Settings) -> ModelCascade:
    provider = EmbeddedProvider(BUILTIN_DEPLOYMENT, sampling=LLAMA_DEFAULTS)
    await provider.start()
    breakers = InProcessBreakers([BUILTIN_DEPLOYMENT.name], BreakerPolicy.of(settings.defaults))
    return ModelCascade(settings, {BUILTIN_DEPLOYMENT.name: provider}, ServiceRegistry(), breakers)


async def test_a_loop_gets_one_more_attempt_with_stronger_settings_and_provenance_says_so(
    settings: Settings, contexts: ContextFactory, bus: InProcessEventBus
) -> None:
    cascade = await _cascade(settings)
    answer = await cascade.complete(contexts.create("alice", "free"), LOOPING)
    assert rejection(answer.text) is None
    p = answer.provenance
    assert [(a.deployment, a.outcome) for a in p.attempts] == [
        ("embedded", "quality_rejected"),
        ("embedded", "ok"),
    ]
    assert p.attempts[0].detail is not None
    assert "degenerated into a loop" in p.attempts[0].detail
    assert p.selection_reasoning == (
        "Answered by 'embedded' (model smollm2) after 1 failed attempt "
        "(embedded: quality_rejected)."
    )
    assert p.usage is not None
    assert p.usage.completion_tokens > 0
    degraded = [
        e for e in (await bus.replay("alice")).events if e.type is EventType.SERVICE_DEGRADED
    ]
    assert [e.message for e in degraded] == [
        "embedded failed (quality_rejected); sincere retries it once with stronger repetition "
        "penalties"
    ]
    breaker = cascade.breakers.view("embedded")
    assert list(breaker.transitions) == []


async def test_a_streamed_loop_is_not_retried_because_the_client_already_saw_it(
    settings: Settings, contexts: ContextFactory
) -> None:
    cascade = await _cascade(settings)
    shown: list[str] = []

    async def watch() -> None:
        async for item in cascade.stream(contexts.create("alice", "free"), LOOPING):
            assert isinstance(item, Delta)
            shown.append(item.text)

    with pytest.raises(ServiceError) as caught:
        await watch()
    assert shown  # the loop went out as it was generated
    assert caught.value.error_type == "quality_rejected"
    assert [a.outcome for a in caught.value.attempts] == ["quality_rejected"]
