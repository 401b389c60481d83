"""Issue 9 item 6: one user's long generations must not take the embedded model down for others.

A real gateway on 127.0.0.1 with the real embedded model: waiting in the model's line is
neither a timeout nor a failure of the model; a wait that would be too long is a 503 from
sincere, with Retry-After only when it is computed from measured generation times.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import httpx

from sincere.config import Settings, load_settings
from sincere.context import ContextFactory
from sincere.llm.breaker import BreakerState
from sincere.llm.embedded import WORKER, EmbeddedProvider
from sincere.llm.provider import collect
from sincere.llm.request import AttemptLimits, ChatRequest
from sincere.runtime import build_cascade, build_runtime
from tests.conftest import closing
from tests.faults import Fault, FaultServer
from tests.live import LiveGateway, LiveServer

LONG = "Write a long story about a dragon."
SHORT = "Name a fruit."
LONG_TOKENS = 128
ROOMY = AttemptLimits(total_s=300, connect_s=3, first_token_s=60, stream_idle_s=60)


def _settings(tmp_path: Path, defaults: str, extra: str = "") -> Settings:
    path = tmp_path / "sincere.toml"
    path.write_text(f"[defaults]\nmax_retries = 0\ntimeout_s = 300\n{defaults}\n{extra}")
    return load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path / "data")})


def _body(prompt: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": "smollm2",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
    }


async def _post(client: httpx.AsyncClient, live: LiveGateway, who: str, body: Any) -> Any:
    return await client.post(
        f"{live.v1}/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {live.keys[who]}"},
    )


async def _until_running() -> None:
    for _ in range(60_000):
        if WORKER.busy():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the long generation never started")


async def test_a_noisy_neighbour_does_not_time_out_other_users_or_open_the_circuit(
    tmp_path: Path, embedded: EmbeddedProvider
) -> None:
    """One free user's two long generations, then four other users' short requests at once."""
    alone = await collect(
        embedded.stream(
            ChatRequest.of("smollm2", LONG, temperature=0.0, max_tokens=LONG_TOKENS), ROOMY
        )
    )
    # A first-token limit shorter than one long generation: a request queued behind two of
    # them waits longer than it. A single counted failure would open the circuit.
    first_token_s = round(alone.latency_s / 2, 3)
    settings = _settings(
        tmp_path,
        f"first_token_timeout_s = {first_token_s}\nbreaker_consecutive_failures = 1",
    )
    gateway = build_runtime(settings, env={})
    with LiveServer(gateway) as live:
        keys = {"noisy": "free", **{f"user{i}": "standard" for i in range(4)}}
        for name, tier in keys.items():
            live.keys[name], _ = await gateway.keys.create(name, tier, "user")
        async with httpx.AsyncClient(timeout=600) as client:
            headers = {"authorization": f"Bearer {live.keys['noisy']}"}
            first = {**_body(LONG, LONG_TOKENS), "stream": True}
            async with client.stream(
                "POST", f"{live.v1}/chat/completions", json=first, headers=headers
            ) as streaming:
                # The stream's status is sent with its first token: its generation runs.
                assert streaming.status_code == 200
                others = [
                    _post(client, live, "noisy", _body(LONG, LONG_TOKENS)),
                    *(_post(client, live, f"user{i}", _body(SHORT, 8)) for i in range(4)),
                ]
                responses = await asyncio.gather(*others)
                streamed = (await streaming.aread()).decode()
            ready = await client.get(f"{live.url}/readyz")

    assert streamed.rstrip().endswith("data: [DONE]")
    # Nobody timed out while waiting in line (the first-token limit starts with generation):
    # each was answered, or told by sincere that its tier's queue wait ran out, with a
    # Retry-After only when one could be computed from measured service times.
    assert 504 not in [r.status_code for r in responses]
    for response in responses:
        if response.status_code == 503:
            error = response.json()["error"]
            assert error["code"] == "queue_timeout"
            assert ("retry_after" in error) == error["estimate_known"]
            if error["estimate_known"]:
                assert response.headers["retry-after"] == str(math.ceil(error["retry_after"]))
        else:
            assert response.status_code == 200, response.text
    breaker = gateway.cascade.breakers["embedded"]
    assert breaker.state is BreakerState.CLOSED
    assert list(breaker.transitions) == []
    assert ready.status_code == 200


async def test_a_wait_longer_than_the_tier_s_max_queue_wait_is_a_503_that_says_where_it_was(
    tmp_path: Path, embedded: EmbeddedProvider
) -> None:
    settings = _settings(
        tmp_path,
        "breaker_consecutive_failures = 1",
        "[tiers.standard]\nmax_queue_wait_s = 0.2\n",
    )
    gateway = build_runtime(settings, env={})
    with LiveServer(gateway) as live:
        for name in ("alice", "bob"):
            live.keys[name], _ = await gateway.keys.create(name, "standard", "user")
        async with httpx.AsyncClient(timeout=600) as client:
            long = asyncio.create_task(_post(client, live, "alice", _body(LONG, LONG_TOKENS)))
            await _until_running()
            busy = await _post(client, live, "bob", _body(SHORT, 8))
            ready = await client.get(f"{live.url}/readyz")
            assert (await long).status_code == 200

    assert busy.status_code == 503
    error = busy.json()["error"]
    assert error["code"] == "queue_timeout"
    assert error["request_id"] == busy.headers["x-request-id"]
    assert "embedded stayed at capacity (1 at once)" in error["message"]
    assert error["queue_position"] == 1
    assert error["queue_waited_ms"] >= 200
    # One generation measured is not enough to estimate a wait: none is invented.
    assert error["estimate_known"] is False
    assert "retry_after" not in error
    assert "retry-after" not in busy.headers
    assert [a["outcome"] for a in error["attempts"]] == ["queue_timeout"]
    assert gateway.cascade.breakers["embedded"].state is BreakerState.CLOSED
    assert ready.status_code == 200


async def test_a_busy_local_model_fails_over_and_is_not_counted_against_its_breaker(
    tmp_path: Path, contexts: ContextFactory, fault_server: FaultServer
) -> None:
    """Model 'local' on the embedded deployment, falling back to 'gpt' on an upstream."""
    settings = _settings(
        tmp_path,
        "breaker_consecutive_failures = 1",
        f"""
