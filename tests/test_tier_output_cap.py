"""Each tier caps the output tokens of one request (``[tiers.NAME] max_output_tokens``)."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from sincere.config import load_settings
from sincere.context import ContextFactory
from sincere.errors import MaxTokensExceeded
from sincere.llm.request import ChatRequest
from sincere.runtime import build_cascade
from tests.conftest import closing
from tests.faults import Fault, FaultServer
from tests.live import LiveGateway, settings_for


def _client(live: LiveGateway, who: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.v1, api_key=live.keys[who], max_retries=0)


def test_the_defaults_cap_free_and_standard_and_leave_enterprise_uncapped(tmp_path: Path) -> None:
    tiers = load_settings(None, env={"SINCERE_DATA_DIR": str(tmp_path)}).tiers
    assert tiers["free"].max_output_tokens == 512
    assert tiers["standard"].max_output_tokens == 4096
    assert tiers["enterprise"].max_output_tokens is None


def test_a_file_may_set_one_key_of_a_tier_and_keep_the_others(tmp_path: Path) -> None:
    path = tmp_path / "sincere.toml"
    path.write_text(
        "[tiers.free]\nrequests_per_minute = 5\n\n[tiers.enterprise]\nmax_output_tokens = 8000\n"
    )
    tiers = load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path)}).tiers
    assert (tiers["free"].requests_per_minute, tiers["free"].concurrent_requests) == (5, 2)
    assert tiers["free"].max_output_tokens == 512
    assert tiers["enterprise"].max_output_tokens == 8000
    assert tiers["enterprise"].requests_per_minute == 600


def test_a_free_request_above_the_cap_is_a_400_naming_max_tokens(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _client(live, "alice").chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "A long story"}], max_tokens=1200
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "max_tokens"
    assert error["code"] == "max_tokens_exceeded"
    assert error["type"] == "invalid_request_error"
    assert error["message"] == (
        "max_tokens 1200 is more than sincere's free tier allows (512 output tokens per request)"
    )
    assert error["request_id"] == caught.value.response.headers["x-request-id"]
    assert fault_server.requests == []  # nothing was generated for it


def test_max_completion_tokens_is_held_to_the_same_cap(live: LiveGateway) -> None:
    response = httpx.post(
        f"{live.v1}/chat/completions",
        headers={"authorization": f"Bearer {live.keys['alice']}"},
        json={
            "model": "gpt",
            "messages": [{"role": "user", "content": "A long story"}],
            "max_completion_tokens": 513,
        },
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_completion_tokens"


def test_a_free_request_without_max_tokens_gets_the_cap_and_provenance_says_so(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok(text="Once upon a time.")
    reply = _client(live, "alice").chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "A story"}]
    )
    assert fault_server.requests[0].body is not None
    assert fault_server.requests[0].body["max_tokens"] == 512
    assert reply.model_extra is not None
    assert reply.model_extra["sincere"]["tier_max_tokens"] == 512


def test_a_request_within_the_cap_goes_as_asked_and_enterprise_is_not_capped(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok(text="Once upon a time.")
    within = _client(live, "alice").chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "A story"}], max_tokens=512
    )
    uncapped = _client(live, "bob").chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "A story"}]
    )
    first, second = (r.body for r in fault_server.requests)
    assert first is not None
    assert second is not None
    assert first["max_tokens"] == 512
    assert "max_tokens" not in second
    for reply in (within, uncapped):
        assert reply.model_extra is not None
        assert "tier_max_tokens" not in reply.model_extra["sincere"]


async def test_the_library_path_enforces_the_cap_too(
    tmp_path: Path, fault_server: FaultServer, contexts: ContextFactory
) -> None:
    cascade = closing(build_cascade(settings_for(tmp_path, fault_server.base_url), env={}))
    ctx = contexts.create("carol", "free")
    with pytest.raises(MaxTokensExceeded) as caught:
        await cascade.complete(ctx, ChatRequest.of("gpt", "Hi", max_tokens=4097))
    assert caught.value.status == 400
    assert caught.value.context.request_id == ctx.request_id
    assert caught.value.context.tier == "free"
    assert caught.value.suggestions == (
        "Ask for at most 512 tokens, or use a key of a higher tier.",
    )
