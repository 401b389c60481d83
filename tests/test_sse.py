"""Streams rendered as OpenAI SSE: complete ones end in [DONE], broken ones never do."""

from __future__ import annotations

import json
from pathlib import Path

from sincere.config import load_settings
from sincere.context import ContextFactory
from sincere.llm.cascade import ModelCascade
from sincere.llm.request import ChatRequest
from sincere.runtime import build_cascade
from sincere.server.sse import DONE, openai_sse
from tests.conftest import closing
from tests.faults import Fault, FaultServer


def _cascade(tmp_path: Path, server: FaultServer) -> ModelCascade:
    path = tmp_path / "sincere.toml"
    path.write_text(
        f"""
[defaults]
max_retries = 0
stream_idle_timeout_s = 0.5

[[models]]
name = "gpt"
deployments = ["a"]

[[deployments]]
name = "a"
provider = "openai"
base_url = "{server.base_url}"
model = "m"
"""
    )
    return closing(build_cascade(load_settings(path, env={}), env={}))


async def _render(tmp_path: Path, server: FaultServer, contexts: ContextFactory) -> list[bytes]:
    ctx = contexts.create("alice")
    stream = _cascade(tmp_path, server).stream(ctx, ChatRequest.of("gpt", "Hi"))
    rendered = openai_sse(
        stream, request_id=ctx.request_id, requested_model="gpt", include_usage=True
    )
    return [event async for event in rendered]


def _payloads(events: list[bytes]) -> list[dict[str, object]]:
    return [json.loads(e.removeprefix(b"data: ")) for e in events if e != DONE]


async def test_a_complete_stream_ends_with_finish_reason_provenance_usage_and_done(
    tmp_path: Path, fault_server: FaultServer, contexts: ContextFactory
) -> None:
    fault_server.default = Fault.ok(text="one two")
    events = await _render(tmp_path, fault_server, contexts)
    assert events[-1] == DONE
    payloads = _payloads(events)
    text = "".join(
        c["delta"].get("content", "")  # type: ignore[index, union-attr]
        for p in payloads
        for c in p["choices"]  # type: ignore[attr-defined]
    )
    assert text == "one two"
    finish = payloads[-2]
    assert finish["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    assert finish["sincere"]["deployment"] == "a"  # type: ignore[index]
    assert payloads[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


async def test_a_stream_cut_after_text_ends_with_an_in_band_error_and_no_done(
    tmp_path: Path, fault_server: FaultServer, contexts: ContextFactory
) -> None:
    fault_server.default = Fault(kind="cut", after_chunks=2, text="one two three")
    events = await _render(tmp_path, fault_server, contexts)
    assert DONE not in events
    payloads = _payloads(events)
    assert [p["choices"][0]["delta"]["content"] for p in payloads[:-1]] == ["one", " two"]  # type: ignore[index]
    error = payloads[-1]["error"]
    assert error["type"] == "server_error"  # type: ignore[index]
    assert error["code"] == "upstream_error"  # type: ignore[index]
    assert error["request_id"].startswith("req_")  # type: ignore[index]
    assert all(p.get("choices", [{}])[0].get("finish_reason") is None for p in payloads[:-1])  # type: ignore[union-attr, index]
