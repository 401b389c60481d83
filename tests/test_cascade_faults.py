"""The fault matrix: the real cascade against real local servers that misbehave on cue.

Each test asserts what the providers saw (requests, their count and spacing) and what the
user got (an answer with true provenance, or one honest error), never a made-up reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sincere.answer import Answer
from sincere.backends.memory.breakers import InProcessBreakers
from sincere.backends.memory.events import InProcessEventBus
from sincere.config import DEFAULT_FORBIDDEN_PHRASES, load_settings
from sincere.context import ContextFactory, RequestContext
from sincere.errors import (
    ContentRejected,
    ContextTooLong,
    GuardViolation,
    RateLimited,
    RetryAfterSource,
    ServiceError,
    ServiceTimeout,
    ServiceUnavailable,
    UpstreamError,
)
from sincere.events import EventType
from sincere.llm.breaker import BreakerPolicy, BreakerState
from sincere.llm.cascade import ModelCascade
from sincere.llm.provider import Delta
from sincere.llm.request import ChatRequest
from sincere.runtime import build_cascade
from tests.clocks import ManualClock
from tests.conftest import closing
from tests.faults import Fault, FaultServer

KEY = "fault-key-0a1b2c3d4e5f"
DEFAULTS = """
max_retries = 2
timeout_s = 20
connect_timeout_s = 1
first_token_timeout_s = 0.5
stream_idle_timeout_s = 0.5
retry_base_s = 0.05
retry_max_s = 0.5
breaker_consecutive_failures = 3
breaker_open_s = 30
"""


@pytest.fixture
def servers() -> Iterator[tuple[FaultServer, FaultServer, FaultServer]]:
    with FaultServer() as a, FaultServer() as b, FaultServer() as c:
        yield a, b, c


def _cascade(
    tmp_path: Path,
    deployments: list[tuple[str, FaultServer | str, str]],
    models: str,
    defaults: str = "",
    clock: ManualClock | None = None,
) -> ModelCascade:
    """Deployments are (name, server or URL, extra TOML lines); models is raw TOML.

    With ``clock``, the breakers run on it instead of the real clocks."""
    settings = dict(line.split(" = ") for line in (DEFAULTS + defaults).split("\n") if line)
    text = "[defaults]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()) + models
    for name, target, extra in deployments:
        url = target if isinstance(target, str) else target.base_url
        text += f"""
[[deployments]]
name = "{name}"
provider = "openai"
base_url = "{url}"
model = "{name}-upstream"
api_key_env = "FAULT_KEY"
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0
{extra}
"""
    path = tmp_path / "sincere.toml"
    path.write_text(text)
    settings = load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path)})
    breakers = None
    if clock is not None:
        breakers = InProcessBreakers(
            [d.name for d in settings.deployments],
            BreakerPolicy.of(settings.defaults),
            clock=clock.monotonic,
            wall_clock=clock.time,
        )
    cascade = build_cascade(settings, env={"FAULT_KEY": KEY}, breakers=breakers)
    return closing(cascade)


def _pair(
    tmp_path: Path,
    servers: tuple[FaultServer, ...],
    extra_b: str = "",
    defaults: str = "",
    clock: ManualClock | None = None,
) -> ModelCascade:
    """Model 'gpt' on deployment 'a', falling back to model 'backup' on deployment 'b'."""
    models = """
[[models]]
name = "gpt"
deployments = ["a"]
fallbacks = ["backup"]

[[models]]
name = "backup"
deployments = ["b"]
"""
    deployments = [("a", servers[0], ""), ("b", servers[1], extra_b)]
    return _cascade(tmp_path, deployments, models, defaults, clock)


def _gaps(server: FaultServer) -> list[float]:
    times = [r.at for r in server.completions]
    return [b - a for a, b in itertools.pairwise(times)]


async def _ask(cascade: ModelCascade, contexts: ContextFactory, user: str = "alice") -> Answer:
    return await cascade_complete(cascade, contexts.create(user))


async def cascade_complete(cascade: ModelCascade, ctx: RequestContext) -> Answer:
    return await cascade.complete(ctx, ChatRequest.of("gpt", "Tell me a fact."))


async def _stream(
    cascade: ModelCascade, contexts: ContextFactory, user: str = "alice"
) -> tuple[str, Answer | None, ServiceError | None]:
    """What a streaming client saw: the text it received, then the answer or the error."""
    text, answer, error = "", None, None
    try:
        async for item in cascade.stream(contexts.create(user), ChatRequest.of("gpt", "Hi")):
            if isinstance(item, Delta):
                text += item.text
            else:
                answer = item
    except ServiceError as exc:
        error = exc
    return text, answer, error


async def _drain(stream: AsyncIterator[Delta | Answer], into: list[Delta | Answer]) -> None:
    """Collect a stream's items into ``into``, which keeps them when the stream fails."""
    async for item in stream:
        into.append(item)


