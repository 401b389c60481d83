"""A canned apology is not an answer: the guard blocks it as a failed attempt, the fallback
answers, and without one the user hears that an answer was withheld, never the phrase.

As a user meets it: the openai SDK against a real gateway, and `sincere chat` as a
process, each in front of fault servers on 127.0.0.1 (the primary apologises, the spare
answers).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from sincere.config import Settings, load_settings
from sincere.runtime import build_runtime
from tests.faults import Fault, FaultServer
from tests.live import LiveServer, fallback_config
from tests.test_cli import _env

APOLOGY = "I apologize, but I encountered an error processing your request."
SPARE_TEXT = "Paris is the capital of France."


def settings(tmp_path: Path, up: str, spare: str | None) -> Settings:
    return load_settings(
        fallback_config(tmp_path, up, spare), env={"SINCERE_DATA_DIR": str(tmp_path / "data")}
    )


@pytest.fixture
def apologising() -> Iterator[FaultServer]:
    with FaultServer(Fault.ok(text=APOLOGY)) as server:
        yield server


@pytest.fixture
def spare() -> Iterator[FaultServer]:
    with FaultServer(Fault.ok(text=SPARE_TEXT)) as server:
        yield server


def _serve(tmp_path: Path, up: str, spare: str | None) -> tuple[LiveServer, str]:
    rt = build_runtime(settings(tmp_path, up, spare), env={})
    key, _ = asyncio.run(rt.keys.create("carol", "standard"))
    return LiveServer(rt), key


def test_the_sdk_gets_the_fallbacks_answer_with_the_blocked_attempt(
    tmp_path: Path, apologising: FaultServer, spare: FaultServer
) -> None:
    server, key = _serve(tmp_path, apologising.base_url, spare.base_url)
    with server as running:
        client = openai.OpenAI(base_url=running.v1, api_key=key, max_retries=0)
        reply = client.chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "Capital of France?"}]
        )
        chunks = list(
            client.chat.completions.create(
                model="gpt", messages=[{"role": "user", "content": "Again?"}], stream=True
            )
        )
    assert reply.choices[0].message.content == SPARE_TEXT
    provenance = reply.model_extra["sincere"]  # type: ignore[index]
    assert provenance["deployment"] == "spare"
    assert [(a["deployment"], a["outcome"]) for a in provenance["attempts"]] == [
        ("up", "blocked"),
        ("spare", "ok"),
    ]
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == SPARE_TEXT  # not even the start of the apology went out


def test_without_a_fallback_the_sdk_hears_an_answer_was_withheld_and_events_say_failed(
    tmp_path: Path, apologising: FaultServer
) -> None:
    server, key = _serve(tmp_path, apologising.base_url, None)
    with server as running:
        client = openai.OpenAI(base_url=running.v1, api_key=key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(
                model="gpt", messages=[{"role": "user", "content": "Capital of France?"}]
            )
        rid = info.value.response.headers["x-request-id"]
        replay = asyncio.run(running.gateway.bus.replay("carol"))
    assert "withheld" in info.value.message
    assert "apologi" not in info.value.response.text.lower()
    mine = [str(e.type) for e in replay.events if e.request_id == rid]
    assert "request_failed" in mine
    assert "request_completed" not in mine
    assert mine.count("request_failed") == 1


def _chat(tmp_path: Path, config_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sincere.cli",
            "chat",
            "Capital of France?",
            "-m",
            "gpt",
            "-c",
            str(config_path),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=120,
        check=False,
    )


def test_sincere_chat_gets_the_fallbacks_answer_with_the_blocked_attempt(
    tmp_path: Path, apologising: FaultServer, spare: FaultServer
) -> None:
    path = fallback_config(tmp_path, apologising.base_url, spare.base_url)
    result = _chat(tmp_path, path, "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["text"] == SPARE_TEXT
    attempts = payload["provenance"]["attempts"]
    assert [(a["deployment"], a["outcome"]) for a in attempts] == [
        ("up", "blocked"),
        ("spare", "ok"),
    ]
    streamed = _chat(tmp_path, path)
    assert streamed.returncode == 0, streamed.stderr
    assert SPARE_TEXT in streamed.stdout
    assert "apologi" not in (streamed.stdout + streamed.stderr).lower()


def test_sincere_chat_without_a_fallback_exits_75_without_the_phrase(
    tmp_path: Path, apologising: FaultServer
) -> None:
    path = fallback_config(tmp_path, apologising.base_url, None)
    for extra in ((), ("--json",)):
        result = _chat(tmp_path, path, *extra)
        assert result.returncode == 75, result.stderr
        output = (result.stdout + result.stderr).lower()
        assert "withheld" in output
        assert "apologi" not in output
