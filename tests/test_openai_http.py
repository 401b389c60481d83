"""The OpenAI-compatible provider against a real local server that misbehaves on cue."""

from __future__ import annotations

import dataclasses

import pytest

from sincere.answer import Completion
from sincere.config import DeploymentConfig
from sincere.errors import (
    BadRequest,
    ContentRejected,
    ContextTooLong,
    ModelNotFound,
    ProviderAuthFailed,
    RateLimited,
    ServiceError,
    ServiceTimeout,
    ServiceUnavailable,
    UpstreamError,
)
from sincere.llm.openai_http import OpenAIProvider
from sincere.llm.provider import Delta, collect
from sincere.llm.request import AttemptLimits, ChatRequest, Message
from sincere.tool_calls import ToolCall
from tests.conftest import closing
from tests.faults import Fault, FaultServer, refused_port, tool_call_deltas

LIMITS = AttemptLimits(total_s=10, connect_s=2, first_token_s=1, stream_idle_s=0.5)
REQUEST = ChatRequest.of("gpt", "hello there world", max_tokens=50, temperature=0.2)


def _provider(base_url: str, key: str | None = "secret-key-123456") -> OpenAIProvider:
    deployment = DeploymentConfig(
        name="up", provider="openai", base_url=base_url, model="gpt-4o-mini"
    )
    return closing(OpenAIProvider(deployment, key))


async def _drain(provider: OpenAIProvider, into: list[Delta | Completion]) -> None:
    async for item in provider.stream(REQUEST, LIMITS):
        into.append(item)


async def _stream(provider: OpenAIProvider) -> list[Delta | Completion]:
    return [item async for item in provider.stream(REQUEST, LIMITS)]


async def test_a_completion_carries_text_usage_and_the_request_it_answered(
    fault_server: FaultServer,
) -> None:
    fault_server.default = Fault.ok(text="Hi from upstream")
    completion = await collect(_provider(fault_server.base_url).stream(REQUEST, LIMITS))
    assert completion.text == "Hi from upstream"
    assert completion.finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 3)
    assert completion.upstream_model == "gpt-4o-mini"
    sent = fault_server.requests[0].body
    assert sent is not None
    assert sent["model"] == "gpt-4o-mini"
    assert sent["max_tokens"] == 50
    assert sent["temperature"] == 0.2
    assert sent["messages"] == [{"role": "user", "content": "hello there world"}]


async def test_a_stream_yields_deltas_then_a_completion_with_usage(
    fault_server: FaultServer,
) -> None:
    fault_server.default = Fault.ok(text="one two three four")
    items = await _stream(_provider(fault_server.base_url))
    assert "".join(i.text for i in items if isinstance(i, Delta)) == "one two three four"
    final = items[-1]
    assert isinstance(final, Completion)
    assert final.usage is not None
    assert final.usage.completion_tokens == 4
    assert final.time_to_first_token_s is not None
    assert fault_server.requests[0].body["stream_options"] == {"include_usage": True}  # type: ignore[index]


async def test_a_cookie_set_by_the_upstream_is_never_sent_back(
    fault_server: FaultServer,
) -> None:
    # One session serves every user's requests: a cookie kept from one answer would travel
    # with the next user's request.
    cookie = (("set-cookie", "session=user-a; Path=/"),)
    fault_server.default = dataclasses.replace(Fault.ok(text="hi"), headers=cookie)
    # By name: aiohttp's default jar ignores cookies from IP addresses, not from hosts.
    provider = _provider(fault_server.base_url.replace("127.0.0.1", "localhost"))
    await collect(provider.stream(REQUEST, LIMITS))
    await collect(provider.stream(REQUEST, LIMITS))
    assert len(fault_server.requests) == 2
    assert fault_server.requests[1].connection == fault_server.requests[0].connection
    assert "cookie" not in fault_server.requests[1].headers


@pytest.mark.parametrize(
    ("fault", "error", "status_code"),
    [
        (Fault.rate_limited(retry_after=7), RateLimited, 429),
        (Fault.context_length(), ContextTooLong, 400),
        (Fault.content_policy(message="violence is not allowed"), ContentRejected, 400),
        (Fault.invalid_key(), ProviderAuthFailed, 401),
        (Fault.status(403, message="forbidden"), ProviderAuthFailed, 403),
        (Fault.model_not_found(), ModelNotFound, 404),
        (Fault.status(400, message="bad temperature"), BadRequest, 400),
        (Fault.status(500, message="boom"), UpstreamError, 500),
        (Fault.status(503, message="overloaded"), ServiceUnavailable, 503),
        (Fault.status(504, message="gateway timeout"), ServiceTimeout, 504),
    ],
)
async def test_status_codes_and_provider_error_codes_map_to_service_errors(
    fault_server: FaultServer, fault: Fault, error: type[ServiceError], status_code: int
) -> None:
    fault_server.default = fault
    provider = _provider(fault_server.base_url)
    with pytest.raises(error) as info:
        await collect(provider.stream(REQUEST, LIMITS))
    assert type(info.value) is error
    assert info.value.status_code == status_code
    assert "secret-key-123456" not in info.value.message


