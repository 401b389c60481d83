"""The status page's history, over real HTTP and the real store: the store's and Redis's own
transitions, the time gateway processes observed (a gap is "no data"), request counts per
day, the partial-outage rule, outages as incidents (merged with escalation) and the page
computed once for many readers."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, event, text

from sincere import errors
from sincere.availability import (
    DEPLOYMENT_FAILURES,
    NOT_ITS_FAILURE,
    NOT_SENT,
    AttemptCounts,
    partial_outage,
)
from sincere.backends.redis import connect
from sincere.backends.sql import SqlServiceHistory, open_database
from sincere.backends.sql.telemetry import SqlTelemetryStore
from sincere.config import Settings, load_settings
from sincere.errors import ConfigError
from sincere.outages import outages
from sincere.ports import RecordedTransition
from sincere.runtime import build_runtime
from sincere.server import status_watch
from sincere.server.status_cache import SharedValue
from sincere.server.status_counts import DayCounts
from sincere.server.status_incidents import outage_id
from sincere.server.status_watch import STORE
from sincere.telemetry import AttemptRow
from sincere.uptime import DAY_S, daily, spans, stretches, uptime, with_answers
from tests.clocks import ManualClock
from tests.faults import Fault, FaultServer
from tests.live import LiveGateway, LiveServer, run, settings_for
from tests.redis_cut import RedisCut

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
GUARD_S = 60.0  # only against a hang: no test waits this long when it passes
H = 3600.0


# ─── helpers ─────────────────────────────────────────────────────────────────────────


def _t(service: str, state: str, at: float) -> RecordedTransition:
    return RecordedTransition(service, state, "", at)


def _midnight(days_ago: int) -> float:
    day = datetime.now(UTC).date() - timedelta(days=days_ago)
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _day(days_ago: int) -> str:
    return (datetime.now(UTC).date() - timedelta(days=days_ago)).isoformat()


def _clear_of_midnight() -> None:
    """Keep a test that dates bars by the server's clock out of the minute before UTC
    midnight, where the day could change between setting up and reading the page."""
    left = 86_400 - time.time() % 86_400
    if left < 60:
        time.sleep(left + 1)


def _settings(tmp_path: Path, upstream: str, status: str = "", extra: str = "") -> Settings:
    return settings_for(tmp_path, upstream, f"\n[status]\n{status}\n{extra}")


def _row(deployment: str | None, outcome: str, at: float) -> AttemptRow:
    return AttemptRow(
        at=at,
        request_id=uuid.uuid4().hex,
        index=0,
        user_id="u",
        tier="free",
        surface="http",
        requested_model="gpt",
        model="m" if deployment else None,
        deployment=deployment,
        outcome=outcome,
        final=True,
        request_outcome="answered" if outcome == "ok" else outcome,
        status_code=None,
        latency_s=0.1,
        tokens_in=None,
        tokens_out=None,
        cost_usd=None,
        ttft_s=None,
        queue_wait_s=None,
        request_latency_s=0.1,
    )


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + GUARD_S
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


async def _until_async(check: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + GUARD_S
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


def _get(live: LiveGateway, path: str, **headers: str) -> httpx.Response:
    response = httpx.get(live.url + path, headers=headers, timeout=GUARD_S)
    assert response.status_code == 200, response.text
    return response


def _component(live: LiveGateway, name: str) -> dict[str, Any]:
    components = _get(live, "/api/v2/components.json").json()["components"]
    found: dict[str, Any] = next(c for c in components if c["name"] == name)
    return found


def _chat(live: LiveGateway, key: str) -> httpx.Response:
    return httpx.post(
        live.v1 + "/chat/completions",
        json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=GUARD_S,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sincere.db'}"
        return
    yield request.getfixturevalue("fresh_schema")


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"test:{uuid.uuid4().hex}:"
    yield prefix
    client = connect(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


# ─── the rules, pure ─────────────────────────────────────────────────────────────────


def test_every_error_type_is_in_exactly_one_group_of_the_failure_vocabulary() -> None:
    def subclasses(cls: type[errors.ServiceError]) -> set[type[errors.ServiceError]]:
        found = set(cls.__subclasses__())
        for sub in list(found):
            found |= subclasses(sub)
        return found

    types = {errors.ServiceError.error_type} | {
        c.error_type for c in subclasses(errors.ServiceError)
    }
    groups = (DEPLOYMENT_FAILURES, NOT_SENT, NOT_ITS_FAILURE)
    for error_type in types | {"ok", "blocked", "circuit_open", "skipped", "cancelled"}:
        assert sum(error_type in g for g in groups) == 1, error_type


def test_the_partial_outage_rule_needs_its_minimum_of_attempts_and_share() -> None:
    def counts(attempts: int, failed: int) -> AttemptCounts:
        return AttemptCounts("d", None, attempts, failed, attempts - failed)

    assert partial_outage(counts(19, 19), 300, 0.25, 20) is None  # too few to say
    assert partial_outage(counts(20, 4), 300, 0.25, 20) is None  # 20 % < 25 %
    verdict = partial_outage(counts(20, 5), 300, 0.25, 20)
    assert verdict is not None
    assert verdict.describe() == "5 of 20 requests failed in the last 5 min"
    assert partial_outage(None, 300, 0.25, 20) is None


def test_a_deployment_may_not_take_a_name_reserved_for_the_shared_parts(tmp_path: Path) -> None:
    path = tmp_path / "sincere.toml"
    path.write_text(
        '[[deployments]]\nname = "backend:store"\nprovider = "openai"\n'
        'base_url = "http://127.0.0.1:1"\nmodel = "m"\n'
    )
    with pytest.raises(ConfigError, match="reserved for the store and Redis"):
        load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path)})


def test_a_gap_between_lifetimes_is_no_data_and_a_state_does_not_resume_after_it() -> None:
    # Observed 00:00-06:00, then 18:00-24:00 (a restart after a night with no gateway).
    observed = stretches([(0, 6 * H), (18 * H, 20 * H), (19 * H, 24 * H)])
    assert observed == [(0, 6 * H), (18 * H, 24 * H)]
    history = [_t("d", "ready", 0), _t("d", "unavailable", 3 * H), _t("d", "ready", 20 * H)]
    recorded = spans(history, 24 * H, observed)
    assert [(s.start / H, s.end / H, s.kind) for s in recorded] == [
        (0, 3, "up"),
        (3, 6, "down"),  # not to 20:00: the gap and the unrecorded 18:00-20:00 are no data
        (20, 24, "up"),
    ]
    u = uptime(recorded, 0, 24 * H)
    assert (u.up_s, u.down_s) == (7 * H, 3 * H)
    assert u.percent == pytest.approx(70.0)
    assert spans([_t("d", "ready", 10 * H)], 24 * H, observed) == []  # recorded unobserved


def test_observed_time_without_a_record_is_up_only_on_a_day_the_deployment_answered() -> None:
    day = date(2025, 1, 1)
    start = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    observed = [(start, start + DAY_S)]
    recorded = spans([_t("d", "unavailable", start + 12 * H)], start + DAY_S, observed)
    filled = with_answers(recorded, observed, [day])
    assert [(s.start - start, s.end - start, s.kind) for s in filled] == [
        (0, 12 * H, "up"),
        (12 * H, DAY_S, "down"),
    ]
    assert with_answers([], observed, []) == []  # no answers: still no data
    (bar,) = daily(filled, start + DAY_S - 1, days=1, observed=observed, counts={day: (3, 1)})
    assert bar.title.endswith("; 3 requests, 1 failed")


def test_outages_are_found_with_their_steps_and_the_time_nobody_observed() -> None:
    history = [
        _t("d", "ready", 0),
        _t("d", "unavailable", 10),
        _t("d", "degraded", 20),
        _t("d", "unavailable", 30),
        _t("d", "ready", 90),
        _t("d", "unavailable", 100),
    ]
    first, second = outages(history, [(0, 40), (60, 200)], now=200)
    assert [s.state for s in first.steps] == ["unavailable", "degraded", "unavailable", "ready"]
    assert (first.start, first.end, first.gaps) == (10, 90, ((40, 60),))
    assert (second.start, second.end, second.gaps) == (100, None, ())


async def test_concurrent_readers_share_one_computation() -> None:
    cache: SharedValue[int] = SharedValue(ttl_s=600)
    computed = 0
    release = asyncio.Event()

    async def compute() -> int:
        nonlocal computed
        computed += 1
        await release.wait()
        return computed

    readers = [asyncio.create_task(cache.get(compute)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    values = [fresh.value for fresh in await asyncio.gather(*readers)]
    assert values == [1] * 5
    assert computed == 1
    assert (await cache.get(compute)).value == 1  # fresh: not computed again
    assert 0 < (await cache.get(compute)).max_age <= 600


# ─── the store ───────────────────────────────────────────────────────────────────────


async def test_process_lifetimes_are_recorded_and_read_by_overlap(store_url: str) -> None:
    db = open_database(store_url)
    history = SqlServiceHistory(db)
    try:
        first = await history.begin_observing(100.0)
        await history.still_observing(first, 200.0)
        await history.still_observing(first, 150.0)  # a late heartbeat never moves it back
        second = await history.begin_observing(500.0)
        await history.still_observing(second, 600.0)
        assert first != second
        assert await history.observed(0, 1000) == [(100.0, 200.0), (500.0, 600.0)]
        assert await history.observed(250, 400) == []
        assert await history.observed(150, 550) == [(100.0, 200.0), (500.0, 600.0)]
    finally:
        db.engine.dispose()


async def test_attempts_are_counted_per_deployment_and_utc_day_by_the_vocabulary(
    store_url: str,
) -> None:
    db = open_database(store_url)
    store = SqlTelemetryStore(db)
    day = datetime(2025, 3, 1, tzinfo=UTC).timestamp()
    outcomes = ["ok", "ok", "ok", "service_unavailable", "timeout", "blocked", "bad_request"]
    outcomes += ["cancelled", "quality_rejected", "circuit_open", "at_capacity", "queue_timeout"]
    rows = [_row("a", o, day + 3600 + i) for i, o in enumerate(outcomes)]
    rows += [_row("b", "ok", day + 7200), _row(None, "rate_limited", day + 7200)]
    rows += [_row("a", "upstream_error", day + DAY_S + 10)]  # the next UTC day
    try:
        await store.write(rows)
        counts = await store.attempt_counts(day, day + 2 * DAY_S, by_day=True)
        by_key = {(c.deployment, c.day): (c.attempts, c.failed, c.answered) for c in counts}
        assert by_key == {
            # sent: 12 minus circuit_open, at_capacity, queue_timeout; failed: 2 of them
            ("a", "2025-03-01"): (9, 2, 3),
            ("a", "2025-03-02"): (1, 1, 0),
            ("b", "2025-03-01"): (1, 0, 1),
        }
        window = await store.attempt_counts(day, day + DAY_S, by_day=False)
        assert {(c.deployment, c.day, c.attempts, c.failed) for c in window} == {
            ("a", None, 9, 2),
            ("b", None, 1, 0),
        }
    finally:
        db.engine.dispose()


# ─── the page, over HTTP ─────────────────────────────────────────────────────────────


def test_a_gap_between_two_process_lifetimes_is_no_data_and_not_counted(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    _clear_of_midnight()
    start = _midnight(2)
    gateway = build_runtime(_settings(tmp_path, fault_server.base_url, "cache_ttl_s = 0"), env={})
    history = gateway.history
    for state, at in (("ready", start), ("unavailable", start + 3 * H), ("ready", start + 20 * H)):
        run(history.record("up", state, "", at))
    first = run(history.begin_observing(start))
    run(history.still_observing(first, start + 6 * H))  # then no gateway ran until 18:00
    second = run(history.begin_observing(start + 18 * H))
    run(history.still_observing(second, time.time()))
    with LiveServer(gateway) as live:
        page = _get(live, "/status", Accept=BROWSER).text
        up = _component(live, "up")
        (incident,) = _get(live, "/api/v2/incidents.json").json()["incidents"]
    # 03:00-06:00 down, 06:00-18:00 not observed, 18:00-20:00 observed with no state
    # recorded (the outage before the gap does not resume), up the rest: 7 h up of 10.
    title = "70.00% up (recorded for 41.7% of the day; not observed for 50.0%); no requests"
    assert f'title="{_day(2)}: {title}"' in page
    assert f'title="{_day(3)}: no data (not observed); no requests"' in page
    assert f'title="{_day(1)}: 100.00% up; no requests"' in page
    assert up["sincere"]["uptime"]["7d"]["down_s"] == 3 * H
    # The outage is one incident, resolved when recorded ready, the unobserved time said.
    assert incident["id"] == outage_id("up", start + 3 * H)
    assert incident["status"] == "resolved"
    assert incident["resolved_at"].startswith(f"{_day(2)}T20:00:00")
    bodies = [u["body"] for u in incident["incident_updates"]]
    assert bodies[0] == "up is operational again."
    assert bodies[-1] == "up is unavailable."
    assert any(b.startswith("Not observed from") for b in bodies)


def test_day_bars_count_requests_and_answered_requests_cover_a_day_without_records(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    _clear_of_midnight()
    extra = "[telemetry]\nflush_s = 0.05\nretention_days = 5\n"
    settings = _settings(tmp_path, fault_server.base_url, "cache_ttl_s = 0", extra)
    gateway = build_runtime(settings, env={})
    process = run(gateway.history.begin_observing(_midnight(7)))
    run(gateway.history.still_observing(process, _midnight(2)))  # observed D-7 to D-3
    store = gateway.telemetry.store
    rows = [_row("up", "ok", _midnight(3) + 10 * H), _row("up", "ok", _midnight(3) + 11 * H)]
    rows += [_row("up", "service_unavailable", _midnight(3) + 12 * H)]
    rows += [_row("up", "timeout", _midnight(4) + H), _row("up", "timeout", _midnight(4) + 2 * H)]
    rows += [_row("up", "ok", _midnight(6) + H)]  # older than the retention: not counted
    run(store.write(rows))
    fault_server.script(Fault.ok(), Fault.ok(), Fault.status(503))
    with LiveServer(gateway) as live:
        key, _ = run(gateway.keys.create("alice", "free"))
        assert [_chat(live, key).status_code for _ in range(3)] == [200, 200, 503]
        today = f"{_day(0)}: "

        def counted() -> bool:
            return "3 requests, 1 failed" in _bar(live, today)

        _until(counted, "today's requests counted")
        up = _component(live, "up")
        d3, d4, d6 = _bar(live, _day(3)), _bar(live, _day(4)), _bar(live, _day(6))
    # No transition on D-3, observed all day, answered: covered (up), with its counts.
    assert d3 == f"{_day(3)}: 100.00% up; 3 requests, 1 failed"
    # D-4: only failures, no state recorded: no data, but its requests are told.
    assert d4 == f"{_day(4)}: no data (no state recorded); 2 requests, 2 failed"
    assert d6 == f"{_day(6)}: no data (no state recorded)"  # its rows are not all kept
    assert up["sincere"]["requests_counted_since"] == _day(4)
    by_day = {d["date"]: (d["requests"], d["failed"]) for d in up["sincere"]["requests_by_day"]}
    assert by_day == {_day(4): (2, 2), _day(3): (3, 1), _day(0): (3, 1)}


def _bar(live: LiveGateway, prefix: str) -> str:
    """The title of the first bar of the page (the deployment's) that starts ``prefix``."""
    page = _get(live, "/status", Accept=BROWSER).text
    start = page.index(f'title="{prefix}') + len('title="')
    return page[start : page.index('"', start)]


def test_a_closed_circuit_failing_at_the_threshold_is_a_partial_outage(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    status = "cache_ttl_s = 0\npartial_window_s = 300\npartial_failure_share = 0.5\n"
    status += "partial_min_attempts = 4\n"
    settings = _settings(tmp_path, fault_server.base_url, status, "[telemetry]\nflush_s = 0.05\n")
    gateway = build_runtime(settings, env={})
    fault_server.script(Fault.status(503), Fault.ok(), Fault.status(503), Fault.ok())
    with LiveServer(gateway) as live:
        key, _ = run(gateway.keys.create("alice", "free"))
        assert [_chat(live, key).status_code for _ in range(3)] == [503, 200, 503]

        def up() -> dict[str, Any]:
            body = _get(live, "/status").json()
            found: dict[str, Any] = next(s for s in body["services"] if s["name"] == "up")
            return found

        _until(lambda: up().get("recent_attempts", {}).get("attempts") == 3, "3 recorded")
        assert up()["state"] == "operational"  # 2 of 3 failed, but 3 < 4: the rule is silent
        assert _chat(live, key).status_code == 200
        _until(lambda: up()["state"] == "partial_outage", "the partial outage")
        service = up()
        assert (
            service["partial_outage"]["description"] == "2 of 4 requests failed in the last 5 min"
        )
        assert service["since_basis"] == "failure_share"
        assert _get(live, "/api/v2/status.json").json()["status"]["indicator"] == "minor"
        assert _component(live, "up")["status"] == "partial_outage"
        health = _get(live, "/health").json()
        assert health["checks"]["up:circuit"][0]["status"] == "pass"  # the circuit is closed
        page = _get(live, "/status", Accept=BROWSER).text
        assert "Partial outage: 2 of 4 requests failed in the last 5 min" in page


def test_a_recorded_outage_is_an_incident_with_the_same_id_after_a_restart(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    settings = _settings(tmp_path, fault_server.base_url, "cache_ttl_s = 0")
    gateway = build_runtime(settings, env={})
    t0 = time.time() - 600
    process = run(gateway.history.begin_observing(t0))
    run(gateway.history.still_observing(process, time.time()))
    for state, at in (("unavailable", 10), ("degraded", 20), ("unavailable", 30), ("degraded", 40)):
        run(gateway.history.record("up", state, "up: circuit ...", t0 + at))
    with LiveServer(gateway) as live:
        (open_one,) = _get(live, "/api/v2/incidents/unresolved.json").json()["incidents"]
        summary = _get(live, "/api/v2/summary.json").json()
        feed = _get(live, "/status/feed.atom").text
        run(gateway.history.record("up", "ready", "", t0 + 50))
        (resolved,) = _get(live, "/api/v2/incidents.json").json()["incidents"]
    assert open_one["id"] == outage_id("up", t0 + 10)
    assert open_one["status"] == "monitoring"  # a probe is testing it
    assert open_one["impact"] == "major"
    assert open_one["resolved_at"] is None
    assert [u["status"] for u in open_one["incident_updates"]] == [
        "monitoring",
        "investigating",
        "monitoring",
        "investigating",
    ]
    assert "circuit" not in str(open_one)  # the recorded messages are for operators only
    assert [c["name"] for c in open_one["components"]] == ["up"]
    assert [i["id"] for i in summary["incidents"]] == [open_one["id"]]
    assert f"urn:sincere:incident:{open_one['id']}" in feed
    assert resolved["status"] == "resolved"
    assert resolved["incident_updates"][0]["body"] == "up is operational again."

    again = build_runtime(settings, env={})  # another process, on the same store
    with LiveServer(again) as live:
        (same,) = _get(live, "/api/v2/incidents.json").json()["incidents"]
    assert (same["id"], same["status"], same["created_at"]) == (
        resolved["id"],
        "resolved",
        resolved["created_at"],
    )


def test_an_outage_covered_by_an_escalation_incident_is_one_incident(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    settings = _settings(tmp_path, fault_server.base_url, "cache_ttl_s = 0")
    gateway = build_runtime(settings, env={})
    fault_server.default = Fault.status(503)
    with LiveServer(gateway) as live:
        key, _ = run(gateway.keys.create("bob", "enterprise"))
        failed = [_chat(live, key) for _ in range(5)]  # the fifth failure opens the circuit
        incident_id = failed[0].json()["error"]["incident_id"]
        _until(
            lambda: any(t.state == "unavailable" for t in run(gateway.history.recent("up"))),
            "the circuit's opening recorded",
        )
        (merged,) = _get(live, "/api/v2/incidents.json").json()["incidents"]
        assert merged["id"] == incident_id  # the escalation incident's, not a second one
        bodies = [u["body"] for u in merged["incident_updates"]]
        assert "up is unavailable." in bodies
        assert any(b.startswith("Requests to up are failing") for b in bodies)
        assert merged["status"] == "investigating"

        fault_server.default = Fault.ok()  # the probe closes the circuit: both resolve

        def resolved() -> bool:
            incidents = _get(live, "/api/v2/incidents.json").json()["incidents"]
            return [i["status"] for i in incidents] == ["resolved"]

        _until(resolved, "the merged incident resolved")
        (merged,) = _get(live, "/api/v2/incidents.json").json()["incidents"]
    assert merged["id"] == incident_id
    bodies = [u["body"] for u in merged["incident_updates"]]
    assert "up is operational again." in bodies
    assert any("failed requests in all" in b for b in bodies)


async def test_the_stores_own_outage_is_written_with_its_true_time_when_it_is_back(
    tmp_path: Path, fault_server: FaultServer, fresh_schema: str
) -> None:
    proxy = await RedisCut(port=5432).start()  # a TCP proxy to PostgreSQL, cut at will
    url = fresh_schema.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    settings = _settings(
        tmp_path,
        fault_server.base_url,
        "check_interval_s = 0.1\ncache_ttl_s = 0",
        f'[store]\nurl = "{url}"\n',
    )
    direct = create_engine(fresh_schema)  # the test's own view of the store, never cut

    def rows(sql: str) -> list[Any]:
        with direct.connect() as conn:
            return list(conn.execute(text(sql)).all())

    def store_states() -> list[tuple[str, float]]:
        sql = "SELECT state, at FROM service_transitions WHERE service = 'backend:store'"
        return [(state, at) for state, at in rows(sql + " ORDER BY at, id")]

    # Synchronous (it migrates): off this loop, which carries the proxy's traffic.
    runtime = await asyncio.to_thread(build_runtime, settings, env={})
    server = LiveServer(runtime)
    live = await asyncio.to_thread(server.__enter__)
    try:
        watch = status_watch.of(server.server.config.app)
        await _until_async(lambda: [s for s, _ in store_states()] == ["ready"], "ready")
        proxy.cut()
        await _until_async(
            lambda: (o := watch.current(STORE)) is not None and o.state == "unavailable",
            "the outage measured",
        )
        observed = watch.current(STORE)
        assert observed is not None
        await asyncio.sleep(0.3)  # a few ticks while it is down: nothing can be written
        assert [s for s, _ in await asyncio.to_thread(store_states)] == ["ready"]
        back = time.time()
        proxy.restore()
        await _until_async(lambda: len(store_states()) == 3, "the outage written")
        (_, ready_at), (down, down_at), (up, up_at) = await asyncio.to_thread(store_states)
        assert (down, up) == ("unavailable", "ready")
        assert down_at == observed.since < back < up_at  # its true time, not when written
        ((started, _),) = await asyncio.to_thread(
            rows, "SELECT started_at, last_seen_at FROM gateway_processes"
        )
        # The lifetime covers the outage: the process observed it all along.
        await _until_async(
            lambda: rows("SELECT last_seen_at FROM gateway_processes")[0][0] >= up_at,
            "a heartbeat after the outage",
        )
        assert started <= ready_at
        async with httpx.AsyncClient(timeout=GUARD_S) as client:
            incidents = (await client.get(live.url + "/api/v2/incidents.json")).json()
            components = (await client.get(live.url + "/api/v2/components.json")).json()
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)
        await proxy.aclose()
        await asyncio.to_thread(direct.dispose)
    (incident,) = incidents["incidents"]
    assert incident["id"] == outage_id(STORE, down_at)
    assert incident["name"] == "store unavailable"
    assert incident["status"] == "resolved"
    store = next(c for c in components["components"] if c["name"] == "store")
    assert store["sincere"]["uptime"]["24h"]["down_s"] == pytest.approx(up_at - down_at, abs=1e-3)
    assert store["status"] == "operational"


async def test_redis_transitions_are_recorded_and_dated_on_the_page(
    tmp_path: Path, fault_server: FaultServer, prefix: str
) -> None:
    proxy = await RedisCut().start()
    extra = f'[cluster]\nredis_url = "{proxy.url}"\nkey_prefix = "{prefix}"\n'
    status = "check_interval_s = 0.1\ncache_ttl_s = 0"
    settings = _settings(tmp_path, fault_server.base_url, status, extra)
    runtime = await asyncio.to_thread(build_runtime, settings, env={})
    server = LiveServer(runtime)
    live = await asyncio.to_thread(server.__enter__)

    def states() -> list[str]:
        return [t.state for t in reversed(run(runtime.history.recent("backend:redis")))]

    def redis_now() -> dict[str, Any]:
        body = httpx.get(live.url + "/status", timeout=GUARD_S).json()
        found: dict[str, Any] = next(b for b in body["backends"] if b["name"] == "redis")
        return found

    def settled() -> bool:  # measured up, and that change written
        redis = redis_now()
        latest = redis["recent_transitions"][0]
        return redis["state"] == latest["state"] == "operational" and redis["since"] == latest["at"]

    try:
        await _until_async(lambda: states() == ["ready"], "Redis ready recorded")
        proxy.cut()
        await _until_async(lambda: states()[-1:] == ["unavailable"], "its outage")
        proxy.restore()
        await _until_async(settled, "its return")
        redis = await asyncio.to_thread(redis_now)
        async with httpx.AsyncClient(timeout=GUARD_S) as client:
            incidents = (await client.get(live.url + "/api/v2/incidents.json")).json()
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)
        await proxy.aclose()
    assert redis["since_basis"] == "transition"
    recorded = [t["state"] for t in reversed(redis["recent_transitions"])]
    assert recorded[:3] == ["operational", "major_outage", "operational"]
    # A connection Redis closed during the cut may fail one more PING once it is back: that
    # is measured (and recorded) too, so there may be more than one outage, all resolved.
    assert {(i["name"], i["status"]) for i in incidents["incidents"]} == {
        ("redis unavailable", "resolved")
    }


def test_the_page_is_computed_once_for_many_readers_and_says_how_old_it_is(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    gateway = build_runtime(_settings(tmp_path, fault_server.base_url, "cache_ttl_s = 600"), env={})
    reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "gateway_processes" in statement:
            reads.append(statement)  # one read of the lifetimes per computation

    event.listen(gateway.database.engine, "before_cursor_execute", count)
    paths = ["/api/v2/summary.json", "/api/v2/components.json", "/api/v2/status.json"] * 3

    async def read_all(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=GUARD_S) as client:
            return list(await asyncio.gather(*(client.get(url + p) for p in paths)))

    with LiveServer(gateway) as live:
        first = run(read_all(live.url))
        later = [_get(live, "/status", Accept=BROWSER), _get(live, "/status/feed.atom")]
        again = _get(live, "/api/v2/status.json")
    assert len(reads) == 1
    assert {r.status_code for r in first} == {200}
    updated = {r.json()["page"]["updated_at"] for r in [*first, again]}
    assert len(updated) == 1  # its true age: the time it was computed, on every read
    ages = [int(r.headers["cache-control"].split("max-age=")[1]) for r in [*first, *later, again]]
    assert all(0 < age <= 600 for age in ages)
    assert ages[-1] <= ages[0]
    assert updated.pop() in later[0].text  # the HTML's "Generated at"


def test_the_public_json_of_status_is_not_cached(live: LiveGateway) -> None:
    response = _get(live, "/status")
    assert "cache-control" not in response.headers
    assert {b["name"] for b in response.json()["backends"]} == {"store"}
    (store,) = response.json()["backends"]
    assert store["since_basis"] in ("process_start", "transition")


class _Recorded:
    """The real store's counts, with the start of every read noted."""

    def __init__(self, store: SqlTelemetryStore) -> None:
        self.store = store
        self.starts: list[float] = []

    async def attempt_counts(self, start: float, end: float, *, by_day: bool) -> list[Any]:
        self.starts.append(start)
        return await self.store.attempt_counts(start, end, by_day=by_day)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_a_final_days_counts_are_read_once_and_an_open_days_every_time(
    store_url: str,
) -> None:
    _clear_of_midnight()
    db = open_database(store_url)
    store = SqlTelemetryStore(db)
    recorded = _Recorded(store)
    today, yesterday, older = (date.fromisoformat(_day(n)) for n in (0, 1, 3))
    now = _midnight(0) + 2 * 3600  # two hours into today: yesterday is final after one
    days = DayCounts(recorded, final_after=3600)
    try:
        await store.write([_row("a", "ok", _midnight(3) + 10), _row("a", "timeout", _midnight(1))])
        await store.write([_row("a", "ok", _midnight(0) + 10)])
        first = await days.read(now - 90 * DAY_S, now)
        assert {d: c.attempts for d, c in first["a"].items()} == {older: 1, yesterday: 1, today: 1}
        assert first["a"][yesterday].failed == 1
        # Rows that would change a final day are not read again (none can come: the rule);
        # today's are.
        await store.write([_row("a", "ok", _midnight(3) + 20), _row("a", "ok", _midnight(0) + 20)])
        second = await days.read(now - 90 * DAY_S + 60, now + 60)
        assert {d: c.attempts for d, c in second["a"].items()} == {older: 1, yesterday: 1, today: 2}
        assert recorded.starts == [_midnight(90), _midnight(0)]  # all 90 days once, then today
        # A day that is not final yet (yesterday within its first hour) is read again.
        fresh = DayCounts(recorded, final_after=3 * 3600)
        await fresh.read(now - 90 * DAY_S, now)
        await fresh.read(now - 90 * DAY_S, now)
        assert recorded.starts[-1] == _midnight(1)
    finally:
        db.engine.dispose()


async def test_a_watch_that_did_not_run_for_a_while_begins_a_new_lifetime_and_ends_its_last(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    """A tick far later than due (the process was suspended, the machine slept) must not
    stretch the observed time over the pause; stopping writes the lifetime's last moment."""
    gateway = build_runtime(_settings(tmp_path, fault_server.base_url), env={})
    clock = ManualClock(unix=gateway.started_at)
    watch = status_watch.StatusWatch(gateway, clock=clock.time)
    interval = gateway.settings.status.check_interval_s
    try:
        await watch.tick()
        clock.advance(interval)
        await watch.tick()  # on time: the same lifetime, extended
        first_end = clock.time()
        clock.advance(interval + status_watch.STALL_S + 1)  # the process did not run
        await watch.tick()
        resumed = clock.time()
        clock.advance(5)
        task = asyncio.create_task(watch.run())  # its first tick at resumed + 5
        await asyncio.sleep(0.2)
        clock.advance(3)  # before its next tick, the process stops
        task.cancel()  # the way out writes the lifetime's end
        with contextlib.suppress(asyncio.CancelledError):
            await task
        lifetimes = await gateway.history.observed(0, clock.time() + 1)
    finally:
        await gateway.aclose()
    assert lifetimes == [(gateway.started_at, first_end), (resumed, resumed + 8)]


class _Held(_Recorded):
    """The real store's counts, each read held until the test lets it go."""

    def __init__(self, store: SqlTelemetryStore) -> None:
        super().__init__(store)
        self.go = asyncio.Event()

    async def attempt_counts(self, start: float, end: float, *, by_day: bool) -> list[Any]:
        self.starts.append(start)
        await self.go.wait()
        return await self.store.attempt_counts(start, end, by_day=by_day)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_a_count_read_the_page_gave_up_on_runs_on_and_is_kept(store_url: str) -> None:
    _clear_of_midnight()
    db = open_database(store_url)
    store = SqlTelemetryStore(db)
    held = _Held(store)
    now = _midnight(0) + 2 * 3600
    days = DayCounts(held, final_after=3600)
    try:
        await store.write([_row("a", "ok", _midnight(3) + 10)])
        with pytest.raises(TimeoutError):  # the page's bound on its reads: it gives up
            await asyncio.wait_for(days.read(now - 90 * DAY_S, now), 0.05)
        held.go.set()  # the long read ends after all
        counts = await days.read(now - 90 * DAY_S, now)  # the same read's result
        assert counts["a"][date.fromisoformat(_day(3))].attempts == 1
        await days.read(now - 90 * DAY_S, now)
        # One read of the 90 days, never started again; then only today's.
        assert held.starts == [_midnight(90), _midnight(0)]
    finally:
        db.engine.dispose()
