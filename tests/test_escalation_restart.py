"""Nothing lost: a gateway killed with ``kill -9`` after an enterprise request failed, while
the operators' webhook was unreachable, delivers the trigger once it is started again; and
the operator's commands read the same store."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.faults import Fault, FaultServer, refused_port
from tests.webhooks import SECRET, Receiver, verify

WAIT_S = 60


def _config(tmp_path: Path, upstream: str, hook_port: int) -> Path:
    path = tmp_path / "sincere.toml"
    path.write_text(
        f"""
[defaults]
max_retries = 0

[escalation]
retry_schedule_s = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
relay_poll_s = 0.1

[[escalation.webhooks]]
url = "http://127.0.0.1:{hook_port}/hooks/sincere"
secret_env = "SINCERE_WEBHOOK_SECRET"

[[models]]
name = "gpt"
deployments = ["up"]

[[deployments]]
name = "up"
provider = "openai"
base_url = "{upstream}"
model = "up-model"
"""
    )
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "SINCERE_DATA_DIR": str(tmp_path / "data"),
        "SINCERE_WEBHOOK_SECRET": SECRET,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "PYTHONUNBUFFERED": "1",
    }


def _sincere(config: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "sincere.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=WAIT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def _serve(config: Path, tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    log = (tmp_path / "gateway.log").open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sincere.cli",
            "serve",
            "--port",
            str(port),
            "--config",
            str(config),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_env(tmp_path),
        start_new_session=True,
    )
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / "gateway.log").read_text()
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return process
        time.sleep(0.1)
    raise AssertionError((tmp_path / "gateway.log").read_text())


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(WAIT_S)


def test_a_gateway_killed_before_delivering_delivers_after_restart(tmp_path: Path) -> None:
    hook_port = refused_port()  # nobody listens yet: every delivery fails
    with FaultServer(Fault.status(503)) as upstream:
        config = _config(tmp_path, upstream.base_url, hook_port)
        key = (
            _sincere(
                config,
                tmp_path,
                "keys",
                "create",
                "--user",
                "bob",
                "--tier",
                "enterprise",
                "--contact",
                "oncall@customer.example",
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        port = refused_port()
        gateway = _serve(config, tmp_path, port)
        try:
            response = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={"model": "gpt", "messages": [{"role": "user", "content": "Hi"}]},
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            error = response.json()["error"]
            assert error["ticket_id"].startswith("tkt_")
            assert error["contact"] == "oncall@customer.example"
        finally:
            _kill(gateway)  # kill -9: no drain, nothing flushed

        # The operator's view, from the store the dead process left.
        shown = json.loads(
            _sincere(config, tmp_path, "incidents", "show", error["incident_id"]).stdout
        )
        assert shown["state"] == "open"
        assert [t["id"] for t in shown["tickets"]] == [error["ticket_id"]]
        (trigger,) = shown["deliveries"]
        assert trigger["delivered_at"] is None
        listed = _sincere(config, tmp_path, "tickets", "list").stdout
        assert error["ticket_id"] in listed

        with Receiver(port=hook_port) as receiver:
            gateway = _serve(config, tmp_path, port)
            try:
                got = receiver.wait_for(lambda got: any(r.status < 300 for r in got))
            finally:
                _kill(gateway)
        (delivered,) = got
        assert delivered.type == "incident.opened"
        assert delivered.id == trigger["id"]  # the webhook-id written before the kill
        assert verify(SECRET, delivered)
        assert delivered.json["data"]["id"] == error["incident_id"]

        shown = json.loads(
            _sincere(config, tmp_path, "incidents", "show", error["incident_id"]).stdout
        )
        (trigger,) = shown["deliveries"]
        assert trigger["delivered_at"] is not None
        log = trigger["attempt_log"]
        assert log[-1]["status"] == 204
        assert all(a["error"] in ("connection_refused", "connection_error") for a in log[:-1])

        # An operator can send it again: the same webhook-id, a delivery that waits again.
        _sincere(config, tmp_path, "deliveries", "replay", trigger["id"])
        shown = json.loads(
            _sincere(config, tmp_path, "incidents", "show", error["incident_id"]).stdout
        )
        assert shown["deliveries"][0]["delivered_at"] is None
        shown_ticket = json.loads(
            _sincere(config, tmp_path, "tickets", "show", error["ticket_id"]).stdout
        )
        assert shown_ticket["incident_id"] == error["incident_id"]
        assert shown_ticket["contact"] == "oncall@customer.example"
