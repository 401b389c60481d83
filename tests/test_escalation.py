"""Escalation, end to end on a real gateway: failed enterprise requests get real tickets in
one incident per outage, the operators' webhook gets exactly one signed trigger (through
its first two failures) and the resolve once the primary recovers; other tiers get the
status page and no incident."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sincere.config import Settings, load_settings
from sincere.errors import ServiceError
from sincere.identity import Caller
from sincere.llm.request import ChatRequest
from sincere.runtime import Runtime, build_runtime
from tests.conftest import closing
from tests.faults import Fault, FaultServer
from tests.live import LiveServer, run
from tests.webhooks import SECRET, Received, Receiver, verify

ENV = {"SINCERE_WEBHOOK_SECRET": SECRET}
CONTACT = "oncall@customer.example"


def escalation_settings(tmp_path: Path, upstream: str, hook: str) -> Settings:
    """Model 'gpt' on 'up'; a circuit opens after 3 failures and is probed every 0.2 s;
    notifications retried after 0.05 s, three times."""
    path = tmp_path / "sincere.toml"
    path.write_text(
        f"""
[defaults]
max_retries = 0
first_token_timeout_s = 5
stream_idle_timeout_s = 5
breaker_consecutive_failures = 3
breaker_open_s = 0.2

[escalation]
retry_schedule_s = [0.05, 0.05, 0.05]
relay_poll_s = 0.05

[[escalation.webhooks]]
url = "{hook}"
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
    return load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path / "data")})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(fail_first=2) as hooks:
        yield hooks


