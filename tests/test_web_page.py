"""The web page in a real browser (Debian's Chromium through Playwright) against a real
gateway whose deployments are fault servers: the playground's chat, provenance, errors,
queue places and live events, the status page without JavaScript, and keyboard-only use."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser import chromium
from tests.faults import Fault, FaultServer
from tests.live import LiveGateway, run
from tests.redis_cut import RedisCut
from tests.web_site import SPARE_TEXT, UP_TEXT, web_site

T = TypeVar("T")
GUARD_MS = 30_000  # a hang guard: only a broken page takes this long
expect.set_options(timeout=GUARD_MS)


@pytest.fixture
def browser() -> Iterator[Browser]:
    # One per test, set up after the suite's async fixtures: while Playwright's sync API is
    # started it holds this thread's event loop, which pytest-asyncio needs between tests.
    with chromium() as b:
        yield b


@pytest.fixture
def spare() -> Iterator[FaultServer]:
    with FaultServer(Fault.ok(SPARE_TEXT)) as server:
        yield server


@pytest.fixture
def site(
    request: pytest.FixtureRequest, tmp_path: Path, fault_server: FaultServer, spare: FaultServer
) -> Iterator[LiveGateway]:
    """Model 'gpt' on deployment 'up' (one request at a time), falling back to 'backup' on
    'spare'; heartbeats every 0.5 s so that the page notices a dead link quickly. An indirect
    parameter sets how many events are kept per user for replay."""
    history = getattr(request, "param", {}).get("event_history", 1000)
    fault_server.default = Fault.ok(UP_TEXT)
    with web_site(tmp_path, fault_server, spare, event_history=history) as live:
        yield live


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 375, "height": 800})
    ctx.set_default_timeout(GUARD_MS)
    yield ctx
    ctx.close()


def _open(context: BrowserContext, site: LiveGateway) -> Page:
    """The playground with alice's key entered and the models listed."""
    page = context.new_page()
    page.goto(site.url + "/")
    page.get_by_label("Your sincere API key").fill(site.keys["alice"])
    page.get_by_role("button", name="Use this key").click()
    expect(page.get_by_label("Model")).to_have_value("gpt")
    expect(page.locator("#events-state")).to_have_text("Live.")
    return page


def _ask(page: Page, prompt: str) -> None:
    page.get_by_label("Message").fill(prompt)
    page.get_by_role("button", name="Send", exact=True).click()


def _event_ids(page: Page) -> list[int]:
    ids = page.locator("#events li[data-event-id]").evaluate_all(
        "items => items.map(i => Number(i.dataset.eventId))"
    )
    return [int(i) for i in ids]


