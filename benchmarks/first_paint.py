"""What the web page costs a browser: first contentful paint of the playground (``/``) and
of the status page (``/status``), beside a one-line HTML page as the floor, in one run.

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.first_paint [--rounds 40] [--attempts N]

Debian's Chromium (headless, through Playwright; see tests/browser.py) loads each page in
turn, every round in a fresh browser context (an empty cache: a first visit), then once more
in the same context (a return visit: the static files from the cache). The gateway is
`sincere serve` in front of the fast upstream (benchmarks/upstream.py); the floor is
`<!doctype html><h1>x</h1>` served by Python's http.server on the same machine. Reported:
p50 and p95 of first contentful paint and of the load event, and each page's p50 over the
floor's. With ``--attempts N`` the gateway's store (SQLite) first gets N recorded attempts
of benchmark traffic over 30 days (benchmarks/usage.py's), which the status page counts; the
time of the first page, asked as soon as the process is ready (it counts the past days'
attempts), is reported apart: later visits read the cached view or only the days still
open.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tests.browser import chromium

from benchmarks.overhead import HOST, Servers, console, start_sincere, start_upstream, versions
from benchmarks.usage import fill

FLOOR = b"<!doctype html><title>floor</title><h1>x</h1>"
# Paint and load times of the navigation, from the page's own Performance API.
TIMING = """() => {
  const paint = performance.getEntriesByName('first-contentful-paint')[0];
  const nav = performance.getEntriesByType('navigation')[0];
  return {fcp: paint ? paint.startTime : null, load: nav.loadEventEnd, bytes: nav.transferSize};
}"""


class _Floor(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(FLOOR)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the browser left
            self.wfile.write(FLOOR)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Samples:
    fcp_ms: list[float] = field(default_factory=list)
    load_ms: list[float] = field(default_factory=list)


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _visit(browser: Browser, url: str, first: Samples, again: Samples) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        for samples in (first, again):  # a first visit, then a return visit
            page.goto(url, wait_until="load")
            timing = page.evaluate(TIMING)
            while timing["fcp"] is None:  # painted after load: the entry comes a frame later
                page.wait_for_timeout(5)
                timing = page.evaluate(TIMING)
            samples.fcp_ms.append(timing["fcp"])
            samples.load_ms.append(timing["load"])
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40, help="visits of each page (default 40)")
    parser.add_argument(
        "--attempts", type=int, default=0, help="recorded attempts in the store (default none)"
    )
    args = parser.parse_args()
    floor = ThreadingHTTPServer((HOST, 0), _Floor)
    threading.Thread(target=floor.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        servers = Servers(Path(tmp))
        try:
            upstream = start_upstream(servers)
            if args.attempts:
                database = Path(tmp) / "sincere-data" / "sincere.db"
                database.parent.mkdir()
                with Progress(console=console) as progress:
                    asyncio.run(fill(f"sqlite:///{database}", args.attempts, progress))
            sincere, _ = start_sincere(servers, upstream)
            base = f"http://{HOST}:{sincere.port}"
            began = time.perf_counter()  # the first page: it counts the past days
            httpx.get(base + "/status", headers={"accept": "text/html"}, timeout=60)
            first_page_s = time.perf_counter() - began
            pages = {
                "floor (one-line HTML)": f"http://{HOST}:{floor.server_address[1]}/",
                "playground `/`": base + "/",
                "status page `/status`": base + "/status",
            }
            first = {name: Samples() for name in pages}
            again = {name: Samples() for name in pages}
            with (
                chromium() as browser,
                Progress(
                    TextColumn("[bold]first paint"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=console,
                ) as progress,
            ):
                task = progress.add_task("visits", total=args.rounds * len(pages))
                for url in pages.values():  # one warm-up each, not counted
                    _visit(browser, url, Samples(), Samples())
                for _ in range(args.rounds):
                    for name, url in pages.items():  # in turn: the same noise for each
                        _visit(browser, url, first[name], again[name])
                        progress.advance(task)
                version = browser.version
        finally:
            servers.stop_all()
            floor.shutdown()
    console.print(_report(first, again, args, version, first_page_s))


def _report(
    first: dict[str, Samples],
    again: dict[str, Samples],
    args: argparse.Namespace,
    browser: str,
    first_page_s: float,
) -> str:
    floor_name = next(iter(first))
    floor_p50 = statistics.median(first[floor_name].fcp_ms)
    lines = [
        f"Chromium {browser} headless, {args.rounds} rounds, {args.attempts:,} recorded "
        f"attempts; {versions()}",
        "",
        "The first `/status` page, asked as soon as the process is ready (it counts the past "
        f"days' attempts): {first_page_s * 1000:.0f} ms",
        "",
        "| page | visit | FCP p50 | FCP p95 | load p50 | load p95 | FCP p50 ÷ floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in first:
        for visit, samples in (("first", first[name]), ("return", again[name])):
            fcp, load = samples.fcp_ms, samples.load_ms
            lines.append(
                f"| {name} | {visit} | {statistics.median(fcp):.0f} ms | {_pct(fcp, 95):.0f} ms "
                f"| {statistics.median(load):.0f} ms | {_pct(load, 95):.0f} ms "
                f"| {statistics.median(fcp) / floor_p50:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