async def test_retry_after_is_read_from_the_provider_and_not_invented(
    fault_server: FaultServer,
) -> None:
    fault_server.script(Fault.rate_limited(retry_after=7), Fault.rate_limited())
    provider = _provider(fault_server.base_url)
    with pytest.raises(RateLimited) as first:
        await collect(provider.stream(REQUEST, LIMITS))
    with pytest.raises(RateLimited) as second:
        await collect(provider.stream(REQUEST, LIMITS))
    assert first.value.retry_after == 7
    assert second.value.retry_after is None


async def test_the_content_policy_reason_reaches_the_error(fault_server: FaultServer) -> None:
    fault_server.default = Fault.content_policy(message="Your request was flagged: self-harm")
    with pytest.raises(ContentRejected, match="flagged: self-harm"):
        await collect(_provider(fault_server.base_url).stream(REQUEST, LIMITS))


async def test_connection_refused_is_unavailable() -> None:
    provider = _provider(f"http://127.0.0.1:{refused_port()}/v1")
    with pytest.raises(ServiceUnavailable, match="cannot connect"):
        await collect(provider.stream(REQUEST, LIMITS))


async def test_dns_failure_is_unavailable() -> None:
    provider = _provider("http://no-such-host.invalid/v1")
    with pytest.raises(ServiceUnavailable, match="cannot connect"):
        await collect(provider.stream(REQUEST, LIMITS))


async def test_a_reset_before_headers_is_an_upstream_error(fault_server: FaultServer) -> None:
    fault_server.default = Fault.reset()
    with pytest.raises(UpstreamError):
        await collect(_provider(fault_server.base_url).stream(REQUEST, LIMITS))


async def test_no_response_at_all_is_bounded_by_the_first_token_limit(
    fault_server: FaultServer,
) -> None:
    fault_server.default = Fault.hang()
    with pytest.raises(ServiceTimeout):
        await _stream(_provider(fault_server.base_url))


@pytest.mark.parametrize(
    ("fault", "error", "match"),
    [
        (Fault.cut(after_chunks=2), UpstreamError, "connection broke"),
        (Fault.stall(after_chunks=2), ServiceTimeout, "no next token"),
        (Fault.malformed_chunk(after_chunks=2), UpstreamError, "not valid JSON"),
        (Fault.no_done(finish_reason=False), UpstreamError, "without a finish reason"),
    ],
)
async def test_a_broken_stream_is_never_a_success(
    fault_server: FaultServer, fault: Fault, error: type[ServiceError], match: str
) -> None:
    fault_server.default = fault
    received: list[Delta | Completion] = []
    with pytest.raises(error, match=match):
        await _drain(_provider(fault_server.base_url), received)
    assert not any(isinstance(i, Completion) for i in received)


async def test_a_stream_with_a_finish_reason_but_no_done_is_complete(
    fault_server: FaultServer,
) -> None:
    fault_server.default = Fault.no_done(finish_reason=True)
    items = await _stream(_provider(fault_server.base_url))
    final = items[-1]
    assert isinstance(final, Completion)
    assert final.text == "Echo: hello there world"
    assert final.usage is not None


_PROBE_LIMITS = AttemptLimits(2, 2, 2, 2)


async def test_the_probe_is_a_one_token_chat_completion_with_the_key(
    fault_server: FaultServer,
) -> None:
    provider = _provider(fault_server.base_url)
    usage = await provider.probe(_PROBE_LIMITS)
    assert usage is not None  # its tokens, to be counted like any attempt's
    fault_server.default = Fault.invalid_key(echo_key=False)
    with pytest.raises(ProviderAuthFailed):
        await provider.probe(_PROBE_LIMITS)
    fault_server.default = Fault.status(503)
    with pytest.raises(ServiceUnavailable):
        await provider.probe(_PROBE_LIMITS)
    probes = fault_server.completions
    assert [r.body and r.body["max_tokens"] for r in probes] == [1, 1, 1]
    assert {r.headers["authorization"] for r in probes} == {"Bearer secret-key-123456"}
    assert [r for r in fault_server.requests if r.path == "/v1/models"] == []


