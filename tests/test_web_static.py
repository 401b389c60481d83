"""The playground's page and static files over HTTP: what a browser and a cache are told."""

from __future__ import annotations

import re

import httpx

from sincere.server.playground import STATIC_DIR, VERSIONS
from tests.live import LiveGateway


def test_the_page_names_its_files_by_content_and_is_revalidated_each_time(
    live: LiveGateway,
) -> None:
    page = httpx.get(live.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    urls = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert sorted(urls) == sorted(f"/static/{n}?v={v}" for n, v in VERSIONS.items())


def test_a_versioned_static_file_is_cached_for_a_year_and_any_other_url_revalidates(
    live: LiveGateway,
) -> None:
    name, version = "playground.js", VERSIONS["playground.js"]
    current = httpx.get(f"{live.url}/static/{name}?v={version}")
    assert current.status_code == 200
    assert current.content == (STATIC_DIR / name).read_bytes()
    assert current.headers["content-type"].startswith("text/javascript")
    assert current.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert current.headers["x-content-type-options"] == "nosniff"
    stale = httpx.get(f"{live.url}/static/{name}?v=0000")  # a page made with older bytes
    assert stale.headers["cache-control"] == "no-cache"
    bare = httpx.get(f"{live.url}/static/{name}")
    assert bare.headers["cache-control"] == "no-cache"
    again = httpx.get(f"{live.url}/static/{name}", headers={"if-none-match": bare.headers["etag"]})
    assert again.status_code == 304


def test_a_missing_static_file_is_a_problem_not_a_page(live: LiveGateway) -> None:
    missing = httpx.get(f"{live.url}/static/nothing.js", headers={"x-request-id": "req-web-1"})
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["request_id"] == "req-web-1"
    escape = httpx.get(f"{live.url}/static/..%2F..%2Fconfig.py")
    assert escape.status_code == 404