def test_a_chat_is_answered_with_its_provenance_and_the_key_stays_in_the_tab(
    context: BrowserContext, site: LiveGateway, fault_server: FaultServer
) -> None:
    page = _open(context, site)
    with page.expect_response("**/v1/chat/completions") as answered:
        _ask(page, "What is the capital of France?")
    rid = answered.value.headers["x-request-id"]
    turn = page.get_by_role("article", name="Answer 1")
    expect(turn).to_have_attribute("data-state", "answered")
    expect(turn.locator(".answer")).to_have_text(UP_TEXT)
    provenance = turn.locator("dl.provenance")
    expect(provenance).to_contain_text("Deploymentup")
    expect(provenance.locator(".attempts li")).to_have_count(1)
    expect(provenance.locator(".attempts li")).to_contain_text("up (gpt): ok")
    expect(provenance).to_contain_text(re.compile(r"Tokens\d+ in, \d+ out"))
    expect(provenance).to_contain_text(re.compile(r"Cost\$\d+\.\d{6}"))
    expect(provenance).to_contain_text(re.compile(r"Latency\d+ ms"))
    expect(provenance).to_contain_text(re.compile(r"First token\d+ ms"))
    expect(provenance).to_contain_text(f"Request id{rid}")
    # The events panel shows the request's own events, live.
    expect(page.locator("#events")).to_contain_text("request completed")
    # The key is in this tab's session storage only: no cookie, never in a URL.
    key = site.keys["alice"]
    assert page.evaluate("sessionStorage.getItem('sincere.key')") == key
    assert context.cookies() == []
    assert key not in page.url
    # A second turn carries the conversation: the upstream sees the first answer.
    _ask(page, "And of Italy?")
    expect(page.get_by_role("article", name="Answer 2")).to_have_attribute("data-state", "answered")
    sent = fault_server.completions[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == UP_TEXT


def test_a_failing_primary_shows_its_degraded_event_while_the_fallback_answers(
    context: BrowserContext, site: LiveGateway, fault_server: FaultServer, spare: FaultServer
) -> None:
    fault_server.script(Fault.status(503, message="upstream overloaded"))
    spare.default = Fault.ok(SPARE_TEXT, delay_s=2.0)  # the fallback takes its time
    page = _open(context, site)
    _ask(page, "What is the capital of France?")
    turn = page.get_by_role("article", name="Answer 1")
    degraded = page.locator("#events li.ev-service_degraded")
    expect(degraded).to_contain_text("up failed (service_unavailable)")
    # Seen while it happens: the answer has not arrived yet.
    assert turn.get_attribute("data-state") != "answered"
    expect(turn).to_have_attribute("data-state", "answered")
    expect(turn.locator(".answer")).to_have_text(SPARE_TEXT)
    attempts = turn.locator("dl.provenance .attempts li")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text("up (gpt): service_unavailable HTTP 503")
    expect(attempts.nth(1)).to_contain_text("spare (backup): ok")
    expect(turn.locator("dl.provenance")).to_contain_text("Deploymentspare")


def test_all_routes_down_shows_the_error_its_request_id_and_a_retry_after_countdown(
    context: BrowserContext, site: LiveGateway, fault_server: FaultServer, spare: FaultServer
) -> None:
    fault_server.default = Fault.rate_limited(retry_after=6)
    spare.default = Fault.rate_limited(retry_after=6)
    page = _open(context, site)
    with page.expect_response("**/v1/chat/completions") as failed:
        _ask(page, "What is the capital of France?")
    response = failed.value
    assert response.status == 429
    rid = response.headers["x-request-id"]
    turn = page.get_by_role("article", name="Answer 1")
    expect(turn).to_have_attribute("data-state", "failed")
    expect(turn.locator(".state")).to_contain_text("Failed: 429")
    error = turn.locator("dl.error-detail")
    expect(error).to_contain_text(f"Request id{rid}")
    expect(error.locator(".attempts li")).to_have_count(2)
    expect(error.locator(".attempts li").nth(0)).to_contain_text("up (gpt)")
    expect(error.locator(".attempts li").nth(1)).to_contain_text("spare (backup)")
    countdown = turn.locator(".retry-countdown")
    expect(countdown).to_contain_text(re.compile(r"retry in \d+ s"))
    first = int(re.findall(r"\d+", countdown.inner_text())[0])
    assert first == int(response.headers["retry-after"])
    retry = turn.get_by_role("button", name="Send again")
    expect(retry).to_be_disabled()
    expect(countdown).to_contain_text(f"retry in {first - 1} s")  # it counts down
    expect(countdown).to_have_text("you may retry now", timeout=GUARD_MS)
    expect(retry).to_be_enabled()
    # The error body's own message is shown as it is, with the enterprise user's ticket.
    body = response.json()
    expect(turn.locator(".error-message")).to_have_text(body["error"]["message"])
    ticket = body["error"]["ticket_id"]
    expect(error).to_contain_text(f"Ticket{ticket} in incident {body['error']['incident_id']}")


def test_a_slow_answer_can_be_stopped_from_the_keyboard_and_ends_visibly(
    context: BrowserContext, site: LiveGateway, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok(UP_TEXT, delay_s=8)
    page = _open(context, site)
    _ask(page, "What is the capital of France?")
    turn = page.get_by_role("article", name="Answer 1")
    expect(turn.locator(".state")).to_contain_text("Sent; waiting for the gateway (")
    page.keyboard.press("Escape")
    expect(turn).to_have_attribute("data-state", "stopped")
    expect(turn.locator(".state")).to_contain_text("Stopped by you")
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_enabled()
    # The gateway saw the client go: the request ends as failed on the user's stream.
    expect(page.locator("#events li.ev-request_failed")).to_contain_text("model_cascade")


@pytest.mark.parametrize("measured", [0, 5])
def test_a_queued_request_shows_its_place_and_the_gateways_estimate_then_its_answer(
    context: BrowserContext, site: LiveGateway, fault_server: FaultServer, measured: int
) -> None:
    fault_server.default = Fault.ok(UP_TEXT, delay_s=0.3)
    for _ in range(measured):  # answers whose service times the gateway measures
        _chat(site)
    fault_server.default = Fault.ok(UP_TEXT, delay_s=1.5)
    page = _open(context, site)
    key = site.keys["alice"]
    # Another request holds the deployment's one slot while the page asks.
    with httpx.Client(timeout=GUARD_MS / 1000) as client:
        holder = threading.Thread(
            target=client.post,
            args=(f"{site.v1}/chat/completions",),
            kwargs={
                "json": {"model": "gpt", "messages": [{"role": "user", "content": "hold"}]},
                "headers": {"authorization": f"Bearer {key}"},
            },
        )
        holder.start()
        expect(page.locator("#events li.ev-request_started")).to_have_count(1)
        _ask(page, "What is the capital of France?")
        turn = page.get_by_role("article", name="Answer 1")
        state = turn.locator(".state")
        expect(state).to_contain_text("Queued for up: position 1 (0 ahead")
        shown = state.inner_text()
        expect(turn).to_have_attribute("data-state", "answered")
        holder.join()
    expect(page.locator("#events li.ev-request_dequeued")).not_to_have_count(0)
    queued = [
        e for e in run(site.gateway.bus.replay("alice", 0)).events if e.type == "request_queued"
    ]
    told = queued[-1].data  # what the gateway announced: the page must say the same
    assert told["estimate_samples"] == measured
    assert told["estimate_known"] is (measured >= 5)  # the gateway's rule: five answers
    if not told["estimate_known"]:
        # Too few measured: no estimate is made up.
        assert f"the gateway has no wait estimate to give yet ({measured} measured" in shown
        return
    found = re.search(r"estimated wait ([\d.]+) s \(90% within ([\d.]+) s, from (\d+)", shown)
    assert found, shown
    p50, p90, samples = float(found[1]), float(found[2]), int(found[3])
    assert abs(p50 - told["estimated_wait_ms_p50"] / 1000) <= 0.05
    assert abs(p90 - told["estimated_wait_ms_p90"] / 1000) <= 0.05
    assert samples == measured


def test_the_event_panel_survives_a_network_drop_without_duplicates_or_gaps(
    context: BrowserContext, site: LiveGateway
) -> None:
    page = _open(context, site)
    _chat(site)
    expect(page.locator("#events li.ev-request_completed")).to_have_count(1)
    context.set_offline(True)
    expect(page.locator("#events-state")).to_contain_text("Offline")
    _chat(site)  # while the page is offline: its events must arrive after it is back
    _chat(site)
    context.set_offline(False)
    expect(page.locator("#events-state")).to_contain_text("Live again")
    expect(page.locator("#events li.ev-request_completed")).to_have_count(3)
    ids = _event_ids(page)
    assert len(ids) == len(set(ids)), f"duplicates: {ids}"
    assert ids == list(range(ids[0], ids[0] + len(ids))), f"gaps: {ids}"
    expect(page.locator("#events li.gap")).to_have_count(0)
    replay = run(site.gateway.bus.replay("alice", ids[0] - 1))
    assert [e.id for e in replay.events] == ids  # exactly the user's events, in order


def _chat(site: LiveGateway) -> None:
    """One answered request of alice's, sent by the test (not the page)."""
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {site.keys['alice']}"}
    response = httpx.post(f"{site.v1}/chat/completions", json=body, headers=headers)
    assert response.status_code == 200


@pytest.mark.parametrize("site", [{"event_history": 3}], indirect=True)
def test_a_gap_the_gateway_reports_after_a_long_drop_is_shown(
    context: BrowserContext, site: LiveGateway
) -> None:
    page = _open(context, site)
    context.set_offline(True)
    expect(page.locator("#events-state")).to_contain_text("Offline")
    for _ in range(3):  # more events than the gateway keeps for replay
        _chat(site)
    context.set_offline(False)
    expect(page.locator("#events-state")).to_contain_text("Live again")
    gap = page.locator("#events li.gap")
    expect(gap).to_have_count(1)
    expect(gap).to_contain_text("older events were dropped from the retained history")
    ids = _event_ids(page)  # what could be replayed: the newest three, in order
    retained = run(site.gateway.bus.replay("alice", 0)).events
    assert ids == [e.id for e in retained]


class _Link:
    """The page's way to the gateway through a TCP proxy the test can silence or cut
    (tests/redis_cut.py), run on a loop of its own."""

    def __init__(self, site: LiveGateway) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        port = int(site.url.rsplit(":", 1)[1])
        self._proxy = self._call(RedisCut("127.0.0.1", port).start())
        self.site = LiveGateway(site.gateway, f"http://127.0.0.1:{self._proxy.port}", site.keys)

    def _call(self, job: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(job, self._loop).result()

    def silence(self) -> None:
        self._loop.call_soon_threadsafe(self._proxy.silence)

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self._proxy.cut)

    def restore(self) -> None:
        self._loop.call_soon_threadsafe(self._proxy.restore)

    def close(self) -> None:
        self._call(self._proxy.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


@pytest.fixture
def link(site: LiveGateway) -> Iterator[_Link]:
    proxied = _Link(site)
    yield proxied
    proxied.close()


def test_a_silent_network_drop_is_noticed_by_its_missing_heartbeats_and_resumed(
    context: BrowserContext, site: LiveGateway, link: _Link
) -> None:
    """The link goes quiet without closing (what a lost Wi-Fi does): the page must notice
    from the heartbeats it no longer hears, reconnect once it can, and miss nothing."""
    page = _open(context, link.site)
    _chat(site)
    expect(page.locator("#events li.ev-request_completed")).to_have_count(1)
    link.silence()
    expect(page.locator("#events-state")).to_contain_text("nothing heard for")
    _chat(site)  # while the page hears nothing
    link.restore()
    expect(page.locator("#events-state")).to_contain_text("Live again")
    expect(page.locator("#events li.ev-request_completed")).to_have_count(2)
    ids = _event_ids(page)
    assert ids == list(range(ids[0], ids[0] + len(ids))), f"gaps or duplicates: {ids}"


def test_an_answer_cut_off_mid_stream_ends_as_failed_with_its_partial_text_kept(
    context: BrowserContext, site: LiveGateway, fault_server: FaultServer, link: _Link
) -> None:
    fault_server.default = Fault.stall(after_chunks=2, seconds=20)  # two pieces, then silence
    page = _open(context, link.site)
    _ask(page, "What is the capital of France?")
    turn = page.get_by_role("article", name="Answer 1")
    expect(turn).to_have_attribute("data-state", "streaming")
    partial = turn.locator(".answer").inner_text()
    assert partial
    link.cut()  # the connection to the gateway breaks mid-answer
    expect(turn).to_have_attribute("data-state", "failed")
    expect(turn.locator(".error-message")).to_contain_text(
        "The connection broke before the answer was complete"
    )
    assert turn.locator(".answer").inner_text().startswith(partial)  # nothing taken back
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_enabled()


def test_the_status_page_needs_no_javascript(browser: Browser, site: LiveGateway) -> None:
    for _ in range(GUARD_MS // 50):  # the store's first check is recorded (the watch's)
        (store_now,) = httpx.get(site.url + "/status").json()["backends"]
        if store_now["recent_transitions"]:
            break
        time.sleep(0.05)
    ctx = browser.new_context(java_script_enabled=False, viewport={"width": 375, "height": 800})
    try:
        page = ctx.new_page()
        page.goto(site.url + "/status")
        expect(page.get_by_role("heading", name="sincere status")).to_be_visible()
        names = page.locator("section.component h3 > span:first-child").all_inner_texts()
        assert {"up (llm-deployment)", "spare (llm-deployment)", "store (sqlite)"} <= {
            " ".join(n.split()) for n in names
        }
        expect(
            page.get_by_role("list", name="Uptime of up, one bar per day over 90 days")
        ).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        # The store's few seconds of record are said as such, not as "0.0%" of a day.
        store = page.locator("section.component", has_text="store (sqlite)")
        expect(store.locator("dl.uptime")).to_contain_text(
            re.compile(r"24h100\.000% \(over \d+ s recorded, under 0\.1% of the window\)")
        )
        # The playground says plainly that it needs JavaScript, and where to go instead.
        page.goto(site.url + "/")
        expect(page.locator("noscript, .notice").first).to_be_attached()
    finally:
        ctx.close()


def test_the_playground_works_from_the_keyboard_alone_at_375_px(
    context: BrowserContext, site: LiveGateway
) -> None:
    page = context.new_page()
    page.goto(site.url + "/")
    keyboard = page.keyboard
    keyboard.press("Tab")  # the skip link comes first
    assert page.evaluate("document.activeElement.textContent") == "Skip to the message box"
    keyboard.press("Tab")
    keyboard.press("Tab")  # past the status link
    assert page.evaluate("document.activeElement.id") == "key"
    keyboard.type(site.keys["alice"])
    keyboard.press("Enter")
    expect(page.get_by_label("Model")).to_have_value("gpt")
    # With the key in use, the message box has the focus; the model is two steps back.
    assert page.evaluate("document.activeElement.id") == "prompt"
    keyboard.press("Shift+Tab")
    keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.id") == "model"
    keyboard.press("Tab")
    keyboard.press("Tab")
    keyboard.type("What is the capital of France?")
    keyboard.press("Control+Enter")
    turn = page.get_by_role("article", name="Answer 1")
    expect(turn).to_have_attribute("data-state", "answered")
    # Every control has an accessible name; nothing is wider than the phone's screen.
    for control in page.locator("input, select, textarea, button").all():
        name = control.evaluate(
            "e => (e.labels && e.labels[0] && e.labels[0].textContent) || e.textContent"
        )
        assert name.strip(), control.evaluate("e => e.outerHTML")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_usage_shows_the_recorded_figures_with_their_source_and_freshness(
    context: BrowserContext, site: LiveGateway
) -> None:
    page = _open(context, site)
    _ask(page, "What is the capital of France?")
    expect(page.get_by_role("article", name="Answer 1")).to_have_attribute("data-state", "answered")
    row = page.locator("#usage tbody tr", has=page.get_by_role("rowheader", name="gpt"))
    for _ in range(GUARD_MS // 100):  # the writer records in batches: ask until it has
        page.get_by_role("button", name="Show").click()
        expect(page.locator("#usage-state")).to_contain_text("As of")
        if row.count():
            break
        page.wait_for_timeout(100)
    expect(page.locator("#usage-state")).to_contain_text("from sql:sqlite: all processes")
    cells = row.locator("td").all_inner_texts()
    assert cells[:3] == ["1", "1", "0"]  # requests, answered, failed
    assert re.fullmatch(r"\d+ ms", cells[3])
    assert re.fullmatch(r"\$\d+\.\d{6}", cells[4])
    # Figures resting on too few requests say so.
    assert "too few to rely on" in (row.get_attribute("title") or "")