def _ask(url: str, key: str) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        json={"model": "gpt", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def _of_type(received: list[Received], kind: str) -> list[Received]:
    return [r for r in received if r.type == kind]


def test_failed_enterprise_requests_share_one_incident_with_one_signed_trigger_then_a_resolve(
    tmp_path: Path, fault_server: FaultServer, receiver: Receiver
) -> None:
    fault_server.default = Fault.status(503)
    runtime = build_runtime(escalation_settings(tmp_path, fault_server.base_url, receiver.url), ENV)
    with LiveServer(runtime) as live:
        key, _ = run(runtime.keys.create("bob", "enterprise", contact=CONTACT))
        errors: list[dict[str, Any]] = []
        for _ in range(3):  # the third opens the circuit
            response = _ask(live.url, key)
            assert response.status_code >= 500
            errors.append(response.json()["error"])
        incident_ids = {e["incident_id"] for e in errors}
        assert len(incident_ids) == 1  # one outage, one incident
        assert len({e["ticket_id"] for e in errors}) == 3  # a ticket per request
        for e in errors:
            assert e["ticket_id"].startswith("tkt_")
            assert e["incident_state"] == "open"
            assert e["escalation_reference"] == f"{e['incident_id']}/{e['ticket_id']}"
            assert e["contact"] == CONTACT
        (incident_id,) = incident_ids

        # The trigger: refused twice by the receiver, then accepted, always the same message.
        received = receiver.wait_for(lambda got: any(r.status < 300 for r in got))
        opened = _of_type(received, "incident.opened")
        assert [r.status for r in opened] == [503, 503, 204]
        assert len({r.id for r in opened}) == 1  # the same webhook-id on every retry
        assert all(verify(SECRET, r) for r in received)
        body = opened[-1].json
        assert set(body) == {"type", "timestamp", "data"}
        assert body["data"]["id"] == incident_id
        assert body["data"]["deployment"] == "up"
        assert body["data"]["state"] == "open"
        assert SECRET.removeprefix("whsec_") not in opened[-1].body.decode()

        # The primary recovers: its probe closes the circuit, and the resolve follows.
        fault_server.default = Fault.ok()
        received = receiver.wait_for(lambda got: _of_type(got, "incident.resolved") != [])
        kinds = [r.type for r in received if r.status < 300]
        assert kinds.count("incident.opened") == 1  # exactly one trigger
        assert kinds[-1] == "incident.resolved"
        resolved = _of_type(received, "incident.resolved")[-1].json["data"]
        assert (resolved["id"], resolved["state"]) == (incident_id, "resolved")
        assert resolved["resolved_at"] is not None
        assert resolved["ticket_count"] == 3

        detail = run(runtime.escalations.incident(incident_id))
        assert detail is not None
        trigger = next(d for d in detail.deliveries if d.event_type == "incident.opened")
        attempts = detail.attempts[trigger.id]
        assert [(a.status, a.error) for a in attempts] == [
            (503, "http_503"),
            (503, "http_503"),
            (204, None),
        ]
        assert all(a.latency_ms >= 0 for a in attempts)
        assert trigger.delivered_at is not None


def test_free_and_standard_failures_open_no_incident_and_link_the_status_page(
    tmp_path: Path, fault_server: FaultServer, receiver: Receiver
) -> None:
    fault_server.default = Fault.status(503)
    runtime = build_runtime(escalation_settings(tmp_path, fault_server.base_url, receiver.url), ENV)
    with LiveServer(runtime) as live:
        for tier in ("free", "standard"):
            key, _ = run(runtime.keys.create(f"user-{tier}", tier, contact=CONTACT))
            error = _ask(live.url, key).json()["error"]
            assert error["status_url"] == live.url + "/status"
            assert "ticket_id" not in error
            assert "contact" not in error
        assert run(runtime.escalations.incidents()) == []
        assert run(runtime.escalations.tickets()) == []
    assert receiver.all() == []


ENTERPRISE = Caller("carol", "enterprise", "user", None)  # type: ignore[arg-type]


async def _fail(rt: Runtime, caller: Caller = ENTERPRISE) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        await rt.pipeline.complete(caller, ChatRequest.of("gpt", "Hi"), surface="test")
    return info.value


async def test_with_the_escalation_flag_off_a_failure_makes_no_ticket(
    tmp_path: Path, fault_server: FaultServer, receiver: Receiver
) -> None:
    fault_server.default = Fault.status(503)
    enabled = [False]
    settings = escalation_settings(tmp_path, fault_server.base_url, receiver.url)
    rt = closing(build_runtime(settings, ENV, escalation_enabled=lambda: enabled[0]))
    error = await _fail(rt)
    assert "ticket_id" not in error.members
    assert await rt.escalations.incidents() == []
    enabled[0] = True  # turned back on: the next failure escalates
    error = await _fail(rt)
    assert error.members["ticket_id"].startswith("tkt_")
    assert "contact" not in error.members  # no contact on this caller: none is made up


async def test_an_answer_from_the_failing_deployment_resolves_its_incident(
    tmp_path: Path, fault_server: FaultServer, receiver: Receiver
) -> None:
    # One failure does not open the circuit, so no breaker closes: the answer is the news.
    fault_server.script(Fault.status(503))
    settings = escalation_settings(tmp_path, fault_server.base_url, receiver.url)
    rt = closing(build_runtime(settings, ENV))
    error = await _fail(rt)
    incident_id = error.members["incident_id"]
    await rt.pipeline.complete(ENTERPRISE, ChatRequest.of("gpt", "Hi"), surface="test")
    (incident,) = await rt.escalations.incidents()
    assert (incident.id, incident.state) == (incident_id, "resolved")
    relay = asyncio.create_task(rt.relay.run())
    try:
        got = await receiver.await_for(lambda got: _of_type(got, "incident.resolved") != [])
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
    accepted = [r.type for r in got if r.status < 300]
    assert accepted.count("incident.opened") == 1
    assert accepted[-1] == "incident.resolved"


async def test_a_tier_limit_refusal_is_no_outage(
    tmp_path: Path, fault_server: FaultServer, receiver: Receiver
) -> None:
    settings = escalation_settings(tmp_path, fault_server.base_url, receiver.url)
    limits = settings.tiers["enterprise"].model_copy(update={"requests_per_minute": 1})
    settings = settings.model_copy(update={"tiers": {**settings.tiers, "enterprise": limits}})
    rt = closing(build_runtime(settings, ENV))
    await rt.pipeline.complete(ENTERPRISE, ChatRequest.of("gpt", "Hi"), surface="test")
    error = await _fail(rt)
    assert error.status == 429
    assert "ticket_id" not in error.members
    assert await rt.escalations.incidents() == []


async def test_pagerduty_gets_one_trigger_with_the_routing_key_from_the_environment(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    with Receiver() as pagerduty:
        fault_server.default = Fault.status(503)
        path = tmp_path / "pd.toml"
        path.write_text(
            f"""
[defaults]
max_retries = 0

[escalation]
relay_poll_s = 0.05

[escalation.pagerduty]
url = "{pagerduty.url}"
routing_key_env = "PAGERDUTY_ROUTING_KEY"

[[models]]
name = "gpt"
deployments = ["up"]

[[deployments]]
name = "up"
provider = "openai"
base_url = "{fault_server.base_url}"
model = "up-model"
"""
        )
        settings = load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path / "data")})
        rt = closing(build_runtime(settings, {"PAGERDUTY_ROUTING_KEY": "R0UT1NGKEY"}))
        relay = asyncio.create_task(rt.relay.run())
        try:
            for _ in range(2):
                await _fail(rt)
            fault_server.default = Fault.ok()
            await rt.pipeline.complete(ENTERPRISE, ChatRequest.of("gpt", "Hi"), surface="test")
            got = await pagerduty.await_for(lambda got: len(got) == 2)
        finally:
            relay.cancel()
            await asyncio.gather(relay, return_exceptions=True)
        trigger, resolve = (r.json for r in got)
        assert trigger["event_action"] == "trigger"
        assert trigger["routing_key"] == "R0UT1NGKEY"
        assert trigger["dedup_key"] == "sincere/up/" + trigger["payload"]["class"]
        assert resolve == {
            "event_action": "resolve",
            "dedup_key": trigger["dedup_key"],
            "routing_key": "R0UT1NGKEY",
        }
        (incident,) = await rt.escalations.incidents()
        detail = await rt.escalations.incident(incident.id)
        assert detail is not None
        assert all("R0UT1NGKEY" not in d.payload for d in detail.deliveries)  # never stored
