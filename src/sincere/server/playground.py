"""The playground at ``/``: a page to chat through the gateway while watching its events.

The page is a Jinja2 template; its script and style are hand-written static files under
``web/static``, served from ``/static`` with caching headers. Each file's URL carries a hash
of its content (``?v=…``): a page always names the bytes it was made with, so those URLs
can be cached for a year, and any other URL of the file is revalidated (ETag) every time.
The page itself holds nothing secret and no state: the API key stays in the browser's
session storage and travels only in request headers and the socket's first message.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import APIRouter
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from sincere import __version__

router = APIRouter(tags=["web"])

_WEB = Path(__file__).parent / "web"
STATIC_DIR = _WEB / "static"
_env = Environment(
    loader=FileSystemLoader(_WEB / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
YEAR_S = 365 * 86_400
# The page runs only its own script and style and talks only to this origin: a script
# injected by some other route could not read the key out of session storage and send it
# elsewhere. 'self' covers the same origin's ws:/wss: in current browsers.
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _versions() -> dict[str, str]:
    """Each static file's name and the start of its content's SHA-256 (read once)."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        for path in STATIC_DIR.iterdir()
        if path.is_file()
    }


VERSIONS = _versions()


def static_url(name: str) -> str:
    return f"/static/{name}?v={VERSIONS[name]}"


_PAGE = _env.get_template("playground.html").render(static_url=static_url, version=__version__)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def playground() -> HTMLResponse:
    """The playground page (the same bytes for everyone: it is rendered once)."""
    return HTMLResponse(_PAGE, headers=_PAGE_HEADERS)


class CachedStatic(StaticFiles):
    """Starlette's static files (ETag, Last-Modified, 304s) with a Cache-Control: a year
    and immutable for the URL naming the current content, revalidation for any other."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        current = VERSIONS.get(path)
        query = scope.get("query_string", b"").decode("latin-1")
        if response.status_code == 200 and current and query == f"v={current}":
            response.headers["Cache-Control"] = f"public, max-age={YEAR_S}, immutable"
        else:
            response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def static_files() -> CachedStatic:
    return CachedStatic(directory=STATIC_DIR)
