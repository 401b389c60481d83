"""The operator routes as an operator and a load balancer see them, over real HTTP."""

from __future__ import annotations

import gc
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import create_engine

from sincere.backends.memory.breakers import InProcessBreakers
from sincere.backends.sql import Database, SqlServiceHistory
from sincere.llm.breaker import BreakerPolicy, BreakerState
from sincere.runtime import Runtime, build_runtime
from sincere.server.app import freeze_startup_heap
from tests.clocks import ManualClock
from tests.faults import Fault, FaultServer, refused_port
from tests.live import LiveGateway, LiveServer, run, settings_for

HEALTH_JSON = "application/health+json"


def _get(live: LiveGateway, path: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {live.keys[key]}"} if key else {}
    return httpx.get(live.url + path, headers=headers, timeout=10)


def _open_the_upstream_circuit(live: LiveGateway, fault_server: FaultServer) -> None:
    fault_server.default = Fault.status(503)
    breaker = live.gateway.cascade.breakers["up"]
    with httpx.Client(
        base_url=live.v1, headers={"Authorization": f"Bearer {live.keys['alice']}"}, timeout=10
    ) as client:
        for _ in range(10):
            response = client.post(
                "/chat/completions",
                json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert response.status_code >= 500
            if breaker.state is BreakerState.OPEN:
                return
    pytest.fail(f"the circuit did not open; it is {breaker.state}")


def _assert_no_upstream_address(live: LiveGateway, fault_server: FaultServer, text: str) -> None:
    port = fault_server.base_url.rstrip("/").rsplit(":", 1)[1].split("/")[0]
    assert fault_server.base_url not in text
    assert f":{port}" not in text
    assert live.gateway.settings.deployment("up").base_url not in text


def test_livez_passes_without_touching_anything(live: LiveGateway) -> None:
    response = _get(live, "/livez")
    assert response.status_code == 200
    assert response.headers["content-type"] == HEALTH_JSON
    assert response.json() == {"status": "pass"}


def test_readyz_passes_when_the_store_answers_and_a_circuit_is_closed(live: LiveGateway) -> None:
    response = _get(live, "/readyz")
    assert response.status_code == 200
    assert response.headers["content-type"] == HEALTH_JSON
    assert response.json()["status"] == "pass"


def test_health_passes_with_a_check_per_circuit_and_a_measured_store(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    response = _get(live, "/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == HEALTH_JSON
    body = response.json()
    assert body["status"] == "pass"
    assert body["version"]
    assert body["serviceId"] == "sincere"
    assert set(body["checks"]) == {"up:circuit", "embedded:circuit", "store:responseTime"}
    [circuit] = body["checks"]["up:circuit"]
    assert circuit["componentType"] == "llm-deployment"
    assert (circuit["status"], circuit["observedValue"]) == ("pass", "closed")
    assert "output" not in circuit
    assert "affectedEndpoints" not in circuit
    datetime.fromisoformat(circuit["time"])
    [store] = body["checks"]["store:responseTime"]
    assert (store["componentType"], store["status"], store["observedUnit"]) == (
        "datastore",
        "pass",
        "ms",
    )
    assert isinstance(store["observedValue"], float)
    assert store["observedValue"] > 0  # measured, so never exactly zero
    _assert_no_upstream_address(live, fault_server, response.text)


def test_an_open_circuit_shows_on_health_and_status_from_the_breaker_and_the_store(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    _open_the_upstream_circuit(live, fault_server)
    breaker = live.gateway.cascade.breakers["up"]
    opened = breaker.transitions[-1]

    health = _get(live, "/health")
    assert health.status_code == 200  # the embedded deployment can still serve
    body = health.json()
    assert body["status"] == "warn"
    [circuit] = body["checks"]["up:circuit"]
    assert (circuit["status"], circuit["observedValue"]) == ("fail", "open")
    assert circuit["output"].startswith(opened.reason)
    assert "calls in a row failed" in circuit["output"]
    assert datetime.fromisoformat(circuit["time"]).timestamp() == pytest.approx(opened.at, abs=1e-3)
    assert body["checks"]["embedded:circuit"][0]["status"] == "pass"
    assert _get(live, "/readyz").status_code == 200

    status = _get(live, "/status", "admin")  # an admin sees the messages too
    assert status.status_code == 200
    page = status.json()
    assert page["status"] == "major"
    services = {s["name"]: s for s in page["services"]}
    up = services["up"]
    assert up["kind"] == "llm-deployment"
    assert up["state"] == "major_outage"
    assert 0 < up["next_probe_in_s"] <= live.gateway.settings.defaults.breaker_open_s
    recorded = run(live.gateway.history.recent("up", 10))
    assert [t["message"] for t in up["recent_transitions"]] == [t.message for t in recorded]
    newest = up["recent_transitions"][0]
    assert newest["state"] == "major_outage"
    assert "circuit open" in newest["message"]
    assert up["since_basis"] == "transition"
    assert datetime.fromisoformat(up["since"]).timestamp() == pytest.approx(opened.at, abs=1e-3)
    embedded = services["embedded"]
    assert embedded["state"] == "operational"
    assert embedded["since_basis"] == "process_start"  # no transition seen in this process
    assert datetime.fromisoformat(embedded["since"]).timestamp() == pytest.approx(
        live.gateway.started_at, abs=1e-3
    )
    assert "next_probe_in_s" not in embedded
    assert embedded["recent_transitions"] == []

    for response in (health, status):
        _assert_no_upstream_address(live, fault_server, response.text)


def test_every_circuit_open_fails_health_and_readiness(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    _open_the_upstream_circuit(live, fault_server)
    embedded = live.gateway.cascade.breakers["embedded"]
    embedded.record_failure("test: forced open", open_for_s=60)
    try:
        health = _get(live, "/health")
        assert health.status_code == 503
        assert health.headers["content-type"] == HEALTH_JSON
        assert health.json()["status"] == "fail"
        ready = _get(live, "/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "fail"
        assert ready.json()["output"] == "no deployment's circuit is closed"
        assert _get(live, "/status").json()["status"] == "critical"
    finally:
        embedded.record_success()


def test_a_store_that_cannot_be_opened_fails_health_readiness_and_status(
    live: LiveGateway, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir" / "sincere.db"
    broken = Database(create_engine(f"sqlite:///{missing}"), f"sqlite:///{missing}")
    gateway = live.gateway
    database, history = gateway.database, gateway.history
    gateway.database, gateway.history = broken, SqlServiceHistory(broken)
    try:
        health = _get(live, "/health")
        ready = _get(live, "/readyz")
        status = _get(live, "/status")
    finally:
        gateway.database, gateway.history = database, history
        broken.engine.dispose()
    assert health.status_code == 503
    assert health.json()["status"] == "fail"
    [store] = health.json()["checks"]["store:responseTime"]
    assert store["status"] == "fail"
    assert "observedValue" not in store  # nothing was measured
    assert store["output"] == "SELECT 1 failed: OperationalError"
    assert ready.status_code == 503
    assert ready.json()["output"].startswith("store: SELECT 1 failed")
    assert status.status_code == 503
    assert status.headers["content-type"] == "application/problem+json"
    assert status.json()["error_type"] == "data_unavailable"
    for response in (health, ready, status):
        assert str(tmp_path) not in response.text


@pytest.mark.parametrize(("key", "expected"), [(None, 401), ("alice", 403)])
def test_metrics_needs_an_admin_key(live: LiveGateway, key: str | None, expected: int) -> None:
    response = _get(live, "/metrics", key)
    assert response.status_code == expected
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == expected


def test_metrics_for_an_admin_are_prometheus_text(live: LiveGateway) -> None:
    response = _get(live, "/metrics", "admin")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert 'sincere_breaker_state{deployment="up"} 0.0' in response.text
    assert "sincere_mock_responses_blocked_total" in response.text


def test_the_openapi_schema_declares_the_failure_statuses(live: LiveGateway) -> None:
    paths: dict[str, Any] = _get(live, "/openapi.json").json()["paths"]
    assert "503" in paths["/readyz"]["get"]["responses"]
    assert HEALTH_JSON in paths["/health"]["get"]["responses"]["503"]["content"]
    assert {"401", "403"} <= set(paths["/metrics"]["get"]["responses"])


def test_the_startup_heap_is_kept_out_of_full_collections() -> None:
    # What `sincere serve` and each worker call once the app is built: a full collection
    # then no longer walks the modules, the app and the gateway (docs/benchmarks.md, p99).
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 10_000  # the imported modules alone
    finally:
        gc.unfreeze()


def test_a_model_that_fails_to_load_is_an_outage_before_its_circuit_opens(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    broken = tmp_path / "models" / "broken.gguf"
    broken.parent.mkdir()
    broken.write_bytes(b"not a GGUF file " * 64)
    extra = f"""
[[models]]
name = "local"
deployments = ["broken"]

[[deployments]]
name = "broken"
provider = "embedded"
model_path = "{broken}"
"""
    gateway = build_runtime(settings_for(tmp_path, fault_server.base_url, extra), env={})
    with LiveServer(gateway) as running:
        key, _ = run(gateway.keys.create("erin", "free"))
        admin, _ = run(gateway.keys.create("ops", "enterprise", "admin"))
        answer = httpx.post(
            running.v1 + "/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "local", "messages": [{"role": "user", "content": "Hi"}]},
        )
        page = httpx.get(
            running.url + "/status", headers={"Authorization": f"Bearer {admin}"}
        ).json()
    assert answer.status_code == 503
    assert gateway.cascade.breakers["broken"].state is BreakerState.CLOSED  # one failure
    service = {s["name"]: s for s in page["services"]}["broken"]
    assert service["state"] == "major_outage"
    assert page["status"] == "major"
    newest = service["recent_transitions"][0]
    assert newest["state"] == "major_outage"
    assert "broken.gguf could not be loaded" in newest["message"]
    told = [e.message for e in run(gateway.bus.replay("erin")).events if e.service == "broken"]
    assert any("could not be loaded" in m for m in told)
    for public in (answer.text, json.dumps(page), *told):
        assert str(broken.parent) not in public  # the file's name, never where it lives


def _wait_until(condition: Callable[[], bool], what: str, deadline_s: float = 60) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after a generous deadline."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {deadline_s:g} s")
        time.sleep(0.05)


def test_a_probe_in_flight_is_half_open_and_still_no_circuit_users_may_pass(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    clock = ManualClock()  # the breakers' time moves when the test says so
    settings = settings_for(tmp_path, fault_server.base_url)
    breakers = InProcessBreakers(
        [d.name for d in settings.deployments],
        BreakerPolicy.of(settings.defaults),
        clock=clock.monotonic,
        wall_clock=clock.time,
    )
    gateway = build_runtime(settings, env={}, breakers=breakers)
    with LiveServer(gateway) as live:
        live.keys["alice"], _ = run(gateway.keys.create("alice", "free"))
        live.keys["admin"], _ = run(gateway.keys.create("admin", "enterprise", "admin"))
        _open_the_upstream_circuit(live, fault_server)
        breakers["embedded"].record_failure("test: kept out", open_for_s=600)
        fault_server.default = Fault.slow_first_token(30)  # the probe will wait: watch it
        clock.advance(30)  # up's probe is due: the prober takes it
        _wait_until(lambda: breakers["up"].state is BreakerState.HALF_OPEN, "a probe running")
        probing = breakers["up"].transitions[-1]
        ready = _get(live, "/readyz")
        health = _get(live, "/health").json()
        page = _get(live, "/status").json()
    assert ready.status_code == 503  # a probe is no way in for a user's request
    assert ready.json()["output"] == "no deployment's circuit is closed"
    [circuit] = health["checks"]["up:circuit"]
    assert (circuit["status"], circuit["observedValue"]) == ("warn", "half_open")
    assert circuit["output"].endswith("; a probe is testing it now")
    service = {s["name"]: s for s in page["services"]}["up"]
    assert service["state"] == "degraded_performance"
    since = datetime.fromisoformat(service["since"]).timestamp()
    assert since == pytest.approx(probing.at, abs=1e-3)
    assert "next_probe_in_s" not in service


def _tuned_gateway(tmp_path: Path, fault_server: FaultServer, **defaults: float) -> Runtime:
    settings = settings_for(tmp_path, fault_server.base_url)
    changed = settings.defaults.model_copy(update=defaults)
    return build_runtime(settings.model_copy(update={"defaults": changed}), env={})


def test_without_traffic_the_prober_recovers_an_open_deployment(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    gateway = _tuned_gateway(tmp_path, fault_server, breaker_open_s=1, breaker_max_open_s=60)
    breaker = gateway.cascade.breakers["up"]
    embedded = gateway.cascade.breakers["embedded"]
    with LiveServer(gateway) as live:
        live.keys["alice"], _ = run(gateway.keys.create("alice", "enterprise"))
        live.keys["admin"], _ = run(gateway.keys.create("ops", "enterprise", "admin"))
        embedded.record_failure("test: kept out", open_for_s=600)  # readiness is up's alone
        try:
            _open_the_upstream_circuit(live, fault_server)
            chats = len(fault_server.completions)  # from here on: no user's request at all

            def reopened() -> bool:
                return any(
                    t.before is BreakerState.HALF_OPEN and t.after is BreakerState.OPEN
                    for t in breaker.transitions
                )

            _wait_until(reopened, "a failed background probe re-opening the circuit")
            again = breaker.transitions[-1]
            assert again.after is BreakerState.OPEN
            assert again.next_probe_in_s == pytest.approx(1, abs=0.05)  # the fast schedule
            assert _get(live, "/readyz").status_code == 503

            fault_server.default = Fault.ok()  # the upstream is healthy again
            _wait_until(
                lambda: (
                    _get(live, "/readyz").status_code == 200
                    and {s["name"]: s for s in _get(live, "/status").json()["services"]}["up"][
                        "state"
                    ]
                    == "operational"
                ),
                "readiness and an operational status",
            )
            page = _get(live, "/status", "admin").json()
            exposition = _get(live, "/metrics", "admin").text
        finally:
            embedded.record_success()
    probes = fault_server.completions[chats:]
    assert len(probes) >= 2  # the failed probe and the one that passed
    assert all(p.body and p.body["max_tokens"] == 1 for p in probes)  # one token each
    assert breaker.state is BreakerState.CLOSED
    up = {s["name"]: s for s in page["services"]}["up"]
    assert up["since_basis"] == "transition"
    newest = up["recent_transitions"][0]  # recorded in the history like any transition
    assert newest["state"] == "operational"
    assert "probe succeeded" in newest["message"]
    # Counted like any attempt: by outcome, with the tokens the upstream reported.
    assert 'sincere_probes_total{deployment="up",outcome="ok"} 1.0' in exposition
    assert 'sincere_probes_total{deployment="up",outcome="service_unavailable"}' in exposition
    assert 'sincere_probe_tokens_total{deployment="up"}' in exposition
    assert [t.state for t in run(gateway.history.recent("up", 1))] == ["ready"]


def test_after_a_restart_status_dates_a_state_from_this_process_only(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    settings = settings_for(tmp_path, fault_server.base_url)
    first = build_runtime(settings, env={})
    with LiveServer(first) as live:
        live.keys["alice"], _ = run(first.keys.create("alice", "enterprise"))
        _open_the_upstream_circuit(live, fault_server)
    fault_server.default = Fault.ok()
    restarted_at = time.time()
    second = build_runtime(settings, env={})  # the same store: the gateway restarted
    with LiveServer(second) as live:
        page = httpx.get(live.url + "/status", timeout=10).json()
    up = {s["name"]: s for s in page["services"]}["up"]
    assert up["state"] == "operational"  # a new process: its circuit has not opened
    assert up["recent_transitions"][0]["state"] == "major_outage"  # the history says so
    since = datetime.fromisoformat(up["since"]).timestamp()
    assert since >= restarted_at - 1e-3  # not the time it went into major_outage
    assert since == pytest.approx(second.started_at, abs=1e-3)
    assert up["since_basis"] == "process_start"


def test_status_shows_states_and_times_to_all_and_reasons_to_an_admin(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    _open_the_upstream_circuit(live, fault_server)
    public = _get(live, "/status")
    as_user = _get(live, "/status", "alice")
    as_admin = _get(live, "/status", "admin")
    bad_key = httpx.get(
        live.url + "/status", headers={"Authorization": "Bearer sk-sincere-unknown"}, timeout=10
    )
    for response in (public, as_user):
        assert response.status_code == 200
        up = {s["name"]: s for s in response.json()["services"]}["up"]
        assert up["state"] == "major_outage"
        assert up["recent_transitions"]
        assert all(set(t) == {"state", "at"} for t in up["recent_transitions"])
        assert "in a row" not in response.text  # the breaker's reason
    up = {s["name"]: s for s in as_admin.json()["services"]}["up"]
    assert all(set(t) == {"state", "at", "message"} for t in up["recent_transitions"])
    assert "in a row" in up["recent_transitions"][0]["message"]
    assert bad_key.status_code == 401  # a key that is sent must be a valid one
    assert bad_key.headers["content-type"] == "application/problem+json"


# ─── the fleet's Redis ───────────────────────────────────────────────────────────────
# A gateway built from a [cluster] redis_url: its events, limits and breakers on Redis,
# and /health and /status telling how that Redis is.


@pytest.fixture
def with_redis(tmp_path: Path, fault_server: FaultServer) -> Iterator[Callable[[str], LiveGateway]]:
    """Starts a gateway whose runtime holds a Redis client for the given URL."""
    running: list[LiveServer] = []

    def start(url: str) -> LiveGateway:
        prefix = f"test-ops-{os.urandom(6).hex()}:"
        cluster = f'\n[cluster]\nredis_url = "{url}"\nkey_prefix = "{prefix}"\n'
        built = build_runtime(settings_for(tmp_path, fault_server.base_url, cluster), env={})
        server = LiveServer(built)
        running.append(server)
        live = server.__enter__()
        live.keys["admin"], _ = run(live.gateway.keys.create("admin", "enterprise", "admin"))
        return live

    yield start
    for server in running:
        server.__exit__(None, None, None)


def test_a_reachable_redis_is_a_passing_check_and_an_operational_backend(
    with_redis: Callable[[str], LiveGateway],
) -> None:
    live = with_redis("redis://127.0.0.1:6379/0")
    health = _get(live, "/health")
    assert health.status_code == 200
    assert health.json()["status"] == "pass"
    [check] = health.json()["checks"]["redis:responseTime"]
    assert (check["componentType"], check["status"], check["observedUnit"]) == (
        "datastore",
        "pass",
        "ms",
    )
    assert check["observedValue"] > 0  # measured, so never exactly zero
    assert "output" not in check
    status = _get(live, "/status")
    assert status.json()["status"] == "none"
    backends = {b["name"]: b for b in status.json()["backends"]}
    assert set(backends) == {"store", "redis"}
    assert (backends["redis"]["kind"], backends["redis"]["state"]) == ("redis", "operational")
    assert backends["redis"]["latency_ms"] > 0
    assert (backends["store"]["kind"], backends["store"]["state"]) == ("sqlite", "operational")
    assert "url" not in backends["redis"]  # where it is, is for operators
    admin = {b["name"]: b for b in _get(live, "/status", "admin").json()["backends"]}
    assert admin["redis"]["url"] == "redis://127.0.0.1:6379/0"


def test_a_redis_where_nothing_listens_is_down_at_once_but_the_process_stays_ready(
    with_redis: Callable[[str], LiveGateway],
) -> None:
    port = refused_port()
    live = with_redis(f"redis://:hunter2-redis-pass@127.0.0.1:{port}/0")
    health = _get(live, "/health")
    # Every process shares this Redis, and each still serves without it: a warning, not
    # a failure that would take the whole fleet out of its load balancer at once.
    assert health.status_code == 200
    assert health.json()["status"] == "warn"
    [check] = health.json()["checks"]["redis:responseTime"]
    assert check["status"] == "fail"
    assert check["output"] == "PING failed: ConnectionError"
    assert "observedValue" not in check  # nothing was measured
    ready = _get(live, "/readyz")
    assert (ready.status_code, ready.json()["status"]) == (200, "pass")
    public = _get(live, "/status")
    assert public.json()["status"] == "major"
    redis = {b["name"]: b for b in public.json()["backends"]}["redis"]
    assert (redis["state"], redis["error"]) == ("major_outage", "PING failed: ConnectionError")
    assert "latency_ms" not in redis
    admin = {b["name"]: b for b in _get(live, "/status", "admin").json()["backends"]}["redis"]
    assert admin["url"] == f"redis://:[redacted]@127.0.0.1:{port}/0"
    assert admin["error"].startswith("ConnectionError: ")
    assert "refused" in admin["error"].lower()
    for response in (health, ready, public):
        assert str(port) not in response.text
    assert "hunter2" not in health.text + public.text + json.dumps(admin)


def test_a_redis_that_never_answers_is_reported_down_within_a_bounded_wait(
    with_redis: Callable[[str], LiveGateway],
) -> None:
    # The kernel completes the handshake on a listening socket nobody accepts from: a
    # Redis that takes the connection and never answers.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        live = with_redis(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        health = _get(live, "/health")
    assert health.status_code == 200
    assert health.json()["status"] == "warn"
    [check] = health.json()["checks"]["redis:responseTime"]
    assert check["status"] == "fail"
    assert check["output"] in ("PING failed: TimeoutError", "no answer to PING within 3 s")
