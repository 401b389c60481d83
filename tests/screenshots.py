"""Screenshots of the web page's main states for docs/screenshots, taken from a real gateway
whose deployments are fault servers (the browser tests' set-up), in Debian's Chromium.

    PYTHONPATH=src:. .venv/bin/python -m tests.screenshots [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page, expect

from tests.browser import chromium
from tests.faults import Fault, FaultServer
from tests.live import LiveGateway
from tests.web_site import SPARE_TEXT, UP_TEXT, web_site

GUARD_MS = 30_000


def _page(browser: Browser, site: LiveGateway, width: int) -> Page:
    page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
    page.goto(site.url + "/")
    page.get_by_label("Your sincere API key").fill(site.keys["alice"])
    page.get_by_role("button", name="Use this key").click()
    expect(page.locator("#events-state")).to_have_text("Live.")
    return page


def _ask(page: Page, prompt: str, state: str) -> None:
    page.get_by_label("Message").fill(prompt)
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("article.turn").last).to_have_attribute("data-state", state)


def take(out: Path) -> list[Path]:
    expect.set_options(timeout=GUARD_MS)
    out.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []

    def shot(page: Page, name: str) -> None:
        path = out / f"{name}.png"
        page.screenshot(path=path, full_page=True)
        shots.append(path)

    with (
        tempfile.TemporaryDirectory() as tmp,
        FaultServer(Fault.ok(UP_TEXT)) as up,
        FaultServer(Fault.ok(SPARE_TEXT)) as spare,
        web_site(Path(tmp), up, spare) as site,
        chromium() as browser,
    ):
        page = _page(browser, site, 1280)
        _ask(page, "What is the capital of France?", "answered")
        shot(page, "playground-answered")

        up.script(Fault.status(503, message="upstream overloaded"))
        _ask(page, "And once more, please?", "answered")
        shot(page, "playground-fallback")

        up.default = Fault.ok(UP_TEXT, delay_s=3)
        holder = threading.Thread(
            target=httpx.post,
            args=(f"{site.v1}/chat/completions",),
            kwargs={
                "json": {"model": "gpt", "messages": [{"role": "user", "content": "hold"}]},
                "headers": {"authorization": f"Bearer {site.keys['alice']}"},
                "timeout": 30,
            },
        )
        holder.start()
        expect(page.locator("#events li.ev-request_started")).to_have_count(3)
        page.get_by_label("Message").fill("Is the queue moving?")
        page.get_by_role("button", name="Send", exact=True).click()
        expect(page.locator("article.turn").last).to_have_attribute("data-state", "queued")
        shot(page, "playground-queued")
        expect(page.locator("article.turn").last).to_have_attribute("data-state", "answered")
        holder.join()

        up.default = Fault.rate_limited(retry_after=30)
        spare.default = Fault.rate_limited(retry_after=30)
        _ask(page, "One more?", "failed")
        shot(page, "playground-failed")

        phone = _page(browser, site, 375)
        _ask(phone, "What is the capital of France?", "failed")
        shot(phone, "playground-phone")

        status = browser.new_context(viewport={"width": 1024, "height": 900}).new_page()
        status.goto(site.url + "/status")
        shot(status, "status")
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    for path in take(parser.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
