"""ModelCascade against the real embedded model and real local HTTP servers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sincere.backends.memory.events import InProcessEventBus
from sincere.config import Settings, load_settings
from sincere.context import ContextFactory, Tier
from sincere.errors import ModelNotFound, ServiceError, ServiceUnavailable
from sincere.events import EventType
from sincere.identity import Caller, KeyRole
from sincere.llm.cascade import ModelCascade
from sincere.llm.provider import Delta
from sincere.llm.request import ChatRequest
from sincere.ports import Subscription
from sincere.runtime import build_cascade, build_runtime
from tests.conftest import closing
from tests.faults import Fault, FaultServer, refused_port

KEY = "test-key-9f8e7d6c5b4a"


def _settings(tmp_path: Path, deployments: list[tuple[str, str]], fallbacks: str = "") -> Settings:
    """A model 'gpt' over the given (name, base_url) deployments, priced like gpt-4o-mini."""
    text = f"""
[defaults]
max_retries = 0
timeout_s = 30
connect_timeout_s = 2
first_token_timeout_s = 5
stream_idle_timeout_s = 5

[[models]]
name = "gpt"
deployments = {json.dumps([name for name, _ in deployments])}
fallbacks = [{fallbacks}]
"""
    for name, url in deployments:
        text += f"""
