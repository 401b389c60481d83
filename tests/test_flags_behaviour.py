"""What each flag the cascade reads switches: stream continuation, shadow probes, detailed
service events; against real upstreams (the fault server) that misbehave on cue."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sincere.answer import Answer
from sincere.auth import Authenticator
from sincere.backends.memory.breakers import InProcessBreakers
from sincere.config import Settings, load_settings
from sincere.context import ContextFactory
from sincere.errors import ServiceError, UpstreamError
from sincere.llm.breaker import BreakerPolicy, BreakerState
from sincere.llm.cascade import ModelCascade
from sincere.llm.prober import probe_open_deployments
from sincere.llm.provider import Delta
from sincere.llm.request import ChatRequest
from sincere.runtime import build_cascade, build_runtime
from sincere.tiers.flags import Flag
from tests.clocks import ManualClock
from tests.conftest import closing
from tests.faults import Fault, FaultServer, RecordedRequest
from tests.live import LiveServer, run

KEY = "fault-key-0a1b2c3d4e5f"
HANG_GUARD_S = 30.0  # only a guard against a hang; no assertion is about time


class Switches:
    """A flag reader a test flips by hand; it counts how often it was asked."""

    def __init__(self, *off: Flag) -> None:
        self.values = {flag: flag not in off for flag in Flag}
        self.asked = 0

    def __call__(self, flag: Flag) -> bool:
        self.asked += 1
        return self.values[flag]


@pytest.fixture
def servers() -> Iterator[tuple[FaultServer, FaultServer]]:
    with FaultServer() as a, FaultServer() as b:
        yield a, b


def _settings(tmp_path: Path, a: FaultServer, b: FaultServer, defaults: str = "") -> Settings:
    """Model 'gpt' on 'a', falling back to 'backup' on 'b', which takes an assistant prefill."""
    text = "[defaults]\nmax_retries = 0\nfirst_token_timeout_s = 5\nstream_idle_timeout_s = 5\n"
    text += defaults
    text += '\n[[models]]\nname = "gpt"\ndeployments = ["a"]\nfallbacks = ["backup"]\n'
    text += '\n[[models]]\nname = "backup"\ndeployments = ["b"]\n'
    for name, server, extra in (("a", a, ""), ("b", b, "supports_prefill = true\n")):
        text += (
            f'\n[[deployments]]\nname = "{name}"\nprovider = "openai"\n'
            f'base_url = "{server.base_url}"\nmodel = "{name}-upstream"\n'
            f'api_key_env = "FAULT_KEY"\n{extra}'
        )
    path = tmp_path / "sincere.toml"
    path.write_text(text)
    return load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path / "data")})


def _cascade(
    settings: Settings, flags: Callable[[Flag], bool], clock: ManualClock | None = None
) -> ModelCascade:
    breakers = None
    if clock is not None:
        breakers = InProcessBreakers(
            [d.name for d in settings.deployments],
            BreakerPolicy.of(settings.defaults),
            clock=clock.monotonic,
            wall_clock=clock.time,
        )
    cascade = build_cascade(settings, env={"FAULT_KEY": KEY}, breakers=breakers, flags=flags)
    return closing(cascade)


async def _stream(
    cascade: ModelCascade, contexts: ContextFactory
) -> tuple[str, Answer | None, ServiceError | None]:
    text, answer, error = "", None, None
    try:
        async for item in cascade.stream(contexts.create("alice"), ChatRequest.of("gpt", "Hi")):
            if isinstance(item, Delta):
                text += item.text
            else:
                answer = item
    except ServiceError as exc:
        error = exc
    return text, answer, error


async def _until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition`` holds (polled); only a hang fails it."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


def _is_probe(request: RecordedRequest) -> bool:
    return request.body is not None and request.body.get("max_tokens") == 1


# Stream continuation


async def test_with_continuation_off_a_stream_cut_after_text_ends_in_its_error(
    tmp_path: Path, servers: tuple[FaultServer, FaultServer], contexts: ContextFactory
) -> None:
    a, b = servers
    a.default = Fault(kind="cut", after_chunks=3, text="one two three four five")
    b.default = Fault.ok(text=" four five.")
    switches = Switches(Flag.STREAM_CONTINUATION)
    cascade = _cascade(_settings(tmp_path, a, b), switches)

    text, answer, error = await _stream(cascade, contexts)
    assert answer is None
    assert isinstance(error, UpstreamError)  # the failure that cut it
    assert text == "one two three"  # what the caller holds, shown as broken
    assert b.completions == []  # no continuation was asked for

    switches.values[Flag.STREAM_CONTINUATION] = True  # rolled forward again
    text, answer, error = await _stream(cascade, contexts)
    assert error is None
    assert answer is not None
    assert text == answer.text == "one two three four five."
    assert answer.provenance.continued_from == "a"


def test_with_continuation_off_the_sse_stream_ends_with_an_in_band_error(
    tmp_path: Path, servers: tuple[FaultServer, FaultServer]
) -> None:
    a, b = servers
    a.default = Fault(kind="cut", after_chunks=2, text="one two three four")
    b.default = Fault.ok(text=" three four.")
    gateway = build_runtime(_settings(tmp_path, a, b), env={"FAULT_KEY": KEY})
    with LiveServer(gateway) as live:
        admin, _ = run(gateway.keys.create("ops", "enterprise", "admin"))
        user, _ = run(gateway.keys.create("alice", "free"))
        switched = httpx.put(
            live.url + "/admin/flags/stream_continuation",
            json={"enabled": False},
            headers={"Authorization": f"Bearer {admin}"},
            timeout=10,
        )
        assert switched.status_code == 200
        response = httpx.post(
            live.v1 + "/chat/completions",
            headers={"Authorization": f"Bearer {user}"},
            json={"model": "gpt", "messages": [{"role": "user", "content": "x"}], "stream": True},
            timeout=30,
        )
    assert response.status_code == 200  # text went out before the cut
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    text = "".join(
        json.loads(e)["choices"][0]["delta"].get("content") or ""
        for e in events
        if "choices" in json.loads(e) and json.loads(e)["choices"]
    )
    assert text == "one two"
    assert json.loads(events[-1])["error"]["request_id"] == response.headers["x-request-id"]
    assert "[DONE]" not in events
    assert b.completions == []


# Shadow probes


async def _open_a(cascade: ModelCascade, contexts: ContextFactory, a: FaultServer) -> None:
    """One failure opens 'a' (breaker_consecutive_failures = 1); 'b' answers the user."""
    a.default = Fault.status(503)
    answer = await cascade.complete(contexts.create("alice"), ChatRequest.of("gpt", "Hi"))
    assert answer.provenance.deployment == "b"
    assert cascade.breakers.view("a").state is BreakerState.OPEN


async def test_with_shadow_probes_off_the_prober_starts_none_until_they_are_on_again(
    tmp_path: Path, servers: tuple[FaultServer, FaultServer], contexts: ContextFactory
) -> None:
    a, b = servers
    b.default = Fault.ok(text="from b")
    clock = ManualClock()
    switches = Switches(Flag.SHADOW_PROBE)
    settings = _settings(tmp_path, a, b, "breaker_consecutive_failures = 1\n")
    cascade = _cascade(settings, switches, clock)
    await _open_a(cascade, contexts, a)
    clock.advance(settings.defaults.breaker_open_s)
    assert cascade.due_probes() == ["a"]
    a.default = Fault.ok(text="back")

    prober = asyncio.create_task(probe_open_deployments(cascade, tick_s=0.01))
    try:
        asked = switches.asked
        await _until(lambda: switches.asked >= asked + 20)  # twenty rounds of the prober
        assert [r for r in a.completions if _is_probe(r)] == []
        assert cascade.breakers.view("a").state is BreakerState.OPEN

        switches.values[Flag.SHADOW_PROBE] = True
        await _until(lambda: cascade.breakers.view("a").state is BreakerState.CLOSED)
    finally:
        prober.cancel()
        await asyncio.gather(prober, return_exceptions=True)
    assert len([r for r in a.completions if _is_probe(r)]) == 1


async def test_with_shadow_probes_off_a_due_circuit_takes_a_users_request_as_its_probe(
    tmp_path: Path, servers: tuple[FaultServer, FaultServer], contexts: ContextFactory
) -> None:
    a, b = servers
    b.default = Fault.ok(text="from b")
    clock = ManualClock()
    switches = Switches()
    settings = _settings(tmp_path, a, b, "breaker_consecutive_failures = 1\n")
    cascade = _cascade(settings, switches, clock)
    await _open_a(cascade, contexts, a)
    clock.advance(settings.defaults.breaker_open_s)
    a.default = Fault.ok(text="from a again")
    ask = ChatRequest.of("gpt", "Hi")

    # On: a due circuit waits for its shadow probe (no prober runs here); 'b' serves.
    answer = await cascade.complete(contexts.create("alice"), ask)
    assert [(x.deployment, x.outcome) for x in answer.provenance.attempts] == [
        ("a", "circuit_open"),
        ("b", "ok"),
    ]
    assert cascade.breakers.view("a").state is BreakerState.OPEN

    # Off: the outage still ends, the classic way: the next request is the probe.
    switches.values[Flag.SHADOW_PROBE] = False
    answer = await cascade.complete(contexts.create("alice"), ask)
    assert answer.text == "from a again"
    assert [(x.deployment, x.outcome) for x in answer.provenance.attempts] == [("a", "ok")]
    assert cascade.breakers.view("a").state is BreakerState.CLOSED
    assert [r for r in a.completions if _is_probe(r)] == []


# Detailed events


@pytest.mark.parametrize("detailed", [True, False])
async def test_without_detailed_events_a_user_sees_only_the_request_events(
    tmp_path: Path, servers: tuple[FaultServer, FaultServer], detailed: bool
) -> None:
    a, b = servers
    a.default = Fault.status(503)
    b.default = Fault.ok(text="from b")
    gateway = build_runtime(_settings(tmp_path, a, b), env={"FAULT_KEY": KEY})
    closing(gateway)
    if not detailed:
        await gateway.flags.set(Flag.DETAILED_EVENTS, False, "cli:test")
    caller = Authenticator.operator("alice")
    answer = await gateway.pipeline.complete(caller, ChatRequest.of("gpt", "Hi"), surface="cli")
    assert answer.text == "from b"
    types = [str(e.type) for e in (await gateway.bus.replay("alice")).events]
    service = [t for t in types if t.startswith("service_")]
    assert [t for t in types if t.startswith("request_")] == [
        "request_started",
        "request_completed",
    ]
    if detailed:
        assert "service_degraded" in service  # a failed, b was next
    else:
        assert service == []
    assert set(types) <= {"request_started", "request_completed", *service}