[tiers.standard]
max_queue_wait_s = 0.2

[[models]]
name = "local"
deployments = ["embedded"]
fallbacks = ["gpt"]

[[models]]
name = "gpt"
deployments = ["up"]

[[deployments]]
name = "up"
provider = "openai"
base_url = "{fault_server.base_url}"
model = "up-model"
""",
    )
    cascade = closing(build_cascade(settings, env={}))
    fault_server.default = Fault.ok(text="An apple.")
    long = asyncio.create_task(
        cascade.complete(
            contexts.create("alice", "standard"),
            ChatRequest.of("local", LONG, temperature=0.0, max_tokens=LONG_TOKENS),
        )
    )
    await _until_running()
    answer = await cascade.complete(
        contexts.create("bob", "standard"), ChatRequest.of("local", SHORT, max_tokens=8)
    )
    assert answer.text == "An apple."
    attempts = answer.provenance.attempts
    assert [(a.deployment, a.outcome) for a in attempts] == [
        ("embedded", "queue_timeout"),
        ("up", "ok"),
    ]
    assert attempts[0].status_code is None
    assert attempts[0].cost_usd == 0.0  # it never reached the model
    assert "embedded: queue_timeout" in answer.provenance.selection_reasoning
    assert answer.provenance.queue_wait_s >= 0.2
    assert (await long).provenance.deployment == "embedded"
    assert cascade.breakers["embedded"].state is BreakerState.CLOSED
    assert list(cascade.breakers["embedded"].transitions) == []
