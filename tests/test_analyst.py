"""The analyst: findings computed by code, a narrative under the number rule, honest paths.

The findings are tested as pure functions of hand-built ``Usage`` values; the runs on a
real gateway whose narrators are fault servers answering with exact text.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from sincere.agents.findings import (
    figures_and_names,
    latency,
    savings,
    spend,
)
from sincere.agents.numbers import NumberRule
from sincere.agents.usage import Freshness, GroupBy, GroupFigures, Usage, Verdict, Window
from sincere.cli import app as cli_app
from sincere.config import DeploymentConfig, load_settings
from sincere.events import Event, EventType
from sincere.runtime import build_runtime
from tests.faults import Fault, FaultServer
from tests.live import LiveGateway, LiveServer, run

NOW = 1_700_000_000.0
WINDOW = Window(NOW - 7 * 86_400, NOW, "7d")


def group(key: str, requests: int, answered: int, **kw: Any) -> GroupFigures:
    values: dict[str, Any] = {
        "key": key,
        "requests": requests,
        "answered": answered,
        "failed": kw.pop(
            "failed", {} if requests == answered else {"service_unavailable": requests - answered}
        ),
        "success_rate": answered / requests if requests else None,
        "latency_p50_s": 1.0,
        "latency_p95_s": 2.0,
        "ttft_p50_s": None,
        "ttft_p95_s": None,
        "tokens_in": None,
        "tokens_out": None,
        "cost_usd": None,
        "token_coverage": None,
        "cost_coverage": None,
        "below_min_samples": requests < 20,
    }
    values.update(kw)
    return GroupFigures(**values)


def usage(*groups: GroupFigures, by: GroupBy = GroupBy.DEPLOYMENT, min_samples: int = 20) -> Usage:
    return Usage(
        as_of=NOW,
        source="sql:sqlite",
        degraded=False,
        scope="all processes",
        window=WINDOW,
        group_by=by,
        user_id="alice",
        groups=groups,
        freshness=Freshness(NOW - 5, 5.0, Verdict.PASS, 300, 3600),
        min_samples=min_samples,
        query=f"attempts of requests grouped by {by}",
        rows_read=sum(g.requests for g in groups),
    )


def deployment(name: str, price_in: float | None, price_out: float | None) -> DeploymentConfig:
    return DeploymentConfig(
        name=name,
        provider="openai",
        base_url="http://127.0.0.1:9/v1",
        model=name,
        input_price_per_mtok=price_in,
        output_price_per_mtok=price_out,
    )


# -- findings, from hand-built figures ----------------------------------------------------


def test_spend_by_deployment_carries_shares_and_provenance() -> None:
    u = usage(
        group("big", 30, 30, cost_usd=0.75, tokens_in=1000, tokens_out=500, cost_coverage=1.0),
        group("small", 10, 10, cost_usd=0.25, cost_coverage=0.5),
        group("free", 5, 5),  # no cost known: not in the spend
    )
    found = spend(u, "deployment")
    assert [f.kind for f in found] == ["spend", "spend"]
    big, small = (f.to_dict() for f in found)
    assert big["numbers"]["cost_usd"] == 0.75
    assert big["numbers"]["share_of_spend"] == 0.75
    assert big["numbers"]["total_cost_usd"] == 1.0
    assert big["units"]["share_of_spend"] == "ratio"
    assert small["numbers"]["cost_coverage"] == 0.5
    assert big["provenance"] == {
        "query": "attempts of requests grouped by deployment",
        "window": "7d",
        "n": 30,
        "below_min_samples": False,
        "min_samples": 20,
        "source": "sql:sqlite",
        "degraded": False,
        "freshness": {"verdict": "pass", "newest_at": NOW - 5, "age_s": 5.0},
    }
    assert small["provenance"]["below_min_samples"] is True
    # Nothing costed at all: the absence is the finding, with no figure made up.
    unknown = spend(usage(group("free", 5, 5)), "deployment")
    assert [(f.kind, dict(f.to_dict()["numbers"])) for f in unknown] == [
        ("spend_unknown", {"requests": 5})
    ]


def test_latency_outlier_names_the_slowest_beside_the_fastest() -> None:
    u = usage(
        group("slow", 20, 20, latency_p50_s=3.0, latency_p95_s=6.5),
        group("fast", 20, 20, latency_p50_s=0.5, latency_p95_s=0.9),
    )
    (found,) = latency(u, "deployment")
    assert found.kind == "latency_outlier"
    assert found.to_dict()["numbers"]["latency_p50_s"] == 3.0
    assert found.to_dict()["numbers"]["fastest_latency_p50_s"] == 0.5


def test_a_savings_candidate_rests_on_real_tokens_prices_and_samples() -> None:
    u = usage(
        group("dear", 40, 38, latency_p50_s=1.2, tokens_in=2_000_000, tokens_out=500_000),
        group("cheap", 25, 25, latency_p50_s=0.8),
        group("cheap-but-flaky", 25, 20, latency_p50_s=0.5),  # fails more: not a candidate
    )
    prices = {
        "dear": deployment("dear", 10.0, 30.0),
        "cheap": deployment("cheap", 1.0, 2.0),
        "cheap-but-flaky": deployment("cheap-but-flaky", 0.1, 0.1),
    }
    (found,) = savings(u, prices)
    numbers = found.to_dict()["numbers"]
    assert found.kind == "savings_candidate"
    # 2M in at $10 + 0.5M out at $30 = $35; at $1/$2: $3; saving $32.
    assert numbers["cost_usd"] == pytest.approx(35.0)
    assert numbers["cost_at_cheaper_usd"] == pytest.approx(3.0)
    assert numbers["saving_usd"] == pytest.approx(32.0)
    assert numbers["requests"] == 40
    assert numbers["cheaper_requests"] == 25
    assert [p.n for p in found.provenances()] == [40, 25]


def test_no_savings_candidate_without_enough_samples_says_so() -> None:
    u = usage(
        group("dear", 40, 40, latency_p50_s=1.2, tokens_in=1000, tokens_out=1000),
        group("cheap", 19, 19, latency_p50_s=0.8),  # below min_samples
    )
    prices = {"dear": deployment("dear", 10.0, 30.0), "cheap": deployment("cheap", 1.0, 2.0)}
    (found,) = savings(u, prices)
    assert found.kind == "no_savings_candidate"
    assert found.to_dict()["numbers"] == {"min_samples": 20}
    # Unknown prices never make a candidate either.
    unpriced = {"dear": deployment("dear", None, None), "cheap": deployment("cheap", 1.0, 2.0)}
    assert [f.kind for f in savings(u, unpriced)] == ["no_savings_candidate"]


def test_every_title_passes_the_number_rule_of_its_findings() -> None:
    from sincere.agents.analyst import compute_findings

    settings = load_settings(None, env={"SINCERE_DATA_DIR": "/nonexistent"})
    by_deployment = usage(
        group(
            "up-2",
            40,
            31,
            cost_usd=0.0123456,
            tokens_in=12345,
            tokens_out=678,
            latency_p50_s=1.23456,
            latency_p95_s=4.5678,
            failed={"rate_limited": 6, "timeout": 3},
        ),
        group("spare", 25, 25, cost_usd=0.000042, latency_p50_s=0.333),
    )
    by_model = usage(group("gpt-4o", 65, 56, cost_usd=0.0123878), by=GroupBy.MODEL)
    by_day = usage(
        group("2023-11-13", 30, 30, latency_p50_s=0.9),
        group("2023-11-14", 35, 26, latency_p50_s=2.1),
        group("2023-11-12", 1, 1, latency_p50_s=0.2),
        by=GroupBy.DAY,
    )
    findings = compute_findings([by_deployment, by_model, by_day], settings)
    kinds = [f.kind for f in findings]
    assert kinds[0] == "traffic"
    assert {"spend", "failure_outlier", "latency_outlier", "slowest_period"} <= set(kinds)
    figures, names = figures_and_names(findings, ("7d",))
    rule = NumberRule(figures, names)
    for f in findings:
        assert rule(f.title) is None, f.title


# -- runs on a real gateway ---------------------------------------------------------------

LIAR = "Your spend went up 37% this week, mostly on up."
HONEST = "Most of your traffic went to up, and every request was answered."


@pytest.fixture
def narrators() -> Iterator[tuple[FaultServer, FaultServer]]:
    with FaultServer() as up, FaultServer() as spare:
        yield up, spare


def _config(tmp_path: Path, up: str, spare: str) -> Path:
    path = tmp_path / "sincere.toml"
    path.write_text(
        f"""
