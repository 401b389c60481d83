"""Every Chat Completions parameter reaches the deployment, tool loops work end to end, and a
request sincere cannot forward as sent is a 400 that names the member at fault."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from sincere.llm.breaker import BreakerState
from sincere.runtime import build_runtime
from tests.faults import Fault, FaultServer, tool_call_deltas
from tests.live import LiveGateway, LiveServer, run, settings_for

USER = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
]
CALL = ("get_weather", '{"city": "Paris"}')


def _client(live: LiveGateway, who: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=live.v1, api_key=live.keys[who], max_retries=0)


def _post(live: LiveGateway, body: dict[str, Any] | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        live.v1 + "/chat/completions",
        content=content,
        headers={"Authorization": f"Bearer {live.keys['bob']}"},
    )


def test_every_parameter_reaches_the_upstream_unchanged(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    params: dict[str, Any] = {
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": {"type": "object"}, "strict": True},
        },
        "seed": 42,
        "top_p": 0.9,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logit_bias": {"50256": -100, "1734": 5},
        "logprobs": True,
        "top_logprobs": 3,
        "user": "end-user-7",
        "stop": ["a", "b", "c", "d", "e"],  # five: OpenAI's own limit is OpenAI's to apply
        "max_completion_tokens": 64,
        "metadata": {"team": "search"},
        "store": False,
        "n": 1,
    }
    unknown = {"top_k": 40, "chat_template_kwargs": {"enable_thinking": False}}
    _client(live).chat.completions.create(model="gpt", messages=USER, extra_body=unknown, **params)
    sent = fault_server.completions[0].body
    assert sent is not None
    assert {k: sent.get(k) for k in params} == params
    assert {k: sent.get(k) for k in unknown} == unknown  # a deployment's own extensions
    assert sent["messages"] == USER
    assert sent["model"] == "up-model"  # the deployment's name for the model


def test_logprobs_asked_for_come_back_from_the_upstream(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok(text="one two three")
    client = _client(live)
    reply = client.chat.completions.create(model="gpt", messages=USER, logprobs=True)
    assert reply.choices[0].logprobs is not None
    content = reply.choices[0].logprobs.content or []
    assert [(t.token, t.logprob) for t in content] == [
        ("one", 0.0),
        (" two", -0.125),
        (" three", -0.25),
    ]
    chunks = list(
        client.chat.completions.create(model="gpt", messages=USER, logprobs=True, stream=True)
    )
    streamed = [c.choices[0].logprobs for c in chunks if c.choices and c.choices[0].logprobs]
    assert [entry.token for lp in streamed for entry in lp.content or []] == [
        "one",
        " two",
        " three",
    ]


def test_a_tool_loop_through_the_gateway_with_the_openai_sdk(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    fault_server.script(Fault.tool_calls(CALL), Fault.ok(text="It is 18 degrees in Paris."))
    client = _client(live)
    messages: list[Any] = list(USER)
    first = client.chat.completions.create(
        model="gpt", messages=messages, tools=TOOLS, tool_choice="auto"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert (call.id, call.function.name, call.function.arguments) == ("call_0", *CALL)
    assert first.model_extra is not None
    assert first.model_extra["sincere"]["finish_reason"] == "tool_calls"

    # As agents do: the SDK's own message object goes back, then the tool's result.
    messages.append(choice.message)
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 18}'})
    final = client.chat.completions.create(model="gpt", messages=messages, tools=TOOLS)
    assert final.choices[0].message.content == "It is 18 degrees in Paris."
    assert final.choices[0].finish_reason == "stop"

    first_sent, second_sent = (r.body for r in fault_server.completions)
    assert first_sent is not None
    assert second_sent is not None
    assert (first_sent["tools"], first_sent["tool_choice"]) == (TOOLS, "auto")
    assert second_sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": CALL[0], "arguments": CALL[1]},
                }
            ],
        },
        {"role": "tool", "content": '{"celsius": 18}', "tool_call_id": "call_0"},
    ]


def test_streamed_tool_calls_reach_the_sdk_as_the_upstream_sent_them(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    calls = (CALL, ("get_time", '{"zone": "Europe/Paris"}'))
    fault_server.default = Fault.tool_calls(*calls)
    stream = _client(live).chat.completions.create(
        model="gpt", messages=USER, tools=TOOLS, stream=True
    )
    chunks = [c for c in stream if c.choices]
    fragments = [
        {"tool_calls": [f.model_dump(exclude_unset=True) for f in c.choices[0].delta.tool_calls]}
        for c in chunks
        if c.choices[0].delta.tool_calls
    ]
    assert fragments == tool_call_deltas(calls)  # every fragment, in order, unchanged
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(not c.choices[0].delta.content for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("member", "value", "param"),
    [
        ("max_tokens", True, "max_tokens"),
        ("max_tokens", "10", "max_tokens"),
        ("max_tokens", 1e30, "max_tokens"),
        ("max_tokens", 10**30, "max_tokens"),
        ("max_tokens", 2**31, "max_tokens"),
        ("max_completion_tokens", 0, "max_completion_tokens"),
        ("stream", "yes", "stream"),
        ("temperature", "1", "temperature"),
        ("temperature", 2.5, "temperature"),
        ("top_p", 1.5, "top_p"),
        ("presence_penalty", 3, "presence_penalty"),
        ("frequency_penalty", -2.5, "frequency_penalty"),
        ("seed", 2**63, "seed"),
        ("seed", 1.5, "seed"),
        ("n", 2, "n"),
        ("top_logprobs", 21, "top_logprobs"),
        ("logprobs", "true", "logprobs"),
        ("logit_bias", {"50256": 101}, "logit_bias"),
        ("logit_bias", {"not-a-token": 1}, "logit_bias"),
        ("user", 7, "user"),
        ("parallel_tool_calls", 1, "parallel_tool_calls"),
        ("stop", 5, "stop"),
        ("stop", ["a", 5], "stop[1]"),
        ("tools", [{"type": "function"}], "tools[0].function"),
        ("tool_choice", "sometimes", "tool_choice"),
        ("response_format", {"type": "json_schema"}, "response_format.json_schema"),
        ("response_format", {"type": "yaml"}, "response_format.type"),
        ("functions", [{"name": "f"}], "functions"),
        ("top_k", 10**30, "top_k"),  # forwarded as sent, so it must fit JSON's integers
    ],
)
def test_a_value_of_the_wrong_type_or_range_is_a_400_naming_the_member(
    live: LiveGateway, fault_server: FaultServer, member: str, value: Any, param: str
) -> None:
    response = _post(live, {"model": "gpt", "messages": USER, member: value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert error["message"].startswith("invalid request: ")
    assert f"{param}: " in error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert fault_server.completions == []  # nothing went upstream


@pytest.mark.parametrize(
    ("messages", "param", "reason"),
    [
        ([{"role": "user", "content": None}], "messages[0].content", "a valid string"),
        ([{"role": "user"}], "messages[0].content", "Field required"),
        ([*USER, {"role": "tool", "content": "18"}], "messages[1].tool_call_id", "Field required"),
        ([{"role": "assistant", "content": None}], "messages[0].content", "or tool_calls"),
        (
            [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}],
            "messages[0].tool_calls[0].function",
            "Field required",
        ),
        ([{"role": "robot", "content": "x"}], "messages[0].role", "role must be one of: system,"),
    ],
)
def test_a_malformed_tool_loop_message_is_a_400_naming_it(
    live: LiveGateway, messages: list[dict[str, Any]], param: str, reason: str
) -> None:
    response = _post(live, {"model": "gpt", "messages": messages})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert reason in error["message"]


def test_a_union_member_is_named_once_with_every_reason(live: LiveGateway) -> None:
    error = _post(live, {"model": "gpt", "messages": USER, "stop": 5}).json()["error"]
    assert error["message"] == (
        "invalid request: stop: Input should be a valid string or Input should be a valid array"
    )


def test_the_embedded_model_with_tools_is_a_400_naming_tools(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        _client(live).chat.completions.create(model="smollm2", messages=USER, tools=TOOLS)  # type: ignore[arg-type]
    body = info.value.body
    assert isinstance(body, dict)
    assert (body["param"], body["code"]) == ("tools", "unsupported_parameter")
    assert "embedded cannot honour 'tools'" in body["message"]
    assert [(a["deployment"], a["outcome"]) for a in body["attempts"]] == [
        ("embedded", "unsupported_parameter")
    ]
    assert fault_server.completions == []


def test_a_route_that_cannot_honour_a_parameter_passes_to_the_next_without_a_breaker_count(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    extra = '\n[[models]]\nname = "agent"\ndeployments = ["embedded", "up"]\n'
    gateway = build_runtime(settings_for(tmp_path, fault_server.base_url, extra), env={})
    fault_server.default = Fault.tool_calls(CALL)
    failures = gateway.settings.defaults.breaker_consecutive_failures
    with LiveServer(gateway) as running:
        key, _ = run(gateway.keys.create("carol", "enterprise"))
        client = openai.OpenAI(base_url=running.v1, api_key=key, max_retries=0)
        for _ in range(failures + 1):
            reply = client.chat.completions.create(model="agent", messages=USER, tools=TOOLS)  # type: ignore[arg-type]
            assert reply.choices[0].message.tool_calls is not None
    assert reply.model_extra is not None
    provenance = reply.model_extra["sincere"]
    assert provenance["deployment"] == "up"
    assert [(a["deployment"], a["outcome"]) for a in provenance["attempts"]] == [
        ("embedded", "unsupported_parameter"),
        ("up", "ok"),
    ]
    assert gateway.cascade.breakers["embedded"].state is BreakerState.CLOSED
    assert len(fault_server.completions) == failures + 1


def test_a_refusal_is_not_the_news_when_the_route_that_could_answer_failed(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    extra = '\n[[models]]\nname = "agent"\ndeployments = ["embedded", "up"]\n'
    gateway = build_runtime(settings_for(tmp_path, fault_server.base_url, extra), env={})
    fault_server.default = Fault.status(503)
    with LiveServer(gateway) as running:
        key, _ = run(gateway.keys.create("carol", "enterprise"))
        client = openai.OpenAI(base_url=running.v1, api_key=key, max_retries=0)
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="agent", messages=USER, tools=TOOLS)  # type: ignore[arg-type]
    assert info.value.status_code == 503  # a retry may succeed: the request was fine
    body = info.value.body
    assert isinstance(body, dict)
    assert [(a["deployment"], a["outcome"]) for a in body["attempts"]] == [
        ("embedded", "unsupported_parameter"),
        ("up", "service_unavailable"),
    ]
