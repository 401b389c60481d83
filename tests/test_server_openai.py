"""The gateway as an application team uses it: the official openai SDK, changing nothing else."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import event

from sincere.backends.sql.keys import KEY_PREFIX
from sincere.config import load_settings
from sincere.runtime import Runtime, build_runtime
from tests.doubles import DEFECT, defective
from tests.faults import Fault, FaultServer, refused_port
from tests.live import LiveGateway, LiveServer, run, settings_for


def _client(live: LiveGateway, who: str = "alice", **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.v1, api_key=live.keys[who], max_retries=0, **kwargs)  # type: ignore[arg-type]


def _drain(stream: Iterable[Any], into: list[str]) -> None:
    for chunk in stream:
        into.append(chunk.choices[0].delta.content or "")


def test_a_completion_comes_back_with_its_provenance(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok(text="Paris is the capital of France.")
    raw = _client(live).chat.completions.with_raw_response.create(
        model="gpt",
        messages=[{"role": "user", "content": "Capital of France?"}],
        max_tokens=50,
        temperature=0.3,
        stop=["\n\n"],
        user="end-user-7",
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "Paris is the capital of France."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "gpt"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 6)
    sincere = reply.model_extra["sincere"]  # type: ignore[index]
    assert sincere["deployment"] == "up"
    assert sincere["cost_usd"] == pytest.approx((3 * 1.0 + 6 * 2.0) / 1e6)
    assert sincere["attempts"][0]["outcome"] == "ok"
    assert raw.headers["x-sincere-deployment"] == "up"
    assert raw.headers["x-sincere-attempts"] == "1"
    assert raw.headers["x-request-id"].startswith("req_")
    sent = fault_server.completions[0].body
    assert sent is not None
    assert (sent["max_tokens"], sent["temperature"], sent["stop"]) == (50, 0.3, ["\n\n"])


def test_a_client_request_id_is_echoed(live: LiveGateway) -> None:
    raw = _client(live).chat.completions.with_raw_response.create(
        model="gpt",
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"x-request-id": "client-chosen-42"},
    )
    assert raw.headers["x-request-id"] == "client-chosen-42"
    assert raw.parse().id == "chatcmpl-client-chosen-42"


def test_streaming_with_usage(live: LiveGateway, fault_server: FaultServer) -> None:
    fault_server.default = Fault.ok(text="one two three")
    stream = _client(live).chat.completions.create(
        model="gpt",
        messages=[{"role": "user", "content": "Count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


def test_a_stream_broken_after_text_ends_in_an_error_the_sdk_raises(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    fault_server.default = Fault(kind="cut", after_chunks=2, text="one two three")
    stream = _client(live).chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError, match="connection broke"):
        _drain(stream, received)
    assert received == ["one", " two"]


def test_the_model_list_shows_what_is_configured(live: LiveGateway) -> None:
    models = {m.id: m for m in _client(live).models.list()}
    assert set(models) == {"gpt", "smollm2"}
    assert models["gpt"].model_extra["deployments"] == ["up"]  # type: ignore[index]
    assert "created" not in models["gpt"].model_dump(exclude_unset=True)  # nothing invented


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        (Fault.status(503), openai.InternalServerError, 503),
        (Fault.rate_limited(retry_after=30), openai.RateLimitError, 429),
        (Fault.context_length(), openai.BadRequestError, 400),
        (Fault.hang(), openai.InternalServerError, 504),
    ],
)
def test_each_failure_reaches_the_sdk_as_its_error_class(
    live: LiveGateway,
    fault_server: FaultServer,
    fault: Fault,
    error: type[openai.APIStatusError],
    status: int,
) -> None:
    fault_server.default = fault
    with pytest.raises(error) as info:
        _client(live).chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "Hi"}]
        )
    assert info.value.status_code == status
    body = info.value.body
    assert isinstance(body, dict)
    assert body["request_id"] == info.value.response.headers["x-request-id"]
    assert body["attempts"][0]["deployment"] == "up"
    if status == 429:
        assert info.value.response.headers["retry-after"] == "30"
        assert body["retry_after"] == 30
    else:
        assert "retry-after" not in info.value.response.headers


def test_an_unknown_model_is_404(live: LiveGateway) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        _client(live).chat.completions.create(
            model="gpt-9", messages=[{"role": "user", "content": "Hi"}]
        )
    assert info.value.code == "model_not_found"
    assert "Use one of: gpt, smollm2." in json.dumps(info.value.body)


def test_a_bad_key_is_401_and_the_key_is_not_echoed(live: LiveGateway) -> None:
    bad = "sk-sincere-not-a-real-key-0123456789"
    client = openai.OpenAI(base_url=live.v1, api_key=bad, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "Hi"}])
    assert bad not in info.value.response.text


def test_a_revoked_key_is_401(live: LiveGateway) -> None:
    key, record = run(live.gateway.keys.create("carol", "standard"))
    client = openai.OpenAI(base_url=live.v1, api_key=key, max_retries=0)
    assert client.models.list().data
    run(live.gateway.keys.revoke(record.id))
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "gpt", "messages": [', None),
        (b'{"model": "gpt"}', "messages"),
        (b'{"model": "gpt", "messages": [{"role": "robot", "content": "x"}]}', "messages"),
        (b'{"model": "gpt", "messages": [{"role": "user", "content": "x"}], "n": 3}', "n"),
        (
            b'{"model": "gpt", "messages": [{"role": "user", "content": "x"}], "temperature": 9}',
            "temperature",
        ),
    ],
)
def test_malformed_and_invalid_bodies_are_400_with_the_openai_error_object(
    live: LiveGateway, body: bytes, param: str | None
) -> None:
    response = httpx.post(
        live.v1 + "/chat/completions",
        content=body,
        headers={
            "Authorization": f"Bearer {live.keys['alice']}",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["request_id"] == response.headers["x-request-id"]
    if param:
        assert error["param"].startswith(param)


def test_an_oversized_body_is_413_before_it_is_read(live: LiveGateway) -> None:
    limit = live.gateway.settings.server.max_body_bytes
    huge = json.dumps(
        {"model": "gpt", "messages": [{"role": "user", "content": "x" * (limit + 1)}]}
    )
    response = httpx.post(
        live.v1 + "/chat/completions",
        content=huge,
        headers={"Authorization": f"Bearer {live.keys['alice']}"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_the_free_tier_rpm_limit_is_429_with_the_real_wait(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    client = _client(live, "alice")
    limit = live.gateway.settings.tiers["free"].requests_per_minute
    for _ in range(limit):
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])
    wait = int(info.value.response.headers["retry-after"])
    assert 50 <= wait <= 60  # the window's oldest request leaves in about a minute
    assert len(fault_server.completions) == limit  # the refused request never went upstream
    # Another user is not affected.
    _client(live, "bob").chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "x"}]
    )


def test_the_response_guard_blocks_a_dishonest_provider(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok(
        text="I apologize, but I encountered an error processing your request."
    )
    with pytest.raises(openai.InternalServerError) as info:
        _client(live).chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "Hi"}]
        )
    assert info.value.status_code == 502  # the upstream's answer was unusable
    assert info.value.code == "mock_response_blocked"
    assert "the response guard withheld an answer" in info.value.message
    assert "apologize" not in json.dumps(info.value.body).lower()  # withheld, not quoted
    body = info.value.body
    assert isinstance(body, dict)
    (attempt,) = body["attempts"]
    assert attempt["outcome"] == "blocked"
    assert "forbidden fallback phrase #1" in attempt["detail"]
    last = run(live.gateway.bus.replay("alice")).events[-1]
    assert (last.type, last.service) == ("request_failed", "model_cascade")
    scrape = httpx.get(
        live.url + "/metrics", headers={"Authorization": f"Bearer {live.keys['admin']}"}
    )
    assert "sincere_mock_responses_blocked_total 1.0" in scrape.text


def test_a_blocked_answer_ends_its_request_with_request_failed_only(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok(text="Processing completed with fallback response for you.")
    with pytest.raises(openai.InternalServerError):
        _client(live).chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "Hi"}]
        )
    ends = [
        (e.type, e.service)
        for e in run(live.gateway.bus.replay("alice")).events
        if e.type in ("request_completed", "request_failed")
    ]
    assert ends == [("request_failed", "model_cascade")]  # never "completed" first


def test_the_response_guard_cuts_a_dishonest_stream_before_the_phrase_is_complete(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok(
        text="Sure. Processing completed with fallback response for: your question"
    )
    stream = _client(live).chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError, match="response guard"):
        _drain(stream, received)
    assert "Processing completed with fallback response for" not in "".join(received)


def test_metrics_count_requests_attempts_latency_and_failovers(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    # Model "gpt" on a deployment that refuses connections, falling back to the fault server.
    path = tmp_path / "sincere.toml"
    path.write_text(
        f"""