[[deployments]]
name = "{name}"
provider = "openai"
base_url = "{url}"
model = "upstream-{name}"
api_key_env = "TEST_KEY"
input_price_per_mtok = 0.15
output_price_per_mtok = 0.60
"""
    path = tmp_path / "sincere.toml"
    path.write_text(text)
    return load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path)})


def _cascade(settings: Settings) -> ModelCascade:
    return closing(build_cascade(settings, env={"TEST_KEY": KEY}))


async def test_the_embedded_default_answers_with_full_provenance(
    settings: Settings, contexts: ContextFactory, bus: InProcessEventBus
) -> None:
    cascade = build_cascade(settings)
    ctx = contexts.create("alice")
    answer = await cascade.complete(
        ctx, ChatRequest.of("smollm2", "What is the capital of France?", max_tokens=40)
    )
    p = answer.provenance
    assert answer.text.strip()
    assert (p.model, p.deployment, p.provider) == ("smollm2", "embedded", "embedded")
    assert p.usage is not None
    assert p.usage.completion_tokens > 0
    assert p.cost_usd == 0.0  # computed: local tokens are priced at zero in the config
    assert [a.outcome for a in p.attempts] == ["ok"]
    assert p.selection_reasoning == "Answered by 'embedded' (model smollm2) at the first attempt."
    types = [e.type for e in (await bus.replay("alice")).events]
    # The cascade tells of the services it uses; the request's own start and end are the
    # pipeline's (tests/test_pipeline.py).
    assert types == [EventType.SERVICE_INITIALIZING, EventType.SERVICE_READY]


async def test_failover_from_a_refused_connection_to_a_live_deployment(
    tmp_path: Path, contexts: ContextFactory, fault_server: FaultServer
) -> None:
    dead = f"http://127.0.0.1:{refused_port()}/v1"
    cascade = _cascade(_settings(tmp_path, [("dead", dead), ("live", fault_server.base_url)]))
    fault_server.default = Fault.ok(text="Real words from the live upstream.")
    answer = await cascade.complete(contexts.create("alice"), ChatRequest.of("gpt", "Hi there"))
    p = answer.provenance
    assert answer.text == "Real words from the live upstream."
    assert p.deployment == "live"
    assert p.upstream_model == "upstream-live"
    assert [(a.deployment, a.outcome) for a in p.attempts] == [
        ("dead", "service_unavailable"),
        ("live", "ok"),
    ]
    assert p.attempts[0].detail is not None
    assert "cannot connect" in p.attempts[0].detail
    assert p.usage is not None
    # 2 prompt words and 6 completion words at $0.15 / $0.60 per million tokens.
    assert (p.usage.prompt_tokens, p.usage.completion_tokens) == (2, 6)
    assert p.cost_usd == pytest.approx((2 * 0.15 + 6 * 0.60) / 1e6)
    assert "after 1 failed attempt (dead: service_unavailable)" in p.selection_reasoning
    assert len(fault_server.requests) == 1
    assert fault_server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    await cascade.aclose()


async def test_failover_to_a_fallback_model_is_named_in_the_provenance(
    tmp_path: Path, contexts: ContextFactory
) -> None:
    dead = f"http://127.0.0.1:{refused_port()}/v1"
    cascade = _cascade(_settings(tmp_path, [("dead", dead)], fallbacks='"smollm2"'))
    answer = await cascade.complete(
        contexts.create("alice"), ChatRequest.of("gpt", "Say hi.", max_tokens=16)
    )
    assert answer.provenance.model == "smollm2"
    assert answer.provenance.requested_model == "gpt"
    assert "a fallback for gpt" in answer.provenance.selection_reasoning
    await cascade.aclose()


async def test_when_every_deployment_is_dead_one_error_lists_each_attempt(
    tmp_path: Path, contexts: ContextFactory, bus: InProcessEventBus, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.status(503, message="overloaded")
    refused = f"http://127.0.0.1:{refused_port()}/v1"
    cascade = _cascade(_settings(tmp_path, [("a", refused), ("b", fault_server.base_url)]))
    ctx = contexts.create("alice")
    with pytest.raises(ServiceUnavailable) as info:
        await cascade.complete(ctx, ChatRequest.of("gpt", "Hello"))
    error = info.value
    assert [(a.deployment, a.outcome, a.status_code) for a in error.attempts] == [
        ("a", "service_unavailable", None),
        ("b", "service_unavailable", 503),
    ]
    assert error.context.request_id == ctx.request_id
    assert error.retry_after is None  # nobody said when: no invented estimate
    body = error.to_openai_error()
    assert body["error"]["request_id"] == ctx.request_id
    assert set(body) == {"error"}  # an error object, and no answer of any kind
    told = [(e.service, e.type) for e in (await bus.replay("alice")).events]
    assert told == [("a", EventType.SERVICE_DEGRADED), ("b", EventType.SERVICE_DEGRADED)]
    await cascade.aclose()


async def test_streaming_fails_over_invisibly_before_any_text(
    tmp_path: Path, contexts: ContextFactory, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok(text="one two three")
    refused = f"http://127.0.0.1:{refused_port()}/v1"
    cascade = _cascade(_settings(tmp_path, [("a", refused), ("b", fault_server.base_url)]))
    items = [i async for i in cascade.stream(contexts.create("alice"), ChatRequest.of("gpt", "x"))]
    deltas = "".join(i.text for i in items if isinstance(i, Delta))
    answer = items[-1]
    assert deltas == "one two three" == answer.text  # type: ignore[union-attr]
    assert fault_server.requests[0].body["stream"] is True  # type: ignore[index]
    await cascade.aclose()


async def test_an_unknown_model_is_404_with_the_models_that_exist(
    settings: Settings, contexts: ContextFactory
) -> None:
    cascade = build_cascade(settings)
    ctx = contexts.create("alice")
    with pytest.raises(ModelNotFound) as info:
        await cascade.complete(ctx, ChatRequest.of("gpt-7", "Hi"))
    assert info.value.status == 404
    assert info.value.context.request_id == ctx.request_id
    assert info.value.suggestions == ("Use one of: smollm2.",)


async def test_an_upstream_error_that_echoes_the_api_key_never_shows_it(
    tmp_path: Path, contexts: ContextFactory, bus: InProcessEventBus, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.invalid_key(echo_key=True)
    cascade = _cascade(_settings(tmp_path, [("keyed", fault_server.base_url)]))
    with pytest.raises(ServiceError) as info:
        await cascade.complete(contexts.create("alice"), ChatRequest.of("gpt", "Hi"))
    # The upstream really did put the key in its message ...
    assert fault_server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    # ... and it is in no rendering, no attempt and no event.
    rendered = json.dumps(info.value.to_problem()) + json.dumps(info.value.to_openai_error())
    rendered += str(info.value) + "".join(a.summary() for a in info.value.attempts)
    rendered += json.dumps([e.to_dict() for e in (await bus.replay("alice")).events])
    assert KEY not in rendered
    assert "Incorrect API key provided: [redacted]" in rendered
    assert info.value.attempts[0].outcome == "provider_auth_failed"
    await cascade.aclose()


async def test_two_concurrent_users_never_see_each_others_events(settings: Settings) -> None:
    runtime = build_runtime(settings, env={})
    alice = Caller("alice", Tier.FREE, KeyRole.USER, None)
    bob = Caller("bob", Tier.ENTERPRISE, KeyRole.USER, None)
    seen: dict[str, list[tuple[str, str | None]]] = {"alice": [], "bob": []}

    async def watch(user: str, events: Subscription) -> None:
        async for event in events:
            seen[user].append((event.user_id, event.request_id))
            if event.type in (EventType.REQUEST_COMPLETED, EventType.REQUEST_FAILED):
                return

    watchers = [
        asyncio.create_task(watch(u, await runtime.bus.subscribe(u))) for u in ("alice", "bob")
    ]
    try:
        await asyncio.gather(
            runtime.pipeline.complete(
                alice,
                ChatRequest.of("smollm2", "Hi, I am Alice.", max_tokens=8),
                request_id="from-alice",
                surface="test",
            ),
            runtime.pipeline.complete(
                bob,
                ChatRequest.of("smollm2", "Hi, I am Bob.", max_tokens=8),
                request_id="from-bob",
                surface="test",
            ),
        )
        async with asyncio.timeout(5):
            await asyncio.gather(*watchers)
    finally:
        await runtime.aclose()
    assert seen["alice"]
    assert set(seen["alice"]) == {("alice", "from-alice")}
    assert seen["bob"]
    assert set(seen["bob"]) == {("bob", "from-bob")}
