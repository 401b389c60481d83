"""The sincere command, run as a user runs it: a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.faults import Fault, FaultServer, refused_port


def _env(tmp_path: Path) -> dict[str, str]:
    """A bare environment; PYTHONPATH passes so a checkout's sources run, not an install."""
    env = {"SINCERE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _sincere(*args: str, tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sincere.cli", *args],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=timeout,
        check=False,
    )


def test_chat_json_prints_the_answer_and_its_provenance(tmp_path: Path) -> None:
    result = _sincere(
        "chat", "What is the capital of France?", "--json", "--max-tokens", "32", tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["text"].strip()
    assert payload["request_id"].startswith("req_")
    provenance = payload["provenance"]
    assert provenance["deployment"] == "embedded"
    assert provenance["usage"]["completion_tokens"] > 0
    assert provenance["attempts"][0]["outcome"] == "ok"


def test_chat_streams_the_answer_then_the_provenance(tmp_path: Path) -> None:
    result = _sincere("chat", "Say hello.", "--max-tokens", "16", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    answer, _, provenance = result.stdout.partition("── ")
    assert answer.strip()
    assert "model smollm2 on embedded" in provenance
    assert "Answered by 'embedded'" in result.stdout


def test_a_retryable_failure_prints_the_error_and_exits_75(tmp_path: Path) -> None:
    config = tmp_path / "sincere.toml"
    config.write_text(
        f"""
[[models]]
name = "gpt"
deployments = ["down"]

[[deployments]]
name = "down"
provider = "openai"
base_url = "http://127.0.0.1:{refused_port()}/v1"
model = "gpt-4o-mini"
"""
    )
    result = _sincere(
        "chat", "Hi", "--model", "gpt", "--json", "--config", str(config), tmp_path=tmp_path
    )
    assert result.returncode == 75
    error = json.loads(result.stdout)["error"]
    assert error["status"] == 503
    assert error["retryable"] is True
    assert [a["deployment"] for a in error["attempts"]] == ["down"] * 3  # 2 retries
    assert "text" not in json.loads(result.stdout)


def test_a_non_retryable_failure_exits_1(tmp_path: Path) -> None:
    result = _sincere("chat", "Hi", "--model", "nope", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "Model not found (404)" in result.stderr
    assert "Use one of: smollm2." in result.stderr


def test_a_bad_configuration_exits_78_naming_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[defaults]\ntimeout_s = 'soon'\n")
    result = _sincere("chat", "Hi", "--config", str(config), tmp_path=tmp_path)
    assert result.returncode == 78
    assert str(config) in result.stderr.replace("\n", "")
    assert "defaults.timeout_s" in result.stderr


@pytest.mark.parametrize("command", ["chat", "serve"])
def test_a_base_url_with_credentials_exits_78_before_any_request(
    tmp_path: Path, command: str
) -> None:
    config = tmp_path / "creds.toml"
    config.write_text(
        """
[[models]]
name = "gpt"
deployments = ["up"]

[[deployments]]
name = "up"
provider = "openai"
base_url = "http://user:hunter2-pass@127.0.0.1:9/v1"
model = "m"
"""
    )
    args = ("chat", "Hi", "--model", "gpt") if command == "chat" else ("serve", "--port", "0")
    # A serve that accepted the file would run until this generous bound kills it.
    result = _sincere(*args, "--config", str(config), tmp_path=tmp_path, timeout=120)
    assert result.returncode == 78
    stderr = result.stderr.replace("\n", "")
    assert str(config) in stderr
    assert "deployments[0].base_url" in stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_help_describes_every_option(tmp_path: Path) -> None:
    result = _sincere("chat", "--help", tmp_path=tmp_path)
    assert result.returncode == 0
    for option in ("--model", "--json", "--config", "--max-tokens", "exit code"):
        assert option in result.stdout


def test_a_stream_that_breaks_mid_answer_is_reported_incomplete(tmp_path: Path) -> None:
    with FaultServer(Fault(kind="cut", after_chunks=2, text="one two three")) as server:
        config = tmp_path / "sincere.toml"
        config.write_text(
            f"""
[defaults]
max_retries = 0

[[models]]
name = "gpt"
deployments = ["cut"]

[[deployments]]
name = "cut"
provider = "openai"
base_url = "{server.base_url}"
model = "m"
"""
        )
        result = _sincere(
            "chat", "Hi", "--model", "gpt", "--config", str(config), tmp_path=tmp_path
        )
    assert result.returncode == 75
    assert result.stdout.strip() == "one two"
    assert "the answer above is incomplete" in result.stderr
    assert "──" not in result.stdout  # no provenance: there is no answer


def test_keys_create_list_and_revoke(tmp_path: Path) -> None:
    created = _sincere("keys", "create", "--user", "alice", "--tier", "free", tmp_path=tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("sk-sincere-")
    key_id = created.stderr.split()[1]
    listed = _sincere("keys", "list", tmp_path=tmp_path)
    header, row = listed.stdout.splitlines()  # piped: tab-separated, one key per line
    assert header.split("\t")[:3] == ["id", "prefix", "user"]
    assert row.split("\t")[0] == key_id
    assert row.split("\t")[2] == "alice"
    assert key not in listed.stdout  # never the secret
    assert _sincere("keys", "revoke", key_id, tmp_path=tmp_path).returncode == 0
    assert "revoked" in _sincere("keys", "list", tmp_path=tmp_path).stdout
    again = _sincere("keys", "revoke", key_id, tmp_path=tmp_path)
    assert again.returncode == 1
    bad_tier = _sincere("keys", "create", "--user", "x", "--tier", "gold", tmp_path=tmp_path)
    assert bad_tier.returncode == 2


def test_serve_prints_the_first_admin_key_once_and_it_works(tmp_path: Path) -> None:
    port = refused_port()  # free now; the server takes it

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "sincere.cli", "serve", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(tmp_path),
        )

    def wait_until_up(process: subprocess.Popen[str]) -> list[str]:
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "Uvicorn running" in line:
                return lines
        raise AssertionError("".join(lines))

    first = start()
    try:
        lines = wait_until_up(first)
        key = lines[lines.index("First admin key (shown once, store it now):\n") + 1].strip()
        assert f'base_url="http://127.0.0.1:{port}/v1"' in "".join(lines)
        models = httpx.get(
            f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"}
        )
        assert models.status_code == 200
    finally:
        first.terminate()
        first.wait(timeout=30)
    second = start()
    try:
        assert not any("First admin key" in line for line in wait_until_up(second))
    finally:
        second.terminate()
        second.wait(timeout=30)


def test_serve_with_several_workers_and_no_redis_exits_78_saying_why_and_what_to_set(
    tmp_path: Path,
) -> None:
    # A serve that started its workers would run until this generous bound kills it.
    result = _sincere("serve", "--workers", "3", "--port", "0", tmp_path=tmp_path, timeout=120)
    assert result.returncode == 78
    message = " ".join(result.stderr.split())  # the console wraps long lines
    assert "--workers 3 needs [cluster] redis_url" in message
    assert "each worker keeps its own events, limits and breakers" in message
    assert "a 20-per-minute tier lets 60 through" in message
    assert "SINCERE_REDIS_URL" in message
    assert "[store] url" in message
    assert "SINCERE_DATABASE_URL" in message
    assert "Uvicorn running" not in result.stdout + result.stderr
    assert not (tmp_path / "sincere.db").exists()  # refused before anything was built


def test_a_redis_url_that_is_not_one_exits_78_without_quoting_it(tmp_path: Path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text('[cluster]\nredis_url = "http://user:hunter2-pass@127.0.0.1:6379/0"\n')
    result = _sincere("serve", "--port", "0", "--config", str(config), tmp_path=tmp_path)
    assert result.returncode == 78
    assert "cluster.redis_url" in result.stderr
    assert "redis://" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
