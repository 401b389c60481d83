"""The public status page over real HTTP: HTML for browsers, the same JSON for API clients,
Statuspage's API v2 shapes, an Atom feed of escalated incidents, and uptime computed exactly
from recorded transitions ("no data" where nothing was recorded)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from sincere.ports import RecordedTransition
from sincere.uptime import DAY_S, daily, spans, uptime, windows
from tests.faults import Fault, FaultServer
from tests.live import LiveGateway, run

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
ATOM = "{http://www.w3.org/2005/Atom}"
COMPONENT_KEYS = {
    "id",
    "name",
    "status",
    "created_at",
    "updated_at",
    "position",
    "description",
    "showcase",
    "group_id",
    "group",
    "only_show_if_degraded",
}
STATES = {"operational", "degraded_performance", "partial_outage", "major_outage"}


def _t(service: str, state: str, at: float) -> RecordedTransition:
    return RecordedTransition(service, state, "", at)


def _clear_of_midnight() -> None:
    """The page dates its bars by the server's clock: keep a test out of the minute before
    UTC midnight, where the day could change between setting up and reading the page."""
    left = 86_400 - time.time() % 86_400
    if left < 60:
        time.sleep(left + 1)


def _midnight(days_ago: int) -> float:
    today = datetime.now(UTC).date() - timedelta(days=days_ago)
    return datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp()


def test_uptime_is_exact_over_the_recorded_time_only() -> None:
    # 10 s of no data, then up 60 s, degraded 20 s, down 10 s, unknown 5 s, up 5 s.
    history = [
        _t("d", "ready", 10),
        _t("d", "degraded", 70),
        _t("d", "unavailable", 90),
        _t("d", "unknown", 100),
        _t("d", "ready", 105),
    ]
    u = uptime(spans(history, end=110), 0, 110)
    assert (u.up_s, u.degraded_s, u.down_s) == (65, 20, 10)
    assert u.covered_s == 95
    assert u.percent == pytest.approx(100 * 85 / 95)  # degraded counts as up
    assert u.coverage == pytest.approx(95 / 110)
    assert uptime(spans(history, end=110), 0, 10).percent is None  # before the first record
    assert uptime(spans([], end=110), 0, 110).to_dict()["uptime_percent"] is None


def test_daily_bars_say_no_data_before_the_first_record_and_windows_cover_it() -> None:
    now = _midnight(0) + 6 * 3600  # 06:00 today
    start = _midnight(2)  # two days ago, 00:00
    history = [
        _t("d", "ready", start),
        _t("d", "unavailable", start + 12 * 3600),
        _t("d", "ready", start + 18 * 3600),
    ]
    days = daily(spans(history, now), now)
    assert len(days) == 90
    assert [d.kind for d in days[:87]] == ["no_data"] * 87
    assert days[0].title.endswith(": no data")
    assert days[-3].kind == "down"
    assert days[-3].uptime.percent == pytest.approx(75.0)
    assert "75.00% up" in days[-3].title
    assert days[-2].kind == days[-1].kind == "up"
    assert days[-1].uptime.percent == 100.0
    w = windows(spans(history, now), now)
    assert w["24h"].percent == 100.0
    covered = 2 * DAY_S + 6 * 3600
    assert w["7d"].percent == pytest.approx(100 * (covered - 6 * 3600) / covered)
    assert w["90d"].coverage == pytest.approx(covered / (90 * DAY_S))


def test_the_history_between_two_times_starts_with_the_state_before(live: LiveGateway) -> None:
    history = live.gateway.history
    for state, at in (("ready", 100.0), ("unavailable", 200.0), ("ready", 300.0)):
        run(history.record("x", state, "", at))
    assert [(t.state, t.at) for t in run(history.between("x", 250, 400))] == [
        ("unavailable", 200.0),
        ("ready", 300.0),
    ]
    assert run(history.between("x", 0, 150)) == [_t("x", "ready", 100.0)]
    assert run(history.between("x", 0, 50)) == []


def test_a_browser_gets_the_page_with_states_bars_and_no_data(live: LiveGateway) -> None:
    _clear_of_midnight()
    start = _midnight(2)
    for state, at in (("ready", start), ("unavailable", start + 43200), ("ready", start + 64800)):
        run(live.gateway.history.record("up", state, "", at))
    # A gateway process observed from then on (the states hold only while one did).
    process = run(live.gateway.history.begin_observing(start))
    run(live.gateway.history.still_observing(process, time.time()))
    response = httpx.get(live.url + "/status", headers={"Accept": BROWSER}, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<script" not in page
    for name in ("up", "store"):
        assert f"{name} <span" in page
    assert "Operational" in page
    two_days_ago = (datetime.now(UTC).date() - timedelta(days=2)).isoformat()
    assert f'title="{two_days_ago}: 75.00% up; no requests"' in page
    three_days_ago = (datetime.now(UTC).date() - timedelta(days=3)).isoformat()
    assert f'title="{three_days_ago}: no data (not observed); no requests"' in page
    assert page.count('class="bar-') >= 90 * 2  # a deployment and the store, 90 days each
    # The recorded outage is an incident of its own, resolved when it was recorded ready.
    assert 'up unavailable <span class="small">(resolved)</span>' in page


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_api_clients_keep_the_json(live: LiveGateway, accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}
    response = httpx.get(live.url + "/status", headers=headers, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"status", "generated_at", "services", "backends"}
    assert {s["name"] for s in body["services"]} >= {"up"}


def test_the_statuspage_api_v2_shapes(live: LiveGateway) -> None:
    def get(path: str) -> dict[str, object]:
        response = httpx.get(live.url + "/api/v2/" + path, timeout=10)
        assert response.status_code == 200
        body: dict[str, object] = response.json()
        assert set(body["page"]) >= {"id", "name", "url", "updated_at"}  # type: ignore[arg-type]
        return body

    status = get("status.json")
    assert status["status"] == {"indicator": "none", "description": "All Systems Operational"}
    components = get("components.json")["components"]
    assert isinstance(components, list)
    assert {c["name"] for c in components} >= {"up", "store"}
    for c in components:
        assert set(c) >= COMPONENT_KEYS
        assert c["status"] in STATES
    again = get("components.json")["components"]
    assert [c["id"] for c in again] == [c["id"] for c in components]  # stable ids
    assert get("incidents.json")["incidents"] == []
    summary = get("summary.json")
    assert set(summary) == {"page", "status", "components", "incidents", "scheduled_maintenances"}
    assert summary["scheduled_maintenances"] == []


def test_an_escalated_incident_is_in_the_feed_and_the_api(
    live: LiveGateway, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.status(503)
    response = httpx.post(
        live.v1 + "/chat/completions",
        json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {live.keys['bob']}"},  # enterprise
        timeout=30,
    )
    assert response.status_code >= 500
    incident_id = response.json()["error"]["incident_id"]

    (incident,) = httpx.get(live.url + "/api/v2/incidents.json", timeout=10).json()["incidents"]
    assert incident["id"] == incident_id
    assert incident["status"] == "investigating"
    assert incident["incident_updates"][-1]["status"] == "investigating"
    assert {"id", "status", "body", "created_at", "updated_at", "display_at"} <= set(
        incident["incident_updates"][0]
    )
    assert [c["name"] for c in incident["components"]] == ["up"]
    summary = httpx.get(live.url + "/api/v2/summary.json", timeout=10).json()
    assert [i["id"] for i in summary["incidents"]] == [incident_id]  # unresolved

    for path in ("/status/feed.atom", "/history.atom"):
        feed = httpx.get(live.url + path, timeout=10)
        assert feed.status_code == 200
        assert feed.headers["content-type"].startswith("application/atom+xml")
        root = ET.fromstring(feed.content)
        assert root.tag == f"{ATOM}feed"
        for tag in ("id", "title", "updated"):
            assert root.find(f"{ATOM}{tag}") is not None
        (entry,) = root.findall(f"{ATOM}entry")
        assert entry.findtext(f"{ATOM}id") == f"urn:sincere:incident:{incident_id}"
        assert "up" in (entry.findtext(f"{ATOM}title") or "")
        assert entry.find(f"{ATOM}link") is not None
        assert "investigating" in (entry.findtext(f"{ATOM}content") or "")
        assert entry.findtext(f"{ATOM}updated")
    page = httpx.get(live.url + "/status", headers={"Accept": BROWSER}, timeout=10).text
    assert f'id="{incident_id}"' in page