[defaults]
max_retries = 0
first_token_timeout_s = 5
stream_idle_timeout_s = 5

[telemetry]
flush_s = 0.05

[agents.analyst]
model = "gpt"

[[models]]
name = "gpt"
deployments = ["up"]
fallbacks = ["backup"]

[[models]]
name = "backup"
deployments = ["spare"]

[[deployments]]
name = "up"
provider = "openai"
base_url = "{up}"
model = "up-model"
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0

[[deployments]]
name = "spare"
provider = "openai"
base_url = "{spare}"
model = "spare-model"
input_price_per_mtok = 0.5
output_price_per_mtok = 1.0
"""
    )
    return path


@pytest.fixture
def gw(tmp_path: Path, narrators: tuple[FaultServer, FaultServer]) -> Iterator[LiveGateway]:
    up, spare = narrators
    settings = load_settings(
        _config(tmp_path, up.base_url, spare.base_url),
        env={"SINCERE_DATA_DIR": str(tmp_path / "data")},
    )
    gateway = build_runtime(settings, env={})
    with LiveServer(gateway) as running:
        running.keys["alice"], _ = run(gateway.keys.create("alice", "standard", "user"))
        yield running


def _traffic(gw: LiveGateway, n: int = 3) -> None:
    """Real requests of alice's, answered by 'up', until the store holds them."""
    headers = {"Authorization": f"Bearer {gw.keys['alice']}"}
    with httpx.Client(timeout=30) as client:
        for i in range(n):
            r = client.post(
                gw.v1 + "/chat/completions",
                headers=headers,
                json={"model": "gpt", "messages": [{"role": "user", "content": f"hi {i}"}]},
            )
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 30
        while True:  # the writer flushes every 0.05 s
            u = client.get(gw.v1 + "/usage?window=7d&group_by=deployment", headers=headers)
            if sum(g["requests"] for g in u.json()["groups"]) >= n:
                return
            assert time.monotonic() < deadline, u.text
            time.sleep(0.05)