async def test_a_deployment_refusing_the_probes_shape_is_asked_for_its_models(
    fault_server: FaultServer,
) -> None:
    provider = _provider(fault_server.base_url)
    fault_server.default = Fault.status(400)  # say, max_tokens on a reasoning model
    assert await provider.probe(_PROBE_LIMITS) is None  # /models answered: it serves
    fault_server.models_fault = Fault.status(404)  # and without a model list either
    with pytest.raises(BadRequest):
        await provider.probe(_PROBE_LIMITS)
    fault_server.models_fault = Fault.status(503)
    with pytest.raises(ServiceUnavailable):
        await provider.probe(_PROBE_LIMITS)


async def test_the_probe_of_an_unreachable_endpoint_fails_as_a_request_would() -> None:
    with pytest.raises(ServiceUnavailable, match="cannot connect"):
        await _provider(f"http://127.0.0.1:{refused_port()}/v1").probe(_PROBE_LIMITS)


# Tool calls and the parameters of the request


async def test_tool_call_fragments_are_passed_on_in_order_and_add_up_to_the_calls(
    fault_server: FaultServer,
) -> None:
    calls = (("get_weather", '{"city": "Paris", "unit": "C"}'), ("get_time", '{"zone": "UTC"}'))
    fault_server.default = Fault.tool_calls(*calls)
    items = await _stream(_provider(fault_server.base_url))
    deltas = [i for i in items if isinstance(i, Delta)]
    assert [{"tool_calls": [f.to_dict() for f in d.tool_calls]} for d in deltas] == (
        tool_call_deltas(calls)
    )
    assert all(d.text == "" for d in deltas)
    final = items[-1]
    assert isinstance(final, Completion)
    assert (final.text, final.finish_reason) == ("", "tool_calls")
    assert [(c.id, c.type, c.name, c.arguments) for c in final.tool_calls] == [
        ("call_0", "function", *calls[0]),
        ("call_1", "function", *calls[1]),
    ]
    assert final.time_to_first_token_s is not None  # a call's first fragment is output too


async def test_the_request_goes_upstream_with_every_parameter_and_the_tool_loop_messages(
    fault_server: FaultServer,
) -> None:
    call = ToolCall("call_9", "get_weather", '{"city": "Paris"}')
    request = ChatRequest(
        model="gpt",
        messages=(
            Message("user", "Weather in Paris?", name="ann"),
            Message("assistant", None, tool_calls=(call,), extra={"refusal": None}),
            Message("tool", '{"celsius": 18}', tool_call_id="call_9"),
        ),
        extra={"tools": [{"type": "function", "function": {"name": "get_weather"}}], "seed": 7},
    )
    await collect(_provider(fault_server.base_url).stream(request, LIMITS))
    sent = fault_server.completions[0].body
    assert sent is not None
    assert (sent["tools"], sent["seed"]) == (request.extra["tools"], 7)
    assert sent["messages"] == [
        {"role": "user", "content": "Weather in Paris?", "name": "ann"},
        {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call.to_dict()]},
        {"role": "tool", "content": '{"celsius": 18}', "tool_call_id": "call_9"},
    ]


@pytest.mark.parametrize(
    "fragment",
    [
        {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": ""}},
        {"index": 0, "function": {"name": "f", "arguments": 7}},
        {"index": 0, "function": "f"},
        {"index": 0, "function": {"arguments": "{}"}},  # a call that never gets an id or name
    ],
)
async def test_a_malformed_tool_call_fragment_is_an_upstream_error_not_a_skipped_piece(
    fault_server: FaultServer, fragment: dict[str, object]
) -> None:
    chunk = {"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}, "finish_reason": None}]}
    end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
    fault_server.default = Fault.raw_stream(chunk, end)
    with pytest.raises(UpstreamError, match="the stream carried a"):
        await _stream(_provider(fault_server.base_url))


async def test_tool_calls_in_a_json_answer_to_a_stream_request_are_delivered_whole(
    fault_server: FaultServer,
) -> None:
    calls = (("get_weather", '{"city": "Paris"}'),)
    fault_server.default = dataclasses.replace(Fault.tool_calls(*calls), kind="json_answer")
    items = await _stream(_provider(fault_server.base_url))
    deltas = [i for i in items if isinstance(i, Delta)]
    assert len(deltas) == 1
    assert [(f.id, f.name, f.arguments) for f in deltas[0].tool_calls] == [
        ("call_0", "get_weather", '{"city": "Paris"}')
    ]
    final = items[-1]
    assert isinstance(final, Completion)
    assert (final.text, final.finish_reason) == ("", "tool_calls")
    assert [(c.id, c.name, c.arguments) for c in final.tool_calls] == [
        ("call_0", "get_weather", '{"city": "Paris"}')
    ]
    assert final.usage is not None