[defaults]
max_retries = 0

[[models]]
name = "gpt"
deployments = ["dead", "up"]

[[deployments]]
name = "dead"
provider = "openai"
base_url = "http://127.0.0.1:{refused_port()}/v1"
model = "m"

[[deployments]]
name = "up"
provider = "openai"
base_url = "{fault_server.base_url}"
model = "m"
"""
    )
    gateway = build_runtime(
        load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path / "data")}), env={}
    )
    with LiveServer(gateway) as running:
        admin, _ = run(gateway.keys.create("ops", "enterprise", "admin"))
        client = openai.OpenAI(base_url=running.v1, api_key=admin, max_retries=0)
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])
        scrape = httpx.get(running.url + "/metrics", headers={"Authorization": f"Bearer {admin}"})
    text = scrape.text
    assert 'sincere_requests_total{route="chat",status="200"} 1.0' in text
    assert 'sincere_attempts_total{deployment="dead",outcome="service_unavailable"} 1.0' in text
    assert 'sincere_attempts_total{deployment="up",outcome="ok"} 1.0' in text
    assert 'sincere_failovers_total{model="gpt"} 1.0' in text
    assert 'sincere_request_duration_seconds_count{route="chat"} 1.0' in text
    assert 'sincere_breaker_state{deployment="dead"} 0.0' in text


def _defective_gateway(tmp_path: Path, upstream: str, *, after_text: bool = False) -> Runtime:
    """The gateway with deployment 'up' of the test kind "defective" (a provider with a bug)."""
    settings = settings_for(tmp_path, upstream)
    up = settings.deployment("up").model_copy(update={"provider": "defective"})
    deployments = tuple(up if d.name == "up" else d for d in settings.deployments)
    settings = settings.model_copy(update={"deployments": deployments})
    return build_runtime(
        settings, env={}, provider_kinds={"defective": defective(after_text=after_text)}
    )


def test_a_defect_is_a_500_with_the_request_id_and_nothing_of_the_defect(
    tmp_path: Path, fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = _defective_gateway(tmp_path, fault_server.base_url)
    with caplog.at_level(logging.ERROR, "sincere.server"), LiveServer(gateway) as running:
        key, _ = run(gateway.keys.create("carol", "free"))
        client = openai.OpenAI(base_url=running.v1, api_key=key, max_retries=0)
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])
    response = info.value.response
    assert info.value.status_code == 500
    assert "internal error; the operator's log has the details" in info.value.message
    assert info.value.code == "internal_error"
    body = info.value.body
    assert isinstance(body, dict)
    assert body["request_id"] == response.headers["x-request-id"]
    for private in ("RuntimeError", "provider.py", "sk-live", "Traceback"):
        assert private not in response.text
    assert DEFECT in caplog.text  # the operator's log has it
    events = run(gateway.bus.replay("carol")).events
    assert [(e.type, e.service) for e in events] == [
        ("request_started", "model_cascade"),
        ("request_failed", "model_cascade"),
    ]
    assert "sk-live" not in events[-1].message


def test_a_defect_after_text_ends_the_stream_in_band_without_done(
    tmp_path: Path, fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = _defective_gateway(tmp_path, fault_server.base_url, after_text=True)
    with caplog.at_level(logging.ERROR, "sincere.server"), LiveServer(gateway) as running:
        key, _ = run(gateway.keys.create("carol", "free"))
        response = httpx.post(
            running.v1 + "/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt", "messages": [{"role": "user", "content": "x"}], "stream": True},
        )
    assert response.status_code == 200  # the text went out before the defect
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "Half an answer"
    error = json.loads(events[-1])["error"]
    assert error["message"] == "internal error; the operator's log has the details"
    assert error["code"] == "internal_error"
    assert error["request_id"] == response.headers["x-request-id"]
    assert "[DONE]" not in events
    for private in ("RuntimeError", "provider.py", "sk-live", "Traceback"):
        assert private not in response.text
    assert DEFECT in caplog.text
    assert [e.type for e in run(gateway.bus.replay("carol")).events][-1] == "request_failed"


def test_a_key_is_looked_up_off_the_event_loop(live: LiveGateway) -> None:
    # A cache miss queries the store: on the loop it would stall every request in flight
    # for the query's length (a flood of unknown keys, a slow PostgreSQL).
    on_loop: list[bool] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "api_keys" in statement:
            try:
                asyncio.get_running_loop()
                on_loop.append(True)
            except RuntimeError:
                on_loop.append(False)

    key, _ = run(live.gateway.keys.create("dave", "free"))  # never verified: not cached
    engine = live.gateway.database.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        openai.OpenAI(base_url=live.v1, api_key=key, max_retries=0).models.list()
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=live.v1, api_key=KEY_PREFIX + "unknown" * 6).models.list()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert on_loop == [False, False]
