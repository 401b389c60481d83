"""The data agent and GET /v1/usage: figures from recorded traffic, exactly; freshness
judged as dbt judges a source; the process's own window when the store is down, labelled
degraded with its true scope; a clean 503 when no source can answer."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from sincere.agents.data import DataAgent, window_of
from sincere.agents.figures import aggregate
from sincere.agents.usage import GroupBy, Verdict, Window
from sincere.backends.memory.events import InProcessEventBus
from sincere.backends.sql.database import Database, create_store_engine, open_database
from sincere.backends.sql.telemetry import SqlTelemetryStore
from sincere.config import UsageConfig
from sincere.context import ContextFactory
from sincere.errors import BadRequest, DataUnavailable
from sincere.events import EventType
from sincere.runtime import build_runtime
from sincere.server.app import create_app
from sincere.server.usage_routes import UsageOut
from sincere.telemetry import AttemptRow, RecentWindow, percentile
from tests.clocks import ManualClock
from tests.faults import Fault, FaultServer
from tests.live import LiveGateway, LiveServer, run, settings_for

HANG_GUARD_S = 30
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/test"  # nothing listens there
PROMPT = "hi there"  # 2 prompt tokens as the fault server counts them (words)
ANSWER = "One two three."  # 3 completion tokens
PRICE_IN, PRICE_OUT = 1.0, 2.0  # settings_for's prices per million tokens


def _row(request_id: str, at: float, **changes: object) -> AttemptRow:
    values: dict[str, object] = {
        "at": at,
        "request_id": request_id,
        "index": 0,
        "user_id": "alice",
        "tier": "free",
        "surface": "http",
        "requested_model": "gpt",
        "model": "gpt",
        "deployment": "up",
        "outcome": "ok",
        "final": True,
        "request_outcome": "answered",
        "status_code": None,
        "latency_s": 0.1,
        "tokens_in": 10,
        "tokens_out": 5,
        "cost_usd": 0.00002,
        "ttft_s": 0.05,
        "queue_wait_s": 0.0,
        "request_latency_s": 0.1,
        "request_rows": 1,
    }
    values.update(changes)
    # The deciding row carries what all of the request's attempts were billed: this one's,
    # unless a test says otherwise (a request of several attempts).
    values.setdefault("request_cost_usd", values["cost_usd"])
    return AttemptRow(**values)  # type: ignore[arg-type]


def _unreachable_store() -> SqlTelemetryStore:
    return SqlTelemetryStore(Database(create_store_engine(UNREACHABLE), UNREACHABLE))


# ─── aggregation ─────────────────────────────────────────────────────────────────────


def test_a_request_counts_once_its_cost_sums_its_attempts_and_unknown_stays_unknown() -> None:
    unknown: dict[str, object] = {"tokens_in": None, "tokens_out": None, "ttft_s": None}
    rows = [
        # failed over: a billed failure (0.0: refused), then the answer
        _row(
            "r1",
            10,
            index=1,
            deployment="spare",
            cost_usd=0.5,
            request_latency_s=2.0,
            request_cost_usd=0.5,
            request_rows=2,
        ),
        _row("r1", 10, final=False, outcome="service_unavailable", cost_usd=0.0, **unknown),
        # one attempt's cost unknown: the request's cost is unknown
        _row("r2", 20, cost_usd=None, request_latency_s=1.0, request_cost_usd=None),
        # failed: no tokens; its cost (0.0) known
        _row(
            "r3",
            30,
            request_outcome="timeout",
            cost_usd=0.0,
            request_latency_s=3.0,
            request_cost_usd=0.0,
            **unknown,
        ),
        # refused before any deployment: nothing was asked of a provider, nothing billed
        _row(
            "r4",
            40,
            deployment=None,
            request_outcome="rate_limited",
            cost_usd=None,
            request_latency_s=0.001,
            request_cost_usd=0.0,
            **unknown,
        ),
        # its deciding row is not recorded (yet): not counted
        _row("r5", 50, final=False),
    ]
    (group,) = aggregate(rows, GroupBy.MODEL, min_samples=5)
    assert group.key == "gpt"
    assert (group.requests, group.answered) == (4, 2)
    assert group.failed == {"timeout": 1, "rate_limited": 1}
    assert group.success_rate == 0.5
    assert (group.tokens_in, group.tokens_out) == (20, 10)  # r1 and r2's answers
    assert group.token_coverage == 0.5
    assert group.cost_usd == 0.5  # r1 (0.0 + 0.5), r3 (0.0), r4 (nothing asked)
    assert group.cost_coverage == 0.75  # r2 unknown
    assert (group.latency_p50_s, group.latency_p95_s) == (1.0, 3.0)
    assert (group.latency_samples, group.ttft_samples) == (4, 2)
    assert group.below_min_samples
    by_deployment = {g.key: g.requests for g in aggregate(rows, GroupBy.DEPLOYMENT, 1)}
    assert by_deployment == {"spare": 1, "up": 2, "none": 1}
    assert not aggregate(rows, GroupBy.DEPLOYMENT, 1)[0].below_min_samples


def test_groups_by_day_hour_user_and_outcome_in_utc() -> None:
    day = 1_750_032_000.0  # 2025-06-16T00:00:00Z
    rows = [
        _row("a", day + 3600 * 1 + 5),
        _row("b", day + 3600 * 1 + 50, user_id="bob"),
        _row("c", day + 3600 * 25, request_outcome="timeout", outcome="timeout"),
    ]
    assert [g.key for g in aggregate(rows, GroupBy.HOUR, 1)] == ["2025-06-16T01", "2025-06-17T01"]
    assert [(g.key, g.requests) for g in aggregate(rows, GroupBy.DAY, 1)] == [
        ("2025-06-16", 2),
        ("2025-06-17", 1),
    ]
    assert [g.key for g in aggregate(rows, GroupBy.USER, 1)] == ["alice", "bob"]
    assert [g.key for g in aggregate(rows, GroupBy.OUTCOME, 1)] == ["answered", "timeout"]


def test_no_known_tokens_or_cost_is_null_never_zero() -> None:
    rows = [_row("a", 1, tokens_in=None, tokens_out=None, cost_usd=None, ttft_s=None)]
    (group,) = aggregate(rows, GroupBy.MODEL, 1)
    assert (group.tokens_in, group.tokens_out, group.cost_usd) == (None, None, None)
    assert (group.token_coverage, group.cost_coverage) == (0.0, 0.0)
    assert (group.ttft_p50_s, group.ttft_p95_s) == (None, None)


# ─── windows ─────────────────────────────────────────────────────────────────────────


def test_windows_named_or_from_to_and_their_refusals() -> None:
    now = 1_750_100_000.0
    assert window_of("1h", None, None, now) == Window(now - 3600, now, "1h")
    assert window_of(None, None, None, now).label == "24h"
    between = window_of(None, "2025-06-16T00:00:00Z", "1750032600", now)
    assert (between.start, between.end) == (1_750_032_000.0, 1_750_032_600.0)
    naive = window_of(None, "2025-06-16T00:00:00", None, now)  # UTC unless it says so
    assert (naive.start, naive.end) == (1_750_032_000.0, now)
    for args, param in (
        (("2h", None, None), "window"),
        (("24h", "1", None), "window"),
        ((None, None, "5"), "from"),
        ((None, "yesterday", None), "from"),
        ((None, "10", "5"), "to"),
        ((None, "9" * 30, None), "from"),
    ):
        with pytest.raises(BadRequest) as caught:
            window_of(*args, now)
        assert caught.value.param == param


# ─── freshness ───────────────────────────────────────────────────────────────────────


async def test_freshness_passes_warns_and_errors_as_the_clock_moves(tmp_path: Path) -> None:
    clock = ManualClock()
    store = SqlTelemetryStore(open_database(f"sqlite:///{tmp_path / 't.db'}"))
    settings = UsageConfig(warn_after_s=60, error_after_s=300, min_samples=1)
    agent = DataAgent(store, RecentWindow(900, clock.time), settings, clock.time)
    ctx = ContextFactory(InProcessEventBus(), 60).create("admin")

    async def ask() -> Any:
        return await agent.usage(
            ctx, window_of("7d", None, None, clock.time()), GroupBy.MODEL, None
        )

    empty = await ask()
    assert empty.freshness.verdict is Verdict.UNKNOWN
    assert (empty.freshness.newest_at, empty.freshness.age_s) == (None, None)
    assert not empty.current
    assert empty.groups == ()

    recorded_at = clock.time()
    await store.write([_row("a", recorded_at)])
    clock.advance(59)
    fresh = await ask()
    assert (fresh.freshness.verdict, fresh.freshness.age_s) == (Verdict.PASS, 59)
    assert fresh.current
    assert fresh.notes == ()
    clock.advance(1)
    assert (await ask()).freshness.verdict is Verdict.WARN
    assert (await ask()).current  # warned, still current
    clock.advance(240)
    stale = await ask()
    assert (stale.freshness.verdict, stale.freshness.age_s) == (Verdict.ERROR, 300)
    assert not stale.current
    assert stale.groups[0].requests == 1  # the figures are real: still given, never as current
    assert stale.notes == (
        "the newest record is 300 s old (error after 300 s): these figures are not current",
    )
    body = stale.to_dict()
    assert body["current"] is False
    assert body["freshness"]["newest_at"] == "2025-06-15T15:06:40.000+00:00"
    UsageOut.model_validate(body)  # the published schema describes what is sent


# ─── the second source ───────────────────────────────────────────────────────────────


async def test_an_unreachable_store_falls_back_to_this_processs_window_and_says_so() -> None:
    clock = ManualClock()
    window = RecentWindow(900, clock.time)
    window.add([_row("a", clock.time() - 100), _row("b", clock.time() - 50, user_id="bob")])
    agent = DataAgent(_unreachable_store(), window, UsageConfig(min_samples=1), clock.time)
    bus = InProcessEventBus()
    ctx = ContextFactory(bus, 60).create("alice")
    usage = await agent.usage(
        ctx, window_of("24h", None, None, clock.time()), GroupBy.MODEL, "alice"
    )
    assert usage.degraded
    assert (usage.source, usage.scope) == ("memory:this-process", "this process, last 15 minutes")
    assert (usage.window.start, usage.window.end) == (clock.time() - 900, clock.time())
    assert usage.window.label == "24h, clipped to the this process, last 15 minutes"
    assert [(g.key, g.requests) for g in usage.groups] == [("gpt", 1)]  # alice's only
    assert usage.freshness.age_s == 50  # the newest this process holds
    assert any("store cannot be read" in note for note in usage.notes)
    events = (await bus.replay("alice")).events
    assert [(e.service, e.type) for e in events] == [
        ("usage:store", EventType.SERVICE_INITIALIZING),
        ("usage:store", EventType.SERVICE_UNAVAILABLE),
        ("usage:memory", EventType.SERVICE_INITIALIZING),
        ("usage:memory", EventType.SERVICE_READY),
    ]
    assert (await bus.replay("bob")).events == ()  # nothing reaches another user


async def test_no_source_that_can_answer_is_a_503_never_a_number() -> None:
    clock = ManualClock()
    window = RecentWindow(900, clock.time)
    window.add([_row("a", clock.time() - 10)])
    agent = DataAgent(_unreachable_store(), window, UsageConfig(), clock.time)
    bus = InProcessEventBus()
    ctx = ContextFactory(bus, 60).create("alice")
    old = window_of(None, str(clock.time() - 7200), str(clock.time() - 3600), clock.time())
    with pytest.raises(DataUnavailable) as caught:
        await agent.usage(ctx, old, GroupBy.MODEL, "alice")
    assert caught.value.status == 503
    assert "the store (the database) is unreachable" in caught.value.message
    assert "ends before the this process, last 15 minutes" in caught.value.message
    assert caught.value.context.request_id == ctx.request_id
    last = (await bus.replay("alice")).events[-1]
    assert (last.service, last.type) == ("usage:memory", EventType.SERVICE_UNAVAILABLE)
    no_window = DataAgent(_unreachable_store(), None, UsageConfig(), clock.time)
    with pytest.raises(DataUnavailable, match="serves no traffic"):
        await no_window.usage(ctx, window_of("1h", None, None, clock.time()), GroupBy.MODEL, None)


# ─── real traffic through the gateway ────────────────────────────────────────────────


async def _chat(client: httpx.AsyncClient, live: LiveGateway, who: str) -> httpx.Response:
    return await client.post(
        f"{live.v1}/chat/completions",
        json={"model": "gpt", "messages": [{"role": "user", "content": PROMPT}]},
        headers={"authorization": f"Bearer {live.keys[who]}"},
    )


async def _usage(
    client: httpx.AsyncClient, live: LiveGateway, who: str, **params: str
) -> httpx.Response:
    return await client.get(
        f"{live.v1}/usage", params=params, headers={"authorization": f"Bearer {live.keys[who]}"}
    )


async def _recorded(client: httpx.AsyncClient, live: LiveGateway, requests: int) -> None:
    """Wait until the store holds ``requests`` requests (the writer flushes every 50 ms)."""
    for _ in range(HANG_GUARD_S * 20):
        body = (await _usage(client, live, "admin", window="1h")).json()
        if sum(g["requests"] for g in body["groups"]) >= requests:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the telemetry was not written")


def test_usage_of_real_traffic_is_exact_and_each_sees_what_it_may(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok(ANSWER)
    extra = "[telemetry]\nflush_s = 0.05\n\n[usage]\nmin_samples = 3\n"
    gateway = build_runtime(settings_for(tmp_path, fault_server.base_url, extra), env={})
    with LiveServer(gateway) as live:
        for name, role in (("admin", "admin"), ("alice", "user"), ("bob", "user")):
            live.keys[name], _ = run(gateway.keys.create(name, "standard", role))
        asyncio.run(_traffic_and_figures(live, fault_server))


async def _traffic_and_figures(live: LiveGateway, fault_server: FaultServer) -> None:
    gateway = live.gateway
    async with httpx.AsyncClient(timeout=HANG_GUARD_S) as client:
        codes = []
        for i in range(5):
            if i == 2:
                fault_server.script(Fault.status(503))
            codes.append(await _chat(client, live, "alice"))
        assert (await _chat(client, live, "bob")).status_code == 200
        assert [r.status_code for r in codes] == [200, 200, 503, 200, 200]
        failed_as = codes[2].json()["error"]["code"]
        assert all(r.json()["usage"]["prompt_tokens"] == 2 for r in codes if r.is_success)
        assert all(r.json()["usage"]["completion_tokens"] == 3 for r in codes if r.is_success)
        await _recorded(client, live, 6)

        # alice's own figures, every one of them exact
        mine = await _usage(client, live, "alice", window="24h", group_by="model")
        assert mine.status_code == 200, mine.text
        body = mine.json()
        UsageOut.model_validate(body)
        assert (body["object"], body["user"], body["group_by"]) == ("usage", "alice", "model")
        assert (body["source"], body["degraded"], body["scope"]) == (
            "sql:sqlite",
            False,
            "all processes",
        )
        assert body["current"] is True
        assert body["freshness"]["verdict"] == "pass"
        assert body["window"]["label"] == "24h"
        assert body["reliability"]["min_samples"] == 3
        (gpt,) = body["groups"]
        assert gpt["key"] == "gpt"
        assert (gpt["requests"], gpt["answered"]) == (5, 4)
        assert gpt["failed"] == {failed_as: 1}
        assert gpt["success_rate"] == 0.8
        assert (gpt["tokens_in"], gpt["tokens_out"]) == (4 * 2, 4 * 3)
        per_answer = (2 * PRICE_IN + 3 * PRICE_OUT) / 1_000_000
        # the failed attempt was refused with a 503: billed 0.0, known
        assert gpt["cost_usd"] == round(math.fsum([per_answer] * 4 + [0.0]), 12)
        reliability = gpt["reliability"]
        assert (reliability["token_coverage"], reliability["cost_coverage"]) == (0.8, 1.0)
        assert (reliability["samples"], reliability["below_min_samples"]) == (5, False)
        assert (reliability["latency_samples"], reliability["ttft_samples"]) == (5, 4)
        # the percentiles are those of the recorded request latencies, nothing else
        store = SqlTelemetryStore(gateway.database)
        finals = [r for r in run(store.rows(0, 4e9, "alice")) if r.final]
        latencies = sorted(r.request_latency_s for r in finals if r.request_latency_s is not None)
        ttfts = sorted(r.ttft_s for r in finals if r.ttft_s is not None)
        assert gpt["latency_s"] == {
            "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95),
        }
        assert gpt["ttft_s"] == {"p50": percentile(ttfts, 0.5), "p95": percentile(ttfts, 0.95)}
        # the sources tried, on alice's own stream
        events = [e for e in run(gateway.bus.replay("alice")).events if e.service]
        usage_events = [(e.service, str(e.type)) for e in events if e.service == "usage:store"]
        assert usage_events[-2:] == [
            ("usage:store", "service_initializing"),
            ("usage:store", "service_ready"),
        ]

        # a user key sees only its own user
        other = await _usage(client, live, "alice", user="bob")
        assert other.status_code == 403
        error = other.json()["error"]
        assert error["code"] == "permission_denied"
        assert error["request_id"] == other.headers["x-request-id"]
        assert (await _usage(client, live, "alice", user="alice")).status_code == 200
        # an admin key: any user, or all
        bobs = (await _usage(client, live, "admin", user="bob")).json()
        assert [(g["key"], g["requests"]) for g in bobs["groups"]] == [("gpt", 1)]
        everyone = (await _usage(client, live, "admin", group_by="user")).json()
        assert everyone["user"] is None
        assert [(g["key"], g["requests"], g["answered"]) for g in everyone["groups"]] == [
            ("alice", 5, 4),
            ("bob", 1, 1),
        ]
        assert [g["reliability"]["below_min_samples"] for g in everyone["groups"]] == [
            False,
            True,  # bob's one request is fewer than min_samples
        ]
        outcomes = (await _usage(client, live, "admin", group_by="outcome")).json()
        assert {g["key"]: g["requests"] for g in outcomes["groups"]} == {
            "answered": 5,
            failed_as: 1,
        }
        by_deployment = (await _usage(client, live, "admin", group_by="deployment")).json()
        assert [g["key"] for g in by_deployment["groups"]] == ["up"]
        # a window that holds nothing: no group, no invented zero
        past = (await _usage(client, live, "admin", **{"from": "0", "to": "3600"})).json()
        assert past["groups"] == []
        # what cannot be asked
        bad = await _usage(client, live, "alice", window="2h")
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "window"
        assert (await _usage(client, live, "alice", group_by="colour")).status_code == 400
        assert (await client.get(f"{live.v1}/usage")).status_code == 401

        # the store goes away: this process's window answers, degraded, with its scope
        settings = gateway.settings.usage
        gateway.data = DataAgent(_unreachable_store(), gateway.telemetry.window, settings)
        degraded = await _usage(client, live, "alice", window="24h")
        assert degraded.status_code == 200, degraded.text
        body = degraded.json()
        assert (body["source"], body["degraded"], body["scope"]) == (
            "memory:this-process",
            True,
            "this process, last 15 minutes",
        )
        (gpt,) = body["groups"]
        assert (gpt["requests"], gpt["answered"], gpt["tokens_in"]) == (5, 4, 8)
        assert gpt["cost_usd"] == round(math.fsum([per_answer] * 4 + [0.0]), 12)
        events = [(e.service, str(e.type)) for e in run(gateway.bus.replay("alice")).events]
        assert events[-4:] == [
            ("usage:store", "service_initializing"),
            ("usage:store", "service_unavailable"),
            ("usage:memory", "service_initializing"),
            ("usage:memory", "service_ready"),
        ]

        # and with no source left: a clean 503, never a number
        gateway.data = DataAgent(_unreachable_store(), None, settings)
        down = await _usage(client, live, "alice")
        assert down.status_code == 503
        error = down.json()["error"]
        assert error["code"] == "data_unavailable"
        assert error["request_id"] == down.headers["x-request-id"]
        assert "groups" not in down.text


def test_the_route_is_published_in_openapi(tmp_path: Path, fault_server: FaultServer) -> None:
    gateway = build_runtime(settings_for(tmp_path, fault_server.base_url), env={})
    try:
        schema = create_app(gateway).openapi()
    finally:
        run(gateway.aclose())
    operation = schema["paths"]["/v1/usage"]["get"]
    params = {p["name"] for p in operation["parameters"]}
    assert params == {"window", "group_by", "user", "from", "to"}
    assert {"200", "400", "401", "403", "503"} <= set(operation["responses"])
    assert "UsageOut" in schema["components"]["schemas"]


# ─── the command line ────────────────────────────────────────────────────────────────


def _sincere(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"SINCERE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(
        [sys.executable, "-m", "sincere.cli", "usage", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_cli_prints_the_figures_their_freshness_and_reliability(tmp_path: Path) -> None:
    import time

    now = time.time()
    store = SqlTelemetryStore(open_database(f"sqlite:///{tmp_path / 'sincere.db'}"))
    rows = [_row(f"r{i}", now - 60 * i) for i in range(1, 4)]
    rows.append(_row("bob1", now - 30, user_id="bob", cost_usd=None))
    run(store.write(rows))

    as_json = _sincere(tmp_path, "--window", "24h", "--by", "user", "--json")
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    UsageOut.model_validate(body)
    assert (body["source"], body["user"], body["group_by"]) == ("sql:sqlite", None, "user")
    assert [(g["key"], g["requests"], g["cost_usd"]) for g in body["groups"]] == [
        ("alice", 3, round(math.fsum([0.00002] * 3), 12)),
        ("bob", 1, None),
    ]
    assert body["freshness"]["verdict"] == "pass"

    table = _sincere(tmp_path, "--window", "24h", "--by", "model", "--user", "alice")
    assert table.returncode == 0, table.stderr
    header, line = table.stdout.splitlines()  # piped: tab-separated
    assert header.split("\t")[:3] == ["model", "requests", "answered"]
    cells = line.split("\t")
    assert cells[:5] == ["gpt", "3*", "3", "0", "100.0%"]  # 3 < min_samples (20)
    assert cells[7:9] == ["30/15", "0.000060"]
    assert "freshness pass" in table.stderr
    assert "fewer than 20 requests" in table.stderr

    unknown = _sincere(tmp_path, "--by", "user", "--user", "bob")
    assert unknown.stdout.splitlines()[1].split("\t")[8] == "unknown"  # cost: never 0

    (tmp_path / "down.toml").write_text(f'[store]\nurl = "{UNREACHABLE}"\n')
    down = _sincere(tmp_path, "--config", str(tmp_path / "down.toml"), "--json")
    assert down.returncode == 75, down.stderr
    assert json.loads(down.stdout)["error"]["error_type"] == "data_unavailable"


def test_an_enterprise_user_whom_no_source_can_answer_gets_a_ticket_resolved_when_it_can(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    gateway = build_runtime(settings_for(tmp_path, fault_server.base_url), env={})
    with LiveServer(gateway) as live:
        live.keys["ent"], _ = run(gateway.keys.create("ent", "enterprise", "user"))
        live.keys["free"], _ = run(gateway.keys.create("free", "free", "user"))
        asyncio.run(_escalated_and_resolved(live))


async def _escalated_and_resolved(live: LiveGateway) -> None:
    gateway = live.gateway
    working = gateway.data
    async with httpx.AsyncClient(timeout=HANG_GUARD_S) as client:
        gateway.data = DataAgent(_unreachable_store(), None, gateway.settings.usage)
        down = await _usage(client, live, "ent")
        free = await _usage(client, live, "free")
        gateway.data = working  # the store answers again
        back = await _usage(client, live, "ent")
    assert down.status_code == 503
    error = down.json()["error"]
    assert error["code"] == "data_unavailable"
    assert error["ticket_id"].startswith("tkt_")
    assert error["incident_id"].startswith("inc_")
    assert error["incident_state"] == "open"
    assert [a["deployment"] for a in error["attempts"]] == ["usage:store"]
    assert "ticket_id" not in free.json()["error"]  # free does not escalate
    assert back.status_code == 200
    (incident,) = await gateway.escalations.incidents()
    assert incident.id == error["incident_id"]
    assert incident.deployment == "usage:store"
    assert str(incident.state) == "resolved"
