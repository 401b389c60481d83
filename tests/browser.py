"""Debian's Chromium driven by Playwright, for the web page's tests, benchmark and screenshots.

Playwright's own browser download cannot reach its servers here; ``scripts/test``
installs Debian's ``chromium`` and Playwright launches that (``SINCERE_CHROMIUM`` names
another build). ``--no-sandbox``: CI runs as root, where Chromium's sandbox refuses to start.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, sync_playwright

CHROMIUM = os.environ.get("SINCERE_CHROMIUM", "/usr/bin/chromium")


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed on exit."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