def _analyze(gw: LiveGateway, **body: Any) -> httpx.Response:
    with httpx.Client(timeout=60) as client:
        return client.post(
            gw.v1 + "/agents/analyst/runs",
            headers={"Authorization": f"Bearer {gw.keys['alice']}"},
            json={"question": "where does my spend go?", **body},
        )


def _events(gw: LiveGateway, request_id: str) -> list[Event]:
    replay = asyncio.run(gw.gateway.bus.replay("alice"))
    return [e for e in replay.events if e.request_id == request_id]


def test_an_invented_percentage_is_rejected_and_the_honest_narrative_served(
    gw: LiveGateway, narrators: tuple[FaultServer, FaultServer]
) -> None:
    up, spare = narrators
    _traffic(gw)
    up.script(Fault.ok(text=LIAR))
    spare.script(Fault.ok(text=HONEST))
    r = _analyze(gw)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "analyst.run"
    assert body["narrative"] == HONEST
    assert body["narrative_reason"] is None
    assert body["path"] == "findings_and_narrative"
    attempts = body["provenance"]["attempts"]
    assert [(a["deployment"], a["outcome"]) for a in attempts] == [
        ("up", "invented_numbers"),
        ("spare", "ok"),
    ]
    assert "'37%'" in attempts[0]["detail"]
    assert body["narrator"]["answered_by"] == {"model": "backup", "deployment": "spare"}
    # The liar's completion was generated and billed; the run's cost is both attempts'.
    assert body["provenance"]["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in attempts))
    # Findings from the real traffic: 3 requests, all answered by 'up', at its prices.
    traffic = body["findings"][0]
    assert traffic["kind"] == "traffic"
    assert traffic["numbers"]["requests"] == 3
    spend = [f for f in body["findings"] if f["kind"] == "spend"]
    assert spend[0]["title"].startswith("Deployment 'up'")
    assert spend[0]["provenance"]["n"] == 3
    assert spend[0]["provenance"]["source"] == "sql:sqlite"
    queries = body["provenance"]["queries"]
    assert [q["group_by"] for q in queries] == ["deployment", "model", "day"]
    assert all(q["duration_s"] >= 0 and q["rows_read"] == 3 for q in queries)
    # The narrator's requests asked for the findings only: the liar's prompt held them.
    prompt = up.completions[-1].body["messages"][0]["content"]
    assert traffic["title"] in prompt
    # What the user's stream said, in order, under the run's id.
    told = [str(e.type) for e in _events(gw, body["id"])]
    assert told == [
        "agent_started",
        "tool_executing",
        "service_initializing",
        "service_ready",
        "tool_completed",
        "tool_executing",
        "service_initializing",
        "service_ready",
        "tool_completed",
        "tool_executing",
        "service_initializing",
        "service_ready",
        "tool_completed",
        "agent_completed",
    ]
    narrative_events = _events(gw, body["narrator"]["request_id"])
    degraded = [e for e in narrative_events if e.type is EventType.SERVICE_DEGRADED]
    assert degraded
    assert degraded[0].data["outcome"] == "invented_numbers"


def test_with_no_honest_narrator_the_findings_are_served_alone(
    gw: LiveGateway, narrators: tuple[FaultServer, FaultServer]
) -> None:
    up, spare = narrators
    _traffic(gw)
    up.script(Fault.ok(text=LIAR))
    spare.script(Fault.ok(text="Spend grew by 87.5% since last week."))
    r = _analyze(gw, window="24h")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["narrative"] is None
    assert body["path"] == "findings_only"
    assert "invented_numbers" in body["narrative_reason"]
    assert [a["outcome"] for a in body["provenance"]["attempts"]] == [
        "invented_numbers",
        "invented_numbers",
    ]
    assert body["narrator"]["error_type"] == "service_unavailable"
    assert body["findings"][0]["numbers"]["requests"] == 3
    assert [q["group_by"] for q in body["provenance"]["queries"]] == ["deployment", "model", "hour"]
    events = _events(gw, body["id"])
    told = [(str(e.type), e.service) for e in events]
    assert ("service_degraded", "analyst:narrative") in told
    assert told[-1] == ("agent_completed", "analyst")
    assert events[-1].data["path"] == "findings_only"
    # The breaker did not count a rejected narrative: both circuits stay closed.
    health = httpx.get(gw.url + "/health").json()["checks"]
    assert health["up:circuit"][0]["status"] == "pass"
    assert health["spare:circuit"][0]["status"] == "pass"


def test_when_no_data_source_can_answer_the_run_fails_cleanly(
    gw: LiveGateway, narrators: tuple[FaultServer, FaultServer]
) -> None:
    up, _ = narrators
    # The store cannot be read, and the window asked for ends before anything this
    # process holds in memory: no source can answer.
    with gw.gateway.database.engine.begin() as conn:
        conn.execute(text("DROP TABLE telemetry_attempts"))
    r = _analyze(gw, **{"from": str(NOW - 86_400), "to": str(NOW)})
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "data_unavailable"
    assert up.completions == []  # no narrator was asked
    replay = asyncio.run(gw.gateway.bus.replay("alice")).events
    told = [str(e.type) for e in replay]
    # The first query started (and said so), failed, and nothing after it ran.
    assert told[0] == "agent_started"
    assert told.count("tool_executing") == 1
    assert "tool_completed" not in told
    assert "agent_thinking" not in told
    assert told[-1] == "agent_failed"
    assert replay[-1].data["error_type"] == "data_unavailable"


def test_a_bad_window_is_refused_before_anything_runs(gw: LiveGateway) -> None:
    r = _analyze(gw, window="5y")
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "window"
    told = [str(e.type) for e in asyncio.run(gw.gateway.bus.replay("alice")).events]
    assert not any(t.startswith(("agent_", "tool_")) for t in told)


def test_no_key_no_run(gw: LiveGateway) -> None:
    r = httpx.post(gw.v1 + "/agents/analyst/runs", json={"question": "where?"})
    assert r.status_code == 401


def test_cli_analyze_prints_findings_and_the_narrative(
    tmp_path: Path, narrators: tuple[FaultServer, FaultServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    up, spare = narrators
    config = _config(tmp_path, up.base_url, spare.base_url)
    monkeypatch.setenv("SINCERE_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    chat = runner.invoke(cli_app, ["chat", "hello", "--model", "gpt", "--config", str(config)])
    assert chat.exit_code == 0, chat.output
    up.script(Fault.ok(text=LIAR))
    spare.script(Fault.ok(text=HONEST))
    result = runner.invoke(
        cli_app, ["analyze", "where does my spend go?", "--config", str(config), "--json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["narrative"] == HONEST
    assert body["findings"][0]["numbers"]["requests"] == 1
    up.script(Fault.ok(text=LIAR))
    spare.script(Fault.ok(text=LIAR))
    plain = runner.invoke(cli_app, ["analyze", "where does my spend go?", "--config", str(config)])
    assert plain.exit_code == 0, plain.output
    assert "Findings" in plain.stdout
    assert "No narrative" in plain.stdout
    assert "invented_numbers" in plain.stdout