def _outcomes(answer_or_error: Answer | ServiceError) -> list[tuple[str, str]]:
    attempts = (
        answer_or_error.provenance.attempts
        if isinstance(answer_or_error, Answer)
        else answer_or_error.attempts
    )
    return [(a.deployment, a.outcome) for a in attempts]


# Retries


async def test_429_with_retry_after_waits_as_told_then_succeeds_on_the_same_deployment(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.script(Fault.rate_limited(retry_after=0.4))
    ctx = contexts.create("alice")
    answer = await cascade_complete(_pair(tmp_path, servers), ctx)
    assert answer.provenance.deployment == "a"
    assert _outcomes(answer) == [("a", "rate_limited"), ("a", "ok")]
    assert len(a.completions) == 2
    assert _gaps(a)[0] >= 0.4
    assert b.completions == []
    told = [e.message for e in (await ctx.emitter.bus.replay("alice")).events if e.service == "a"]
    assert told == [
        "a failed (rate_limited); sincere retries it in 0.40 s, as the provider asked (Retry-After)"
    ]


async def test_429_with_retry_after_beyond_the_budget_fails_over_at_once_and_cools_down(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, _b, _ = servers
    a.default = Fault.rate_limited(retry_after=600)
    cascade = _pair(tmp_path, servers)
    first = await _ask(cascade, contexts)
    assert first.provenance.deployment == "b"
    assert _outcomes(first) == [("a", "rate_limited"), ("b", "ok")]
    second = await _ask(cascade, contexts)
    assert _outcomes(second) == [("a", "circuit_open"), ("b", "ok")]
    assert len(a.completions) == 1  # nobody asks again before the provider's time
    skipped = second.provenance.attempts[0]
    assert skipped.retry_after_s is not None
    assert 590 < skipped.retry_after_s <= 600  # the breaker's real schedule
    assert skipped.detail is not None
    assert skipped.detail.startswith(
        "sincere stopped using 'a' for 600 s because the provider asked it to wait 600 s "
        "(Retry-After); it tries again in "
    )


async def test_429_without_retry_after_backs_off_exponentially_with_jitter(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, _, _ = servers
    a.script(Fault.rate_limited(), Fault.rate_limited())
    answer = await _ask(_pair(tmp_path, servers), contexts)
    assert answer.provenance.deployment == "a"
    assert len(a.completions) == 3
    first, second = _gaps(a)
    assert first >= 0.025  # at least half of the 0.05 s ceiling: never back to back
    assert second >= 0.05  # the ceiling doubled


async def test_500_once_then_healthy_is_retried_on_the_same_deployment(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.script(Fault.status(500))
    answer = await _ask(_pair(tmp_path, servers), contexts)
    assert _outcomes(answer) == [("a", "upstream_error"), ("a", "ok")]
    assert b.completions == []


async def test_persistent_503_is_retried_up_to_max_retries_then_fails_over(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault.status(503)
    answer = await _ask(_pair(tmp_path, servers), contexts)
    assert answer.provenance.deployment == "b"
    assert len(a.completions) == 3  # one try and two retries
    assert len(b.completions) == 1


async def test_tcp_reset_before_headers_is_retried(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, _, _ = servers
    a.script(Fault.reset())
    answer = await _ask(_pair(tmp_path, servers), contexts)
    assert _outcomes(answer) == [("a", "upstream_error"), ("a", "ok")]


# Bounded waits


@pytest.mark.parametrize(
    ("fault", "limit"),
    [
        (Fault.hang(), "no response within 1.5 s"),  # connect + first-token limits
        (Fault.slow_first_token(3.0), "no first token within 0.5 s"),
    ],
    ids=["no-response", "slow-first-token"],
)
async def test_a_silent_route_fails_over_within_the_first_token_limit_and_is_not_retried(
    tmp_path: Path,
    servers: tuple[FaultServer, ...],
    contexts: ContextFactory,
    fault: Fault,
    limit: str,
) -> None:
    a, _b, _ = servers
    a.default = fault
    answer = await _ask(_pair(tmp_path, servers), contexts)
    assert answer.provenance.deployment == "b"
    assert _outcomes(answer) == [("a", "timeout"), ("b", "ok")]
    assert len(a.completions) == 1
    # The limit ended the attempt, not the route (its first token comes after 3 s, or never).
    assert limit in (answer.provenance.attempts[0].detail or "")


async def test_a_connection_that_never_completes_fails_over_at_the_connect_limit(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs on 127.0.0.1, so
    # connecting hangs, which is what an unreachable host looks like.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = [socket.socket() for _ in range(4)]
    for filler in fillers:
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(listener.getsockname())
    try:
        hole = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        models = '[[models]]\nname = "gpt"\ndeployments = ["hole", "b"]\n'
        cascade = _cascade(
            tmp_path,
            [("hole", hole, ""), ("b", servers[1], "")],
            models,
            defaults="connect_timeout_s = 0.3\nmax_retries = 0\n",
        )
        answer = await _ask(cascade, contexts)
        assert answer.provenance.deployment == "b"
        assert _outcomes(answer) == [("hole", "timeout"), ("b", "ok")]
        assert "no connection within 0.3 s" in (answer.provenance.attempts[0].detail or "")
    finally:
        for sock in (*fillers, listener):
            sock.close()


async def test_the_overall_deadline_bounds_the_whole_request(
    tmp_path: Path, servers: tuple[FaultServer, ...], bus: InProcessEventBus
) -> None:
    a, b, _ = servers
    a.default = b.default = Fault.hang()
    cascade = _pair(tmp_path, servers, defaults="first_token_timeout_s = 30\n")
    ctx = ContextFactory(bus, default_timeout_s=0.6).create("alice")
    with pytest.raises(ServiceTimeout) as info:
        await cascade.complete(ctx, ChatRequest.of("gpt", "Hi"))
    assert info.value.status == 504
    assert len(b.completions) <= 1


# Requests that cannot succeed as sent


async def test_context_length_exceeded_is_never_resent_to_a_window_that_cannot_hold_it(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    small, same, big = servers
    small.default = Fault.context_length()
    models = '[[models]]\nname = "gpt"\ndeployments = ["small", "same", "big"]\n'
    cascade = _cascade(
        tmp_path,
        [
            ("small", small, "context_window = 8192"),
            ("same", same, "context_window = 8192"),
            ("big", big, "context_window = 128000"),
        ],
        models,
    )
    answer = await _ask(cascade, contexts)
    assert answer.provenance.deployment == "big"
    assert _outcomes(answer) == [
        ("small", "context_length_exceeded"),
        ("same", "skipped"),
        ("big", "ok"),
    ]
    assert (len(small.completions), len(same.completions)) == (1, 0)


async def test_context_length_exceeded_everywhere_is_a_clean_400(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = b.default = Fault.context_length()
    with pytest.raises(ContextTooLong) as info:
        await _ask(_pair(tmp_path, servers, extra_b="context_window = 128000"), contexts)
    assert info.value.status == 400
    assert "largest configured here is 128000 tokens" in info.value.suggestions[0]
    assert (len(a.completions), len(b.completions)) == (1, 1)


async def test_content_policy_is_not_retried_and_the_providers_reason_reaches_the_user(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault.content_policy(message="Your request was flagged for: weapons")
    with pytest.raises(ContentRejected) as info:
        await _ask(_pair(tmp_path, servers), contexts)
    assert info.value.status == 400
    assert "flagged for: weapons" in info.value.message
    assert info.value.to_openai_error()["error"]["code"] == "content_policy_violation"
    assert (len(a.completions), len(b.completions)) == (1, 0)


async def test_content_policy_fails_over_to_another_model_when_the_model_allows_it(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, twin, other = servers
    a.default = Fault.content_policy()
    models = """
[[models]]
name = "gpt"
deployments = ["a", "twin"]
fallbacks = ["other-model"]
failover_on_content_policy = true

[[models]]
name = "other-model"
deployments = ["other"]
"""
    cascade = _cascade(tmp_path, [("a", a, ""), ("twin", twin, ""), ("other", other, "")], models)
    answer = await _ask(cascade, contexts)
    assert answer.provenance.model == "other-model"
    assert len(twin.completions) == 0  # the same model is not asked twice


async def test_a_rejected_key_takes_the_deployment_out_of_rotation_and_never_leaks(
    tmp_path: Path,
    servers: tuple[FaultServer, ...],
    contexts: ContextFactory,
    bus: InProcessEventBus,
) -> None:
    a, _b, _ = servers
    a.default = Fault.invalid_key(echo_key=True)
    cascade = _pair(tmp_path, servers)
    first = await _ask(cascade, contexts)
    second = await _ask(cascade, contexts)
    assert _outcomes(first) == [("a", "provider_auth_failed"), ("b", "ok")]
    assert _outcomes(second) == [("a", "circuit_open"), ("b", "ok")]
    assert len(a.completions) == 1
    seen = json.dumps([first.to_dict(), second.to_dict()])
    seen += json.dumps([e.to_dict() for e in (await bus.replay("alice")).events])
    assert KEY not in seen
    assert a.completions[0].headers["authorization"] == f"Bearer {KEY}"


async def test_model_not_found_at_the_provider_fails_over(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, _, _ = servers
    a.default = Fault.model_not_found()
    answer = await _ask(_pair(tmp_path, servers), contexts)
    assert _outcomes(answer) == [("a", "model_not_found"), ("b", "ok")]


# Streams


async def test_a_stream_cut_before_any_text_fails_over_invisibly(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault.cut(after_chunks=0)
    b.default = Fault.ok(text="all from b")
    text, answer, error = await _stream(_pair(tmp_path, servers), contexts)
    assert error is None
    assert answer is not None
    assert text == answer.text == "all from b"


async def test_stream_cut_after_tokens_continues_on_prefill_capable_fallback(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault(kind="cut", after_chunks=3, text="one two three four five")
    b.default = Fault.ok(text=" four five.")
    text, answer, error = await _stream(
        _pair(tmp_path, servers, "supports_prefill = true"), contexts
    )
    assert error is None
    assert answer is not None
    assert text == answer.text == "one two three four five."
    prefill = b.completions[0].body["messages"][-1]  # type: ignore[index]
    assert prefill == {"role": "assistant", "content": "one two three"}
    p = answer.provenance
    assert (p.deployment, p.continued_from, p.prefill_chars) == ("b", "a", 13)
    assert "a's stream broke after 13 characters and b continued" in p.selection_reasoning
    assert len(a.completions) == 1  # text was sent: no silent retry that would repeat it


async def test_stream_cut_after_tokens_without_a_prefill_fallback_ends_in_an_error(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault(kind="cut", after_chunks=2, text="one two three")
    text, answer, error = await _stream(_pair(tmp_path, servers), contexts)
    assert text == "one two"
    assert answer is None
    assert isinstance(error, UpstreamError)
    assert b.completions == []


async def test_a_prefill_rejection_does_not_hide_the_original_failure(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault(kind="cut", after_chunks=2, text="one two three")
    b.default = Fault.reject_prefill()
    _text, answer, error = await _stream(
        _pair(tmp_path, servers, "supports_prefill = true"), contexts
    )
    assert answer is None
    assert isinstance(error, UpstreamError)
    assert "connection broke" in error.message
    assert _outcomes(error) == [("a", "upstream_error"), ("b", "bad_request")]
    assert len(b.completions) == 1


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (Fault(kind="stall", after_chunks=2, text="one two three"), ServiceTimeout),
        (Fault(kind="malformed_chunk", after_chunks=2, text="one two three"), UpstreamError),
        (Fault(kind="no_done", finish_reason=False, text="one two three"), UpstreamError),
    ],
    ids=["stall", "malformed-chunk", "no-finish-reason"],
)
async def test_a_broken_stream_after_text_is_never_presented_as_complete(
    tmp_path: Path,
    servers: tuple[FaultServer, ...],
    contexts: ContextFactory,
    fault: Fault,
    error_type: type[ServiceError],
) -> None:
    servers[0].default = fault
    text, answer, error = await _stream(_pair(tmp_path, servers), contexts)
    assert text.startswith("one two")
    assert answer is None
    assert isinstance(error, error_type)


async def test_a_stream_with_a_finish_reason_but_no_done_is_finalized_with_usage(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    servers[0].default = Fault(kind="no_done", finish_reason=True, text="complete answer")
    text, answer, error = await _stream(_pair(tmp_path, servers), contexts)
    assert error is None
    assert answer is not None
    assert text == answer.text == "complete answer"
    assert answer.provenance.usage is not None
    assert answer.provenance.usage.completion_tokens == 2


async def test_without_streaming_a_broken_stream_fails_over_invisibly(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault(kind="cut", after_chunks=2, text="one two three")
    b.default = Fault.ok(text="whole answer")
    answer = await _ask(_pair(tmp_path, servers), contexts)
    assert answer.text == "whole answer"
    assert answer.provenance.continued_from is None


# The quality gate


@pytest.mark.parametrize(
    "fault",
    [Fault.empty(), Fault.whitespace(), Fault.degenerate()],
    ids=["empty", "whitespace", "degenerate"],
)
async def test_an_empty_or_degenerate_completion_is_a_failure_and_the_cascade_moves_on(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory, fault: Fault
) -> None:
    a, b, _ = servers
    a.default = fault
    b.default = Fault.ok(text="A real answer.")
    answer = await _ask(_pair(tmp_path, servers), contexts)
    assert answer.text == "A real answer."
    assert _outcomes(answer) == [("a", "quality_rejected"), ("b", "ok")]
    assert len(a.completions) == 1
    detail = answer.provenance.attempts[0].detail
    assert detail is not None
    assert detail.startswith("a: rejected by sincere's quality gate: the completion ")
    # A finished completion was billed for its usage: that cost is on its attempt. A loop
    # is cut as soon as it shows, before any usage report: its bill is unknown, not zero.
    cost = answer.provenance.attempts[0].cost_usd
    assert (cost is None) if fault.kind == "degenerate" else (cost is not None and cost > 0)


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_a_completion_that_only_calls_tools_is_an_answer(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory, streaming: bool
) -> None:
    a, b, _ = servers
    a.default = Fault.tool_calls(("lookup", '{"q": "fact"}'), text="\n\n")  # text: blank lines
    b.default = Fault.ok(text="A real answer.")
    cascade, ctx = _pair(tmp_path, servers), contexts.create("alice")
    request = ChatRequest.of("gpt", "Tell me a fact.")
    if streaming:
        items = [item async for item in cascade.stream(ctx, request)]
        names = [f.name for i in items if isinstance(i, Delta) for f in i.tool_calls if f.name]
        assert names == ["lookup"]
        answer = items[-1]
        assert isinstance(answer, Answer)
    else:
        answer = await cascade.complete(ctx, request)
    assert [(c.name, c.arguments) for c in answer.tool_calls] == [("lookup", '{"q": "fact"}')]
    assert answer.provenance.finish_reason == "tool_calls"
    assert _outcomes(answer) == [("a", "ok")]
    assert b.completions == []


async def test_a_stream_cut_inside_a_tool_call_is_neither_retried_nor_continued(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    # Half a call went out: a retry would repeat its fragments, and a prefill holds text only.
    a, b, _ = servers
    a.default = Fault(kind="cut", after_chunks=2, text="", calls=(("lookup", '{"q": "a fact"}'),))
    cascade = _pair(tmp_path, servers, "supports_prefill = true")
    received: list[Delta | Answer] = []
    stream = cascade.stream(contexts.create("alice"), ChatRequest.of("gpt", "Hi"))
    with pytest.raises(UpstreamError, match="connection broke") as info:
        await _drain(stream, received)
    assert all(isinstance(d, Delta) for d in received)
    assert [f.to_dict() for d in received if isinstance(d, Delta) for f in d.tool_calls] == [
        {
            "index": 0,
            "id": "call_0",
            "type": "function",
            "function": {"name": "lookup", "arguments": ""},
        },
        {"index": 0, "function": {"arguments": '{"q":'}},
    ]
    assert len(a.completions) == 1
    assert b.completions == []
    assert _outcomes(info.value) == [("a", "upstream_error")]


async def test_a_degenerate_stream_is_cut_and_reported_not_finished(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    servers[0].default = Fault.degenerate()
    _text, answer, error = await _stream(_pair(tmp_path, servers), contexts)
    assert answer is None
    assert error is not None
    assert error.error_type == "quality_rejected"
    assert servers[1].completions == []


async def test_finish_reason_length_is_an_answer_marked_as_cut(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    servers[0].default = Fault.ok(text="one two three four five six")
    cascade = _pair(tmp_path, servers)
    answer = await cascade.complete(
        contexts.create("alice"), ChatRequest.of("gpt", "Count.", max_tokens=3)
    )
    assert answer.text == "one two three"
    assert answer.provenance.truncated is True
    assert answer.provenance.to_dict()["finish_reason"] == "length"


# The response guard: part of the quality gate

# The first phrase of the guard's default list, as a canned apology says it.
APOLOGY = DEFAULT_FORBIDDEN_PHRASES[0] + "."


def _alone(tmp_path: Path, server: FaultServer) -> ModelCascade:
    """Model 'gpt' on deployment 'a' only."""
    models = '\n[[models]]\nname = "gpt"\ndeployments = ["a"]\n'
    return _cascade(tmp_path, [("a", server, "")], models)


def _no_part_of_the_phrase(text: str) -> bool:
    """Not even the phrase's first words: "I apologize" never reaches the caller."""
    return "apolog" not in text.lower()


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_a_blocked_answer_is_a_failed_attempt_and_the_fallback_answers(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory, streaming: bool
) -> None:
    a, b, _ = servers
    a.default = Fault.ok(text=APOLOGY)
    b.default = Fault.ok(text="Water boils at 100 degrees Celsius at sea level.")
    cascade = _pair(tmp_path, servers)
    if streaming:
        text, answer, error = await _stream(cascade, contexts)
        assert error is None
        assert text == "Water boils at 100 degrees Celsius at sea level."
    else:
        answer = await _ask(cascade, contexts)
    assert answer is not None
    assert answer.text == "Water boils at 100 degrees Celsius at sea level."
    assert answer.provenance.deployment == "b"
    assert _outcomes(answer) == [("a", "blocked"), ("b", "ok")]
    blocked = answer.provenance.attempts[0]
    assert blocked.detail is not None
    assert "forbidden fallback phrase #1" in blocked.detail
    assert _no_part_of_the_phrase(json.dumps(answer.to_dict()))
    assert "a: blocked" in answer.provenance.selection_reasoning
    assert len(a.completions) == 1  # not retried: the same prompt can draw the same phrase


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_with_no_route_left_the_error_says_an_answer_was_withheld_without_quoting_it(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory, streaming: bool
) -> None:
    servers[0].default = Fault.ok(text=APOLOGY)
    cascade = _alone(tmp_path, servers[0])
    if streaming:
        text, answer, error = await _stream(cascade, contexts)
        assert text == ""  # nothing went out: not even the phrase's beginning
        assert answer is None
    else:
        with pytest.raises(ServiceError) as info:
            await _ask(cascade, contexts)
        error = info.value
    assert isinstance(error, GuardViolation)
    assert "the response guard withheld an answer" in error.message
    assert error.should_retry  # another request may well be answered
    assert _outcomes(error) == [("a", "blocked")]
    for rendering in (error.to_problem(), error.to_openai_error()):
        assert _no_part_of_the_phrase(json.dumps(rendering))


async def test_a_streamed_apology_never_reaches_the_caller_not_even_its_first_words(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    servers[0].default = Fault.ok(text=APOLOGY)
    received: list[Delta | Answer] = []
    stream = _alone(tmp_path, servers[0]).stream(
        contexts.create("alice"), ChatRequest.of("gpt", "Hi")
    )
    with pytest.raises(GuardViolation):
        await _drain(stream, received)
    assert received == []  # today's route sent "I apologize, but I encountered ..." first


async def test_a_phrase_after_streamed_text_ends_as_a_broken_stream_with_what_was_sent(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault.ok(text="Here is what I found. " + APOLOGY)
    text, answer, error = await _stream(_pair(tmp_path, servers), contexts)
    assert text == "Here is what I found."  # up to where the phrase could begin
    assert answer is None
    assert isinstance(error, GuardViolation)
    assert _outcomes(error) == [("a", "blocked")]
    assert b.completions == []  # no prefill: it cannot continue what the caller holds


async def test_a_phrase_after_streamed_text_continues_on_a_prefill_capable_fallback(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault.ok(text="Here is what I found. " + APOLOGY)
    b.default = Fault.ok(text=" Water boils at 100 degrees Celsius.")
    text, answer, error = await _stream(
        _pair(tmp_path, servers, "supports_prefill = true"), contexts
    )
    assert error is None
    assert answer is not None
    assert text == answer.text == "Here is what I found. Water boils at 100 degrees Celsius."
    prefill = b.completions[0].body["messages"][-1]  # type: ignore[index]
    assert prefill == {"role": "assistant", "content": "Here is what I found."}
    assert _outcomes(answer) == [("a", "blocked"), ("b", "ok")]
    assert answer.provenance.continued_from == "a"


async def test_held_back_text_goes_out_once_it_cannot_become_a_phrase(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    # "I apologize, but ..." that turns out to be an honest answer: nothing is lost.
    honest = "I apologize, but I cannot know that without your data."
    servers[0].default = Fault.ok(text=honest)
    text, answer, error = await _stream(_alone(tmp_path, servers[0]), contexts)
    assert error is None
    assert answer is not None
    assert text == answer.text == honest


async def test_blocked_answers_never_open_the_deployments_circuit(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, _b, _ = servers
    a.default = Fault.ok(text=APOLOGY)
    cascade = _pair(tmp_path, servers)  # 3 failures in a row would open it
    for _ in range(5):
        assert (await _ask(cascade, contexts)).provenance.deployment == "b"
    assert len(a.completions) == 5  # any user's prompt could draw the phrase: still asked
    assert cascade.breakers.view("a").state is BreakerState.CLOSED
    assert list(cascade.breakers.view("a").transitions) == []


async def test_a_withheld_answer_is_named_when_the_other_routes_failed_otherwise(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault.ok(text=APOLOGY)
    b.default = Fault.status(503)
    with pytest.raises(ServiceUnavailable) as info:
        await _ask(_pair(tmp_path, servers, defaults="max_retries = 0\n"), contexts)
    assert info.value.message == (
        "no route for 'gpt' could answer (2 attempts); the response guard withheld an answer"
    )
    assert _outcomes(info.value) == [("a", "blocked"), ("b", "service_unavailable")]


# Circuit breakers


async def test_a_primary_that_flaps_down_then_up_is_probed_in_the_shadow_and_returns(
    tmp_path: Path,
    servers: tuple[FaultServer, ...],
    bus: InProcessEventBus,
    contexts: ContextFactory,
) -> None:
    a, _b, _ = servers
    a.default = Fault.status(503)
    clock = ManualClock()
    cascade = _pair(
        tmp_path,
        servers,
        defaults=(
            "max_retries = 0\nbreaker_open_s = 10\nbreaker_max_open_s = 15\n"
            "breaker_fast_probe_for_s = 0\n"
        ),
        clock=clock,
    )
    served = [(await _ask(cascade, contexts)).provenance.deployment for _ in range(5)]
    assert served == ["b"] * 5  # every request answered, by the fallback
    assert len(a.completions) == 3  # 3 to open it; then nobody asks while it is open

    clock.advance(10)  # the open period is over: a probe is due, but no request takes it
    assert cascade.due_probes() == ["a"]
    assert (await _ask(cascade, contexts)).provenance.deployment == "b"
    assert len(a.completions) == 3
    await cascade.probe("a")  # the prober's shadow probe: one token, and it fails
    probe = a.completions[-1]
    assert len(a.completions) == 4
    assert probe.body is not None
    assert probe.body["max_tokens"] == 1
    assert cascade.due_probes() == []  # open again, for longer (capped)
    clock.advance(10)
    assert cascade.due_probes() == []
    assert (await _ask(cascade, contexts)).provenance.deployment == "b"
    assert len(a.completions) == 4

    a.default = Fault.ok(text="primary is back")
    clock.advance(5)
    assert (await _ask(cascade, contexts)).provenance.deployment == "b"  # still the probe's
    await cascade.probe("a")
    assert cascade.breakers.view("a").state is BreakerState.CLOSED
    assert (await _ask(cascade, contexts)).provenance.deployment == "a"
    user_requests = [r for r in a.completions if r.body and r.body.get("max_tokens") != 1]
    assert len(user_requests) == 4  # 3 before the opening, 1 after the probe closed it

    # The user's requests in flight hear of transitions; the probes' reach the registry.
    events = [e for e in (await bus.replay("alice")).events if e.service == "a"]
    opened = [e for e in events if e.type is EventType.SERVICE_UNAVAILABLE]
    assert [e.data["next_probe_in_s"] for e in opened] == [10]
    record = cascade.registry.record("a")
    assert [t.state for t in record.transitions] == [
        "unavailable",
        "degraded",
        "unavailable",
        "degraded",
        "ready",
    ]
    assert [t.after for t in cascade.breakers.view("a").transitions if t.after == "open"] == [
        BreakerState.OPEN
    ] * 2
    assert [
        t.next_probe_in_s for t in cascade.breakers.view("a").transitions if t.after == "open"
    ] == [10, 15]  # the real schedule


async def test_an_open_circuit_is_skipped_without_added_latency_and_its_schedule_is_the_estimate(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = b.default = Fault.status(503)
    cascade = _pair(tmp_path, servers, defaults="max_retries = 0\n")
    for _ in range(3):
        with pytest.raises(ServiceUnavailable):
            await _ask(cascade, contexts)
    with pytest.raises(ServiceUnavailable) as info:
        await _ask(cascade, contexts)
    assert _outcomes(info.value) == [("a", "circuit_open"), ("b", "circuit_open")]
    assert (len(a.completions), len(b.completions)) == (3, 3)
    assert info.value.retry_after is not None
    assert 25 < info.value.retry_after <= 30  # the breakers' own schedule, not a guess
    assert all(a.duration_s < 0.01 for a in info.value.attempts)
    # Who decided: sincere's breakers, after failures it counted; the providers said nothing.
    assert info.value.retry_after_source is RetryAfterSource.CIRCUIT_BREAKER
    assert info.value.attempts[0].detail == (
        "sincere stopped using 'a' for 30 s because 3 calls in a row failed "
        f"(the last: service_unavailable); it tries again in {info.value.retry_after:.0f} s"
    )
    assert not any("provider" in s for s in info.value.suggestions)
    assert info.value.suggestions[0] == (
        f"Retry after {info.value.retry_after:.0f} s, when sincere lets requests through to "
        "the deployment again (each attempt below says why it stopped using it)."
    )


async def test_breaker_transitions_reach_every_user_whose_request_depends_on_the_deployment(
    tmp_path: Path,
    servers: tuple[FaultServer, ...],
    bus: InProcessEventBus,
    contexts: ContextFactory,
) -> None:
    a, b, _ = servers
    a.default = Fault.status(503)
    b.default = Fault.ok(text="slow but fine", delay_s=0.3)
    cascade = _pair(
        tmp_path, servers, defaults="max_retries = 0\nbreaker_consecutive_failures = 2\n"
    )
    # Bob's request is in flight on the fallback when Alice's failure opens a's circuit.
    bob = asyncio.create_task(_ask(cascade, contexts, "bob"))
    await asyncio.sleep(0.1)
    await _ask(cascade, contexts, "alice")
    await bob
    for user in ("alice", "bob"):
        opened = [
            e
            for e in (await bus.replay(user)).events
            if e.service == "a" and e.type is EventType.SERVICE_UNAVAILABLE
        ]
        assert len(opened) == 1, user
        assert opened[0].user_id == user


# Accounting and the one honest error


async def test_failover_accounting_names_who_answered_and_bills_only_real_work(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault.status(503)
    b.default = Fault.ok(text="three words here")
    answer = await _ask(_pair(tmp_path, servers, defaults="max_retries = 0\n"), contexts)
    p = answer.provenance
    assert (p.model, p.deployment, p.upstream_model) == ("backup", "b", "b-upstream")
    assert p.usage is not None
    assert (p.usage.prompt_tokens, p.usage.completion_tokens) == (4, 3)
    assert p.cost_usd == pytest.approx((4 * 1.0 + 3 * 2.0) / 1e6)
    assert [a.cost_usd for a in p.attempts] == [0.0, p.cost_usd]


async def test_when_every_route_is_rate_limited_the_error_is_429_with_the_earliest_retry(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault.rate_limited(retry_after=100)
    b.default = Fault.rate_limited(retry_after=50)
    with pytest.raises(RateLimited) as info:
        await _ask(_pair(tmp_path, servers), contexts)
    assert info.value.status == 429
    assert info.value.retry_after == 50
    assert info.value.retry_after_header() == "50"
    body = json.dumps(info.value.to_openai_error())
    assert "Rate limit reached" in body  # the providers' words, per attempt
    assert "choices" not in body


async def test_when_routes_fail_differently_the_error_is_503_with_a_line_per_attempt(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault.status(503)
    b.default = Fault.hang()
    with pytest.raises(ServiceUnavailable) as info:
        await _ask(_pair(tmp_path, servers, defaults="max_retries = 0\n"), contexts)
    problem = info.value.to_problem()
    assert problem["status"] == 503
    assert [(x["deployment"], x["outcome"]) for x in problem["attempts"]] == [
        ("a", "service_unavailable"),
        ("b", "timeout"),
    ]
    assert "retry_after" not in problem  # nobody knows when: nothing invented


# Upstreams that stream badly


async def test_keep_alive_comments_without_tokens_fail_over_at_the_first_token_limit(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault.keep_alive(interval_s=0.5, comment=": OPENROUTER PROCESSING")
    b.default = Fault.ok(text="from b")
    defaults = "first_token_timeout_s = 1.5\ntimeout_s = 30\n"
    answer = await _ask(_pair(tmp_path, servers, defaults=defaults), contexts)
    assert answer.text == "from b"
    assert _outcomes(answer) == [("a", "timeout"), ("b", "ok")]
    detail = answer.provenance.attempts[0].detail or ""
    assert detail.startswith("a: no first token within 1.5 s; the upstream sent only ")
    assert len(a.completions) == 1


async def test_a_line_over_the_cap_fails_the_attempt_and_the_cascade_moves_on(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault.huge_line(2 << 20)
    b.default = Fault.ok(text="from b")
    answer = await _ask(_pair(tmp_path, servers, defaults="max_retries = 0\n"), contexts)
    assert answer.text == "from b"
    assert _outcomes(answer) == [("a", "upstream_error"), ("b", "ok")]
    assert "a stream line over 1 MiB" in (answer.provenance.attempts[0].detail or "")


async def test_a_proxys_html_502_is_retried_then_failed_over_and_named_as_such(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault.proxy_error(502)
    b.default = Fault.ok(text="from b")
    answer = await _ask(_pair(tmp_path, servers), contexts)
    assert answer.text == "from b"
    assert _outcomes(answer) == [("a", "upstream_error")] * 3 + [("b", "ok")]
    detail = answer.provenance.attempts[0].detail or ""
    assert detail == (
        "a: the upstream (or a proxy in front of it) answered 502 with a non-JSON (text/html) body"
    )


# Who decided what


async def test_after_a_rejected_key_the_wait_is_sincere_s_decision_not_the_provider_s(
    tmp_path: Path,
    servers: tuple[FaultServer, ...],
    contexts: ContextFactory,
    bus: InProcessEventBus,
) -> None:
    a, b, _ = servers
    a.default = Fault.invalid_key(echo_key=False)
    b.default = Fault.status(503)
    cascade = _pair(tmp_path, servers, defaults="max_retries = 0\n")
    with pytest.raises(ServiceUnavailable) as first:
        await _ask(cascade, contexts)  # a's key is rejected: sincere takes a out for 300 s
    assert _outcomes(first.value)[0] == ("a", "provider_auth_failed")
    with pytest.raises(ServiceUnavailable) as info:
        await _ask(cascade, contexts)
    error = info.value
    assert error.retry_after is not None
    assert 295 < error.retry_after <= 300  # auth_failure_open_s, sincere's own setting
    assert error.retry_after_source is RetryAfterSource.CIRCUIT_BREAKER
    assert error.attempts[0].detail == (
        "sincere stopped using 'a' for 300 s because the provider rejected its API key "
        f"(auth_failure_open_s); it tries again in {error.retry_after:.0f} s"
    )
    assert not any("provider said" in s for s in error.suggestions)
    opened = [
        e for e in (await bus.replay("alice")).events if e.type is EventType.SERVICE_UNAVAILABLE
    ]
    assert [e.message for e in opened] == [
        "a: circuit open: sincere stopped using it for 300 s because the provider rejected "
        "its API key (auth_failure_open_s)"
    ]


async def test_a_providers_retry_after_is_credited_to_the_provider(
    tmp_path: Path, servers: tuple[FaultServer, ...], contexts: ContextFactory
) -> None:
    a, b, _ = servers
    a.default = Fault.rate_limited(retry_after=100)
    b.default = Fault.rate_limited(retry_after=50)
    with pytest.raises(RateLimited) as info:
        await _ask(_pair(tmp_path, servers), contexts)
    assert info.value.retry_after == 50
    assert info.value.retry_after_source is RetryAfterSource.PROVIDER
    assert info.value.suggestions[0] == "Retry after 50 s, when the provider said to."
