"""No flag and no setting can make sincere answer with text that no model produced.

Every combination of the flags (2^5), set in the store of a whole runtime (so a part that
reads ``Runtime.flags`` later is covered too), for the enterprise tier (which escalates)
and through the request pipeline: a request whose every route fails gets a ServiceError
and never an answer, and an answered request's text is exactly what the upstream models
(the fault servers) sent.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from sincere.answer import Answer
from sincere.config import load_settings
from sincere.context import Tier
from sincere.errors import ServiceError
from sincere.identity import Caller, KeyRole
from sincere.llm.provider import Delta
from sincere.llm.request import ChatRequest
from sincere.runtime import Runtime, build_runtime
from sincere.tiers.flags import Flag
from tests.conftest import closing
from tests.faults import Fault, FaultServer

KEY = "fault-key-0a1b2c3d4e5f"
COMBINATIONS = list(itertools.product([True, False], repeat=len(Flag)))
CALLER = Caller("erin", Tier.ENTERPRISE, KeyRole.USER, key_id=None)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FaultServer, FaultServer]]:
    with FaultServer() as a, FaultServer() as b:
        yield a, b


def _runtime(tmp_path: Path, a: FaultServer, b: FaultServer) -> Runtime:
    """Model 'gpt' on 'a', falling back to 'backup' on 'b' (which takes a prefill)."""
    text = "[defaults]\nmax_retries = 0\nfirst_token_timeout_s = 5\nstream_idle_timeout_s = 5\n"
    text += "breaker_consecutive_failures = 100\n"  # every scenario reaches its upstreams
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
    settings = load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path / "data")})
    return closing(build_runtime(settings, env={"FAULT_KEY": KEY}))


async def _stream(rt: Runtime) -> tuple[str, Answer | None, ServiceError | None]:
    text, answer, error = "", None, None
    try:
        stream = rt.pipeline.stream(CALLER, ChatRequest.of("gpt", "Hi"), surface="test")
        async for item in stream:
            if isinstance(item, Delta):
                text += item.text
            else:
                answer = item
    except ServiceError as exc:
        error = exc
    return text, answer, error


async def _complete(rt: Runtime) -> Answer | ServiceError:
    try:
        return await rt.pipeline.complete(CALLER, ChatRequest.of("gpt", "Hi"), surface="test")
    except ServiceError as exc:
        return exc


@pytest.mark.parametrize(
    "values",
    COMBINATIONS,
    ids=["".join("1" if on else "0" for on in values) for values in COMBINATIONS],
)
async def test_no_flag_combination_makes_an_answer_no_model_gave(
    tmp_path: Path, servers: tuple[FaultServer, FaultServer], values: tuple[bool, ...]
) -> None:
    a, b = servers
    rt = _runtime(tmp_path, a, b)
    for flag, on in zip(Flag, values, strict=True):
        if not on:
            await rt.flags.set(flag, False, "cli:test")
    assert [rt.flags.enabled(flag) for flag in Flag] == list(values)

    # Every route fails, before any text: an error, never an answer.
    a.default, b.default = Fault.status(503), Fault.status(500)
    assert isinstance(await _complete(rt), ServiceError)
    text, answer, error = await _stream(rt)
    assert (text, answer) == ("", None)
    assert isinstance(error, ServiceError)

    # Every route fails after text went out: what the caller holds is a's text, and an error.
    a.default = Fault(kind="cut", after_chunks=2, text="one two three")
    b.default = Fault.reject_prefill()
    text, answer, error = await _stream(rt)
    assert (text, answer) == ("one two", None)
    assert isinstance(error, ServiceError)

    # Answered: the text is exactly what the models sent, nothing added, nothing smoothed.
    a.default, b.default = Fault.status(503), Fault.ok(text="Paris is in France.")
    answered = await _complete(rt)
    assert isinstance(answered, Answer)
    assert answered.text == "Paris is in France."
    assert answered.provenance.deployment == "b"

    a.default = Fault(kind="cut", after_chunks=3, text="one two three four five")
    b.default = Fault.ok(text=" four five.")
    text, answer, error = await _stream(rt)
    if rt.flags.enabled(Flag.STREAM_CONTINUATION):
        assert error is None
        assert answer is not None
        assert text == answer.text == "one two three" + " four five."  # a's, then b's
        assert answer.provenance.continued_from == "a"
    else:
        assert (text, answer) == ("one two three", None)
        assert isinstance(error, ServiceError)
