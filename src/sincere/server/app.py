"""The FastAPI application: routes, error rendering, middleware, lifecycle."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from sincere import __version__
from sincere.config import load_settings
from sincere.llm.prober import probe_idle_deployments
from sincere.server import http_errors, openai_routes, ops_routes, websocket
from sincere.server.chat_in import ChatCompletionIn
from sincere.server.gateway import Gateway
from sincere.server.lifecycle import Shutdown
from sincere.server.metrics import Metrics
from sincere.server.middleware import RequestIdAndBodyLimit
from sincere.server.serving import READ_TIMED_OUT, SERVER_KEY, SHUTDOWN_KEY

CHAT_PATH = "/v1/chat/completions"
GRACE_ENV = "SINCERE_SHUTDOWN_GRACE_S"  # `sincere serve --shutdown-grace`, for its workers
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the response


def create_app(gateway: Gateway) -> FastAPI:
    shutdown = Shutdown(gateway.settings.server.shutdown_grace_s)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        prober = asyncio.create_task(probe_idle_deployments(gateway.cascade))
        # The server's protocols find the limits and the drain here (see serving).
        yield {SERVER_KEY: gateway.settings.server, SHUTDOWN_KEY: shutdown}
        prober.cancel()
        with suppress(asyncio.CancelledError):
            await prober
        await gateway.aclose()

    app = FastAPI(
        title="sincere",
        version=__version__,
        summary="An LLM gateway that never fakes an answer.",
        lifespan=lifespan,
        # FastAPI's OpenTelemetry hooks look for providers on every request (about 40 us
        # here); sincere reports through its own Prometheus metrics and events.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.gateway = gateway
    app.state.shutdown = shutdown
    app.state.event_sockets = websocket.SocketLimit(gateway.settings.server.max_sockets_per_user)
    app.include_router(openai_routes.router)
    app.include_router(ops_routes.router)
    app.include_router(websocket.router)
    http_errors.install(app)
    _publish_body_schemas(app)
    app.add_middleware(ChatFastLane, shutdown=shutdown, metrics=gateway.metrics)
    app.add_middleware(
        RequestIdAndBodyLimit,
        max_body_bytes=gateway.settings.server.max_body_bytes,
        metrics=gateway.metrics,
    )
    return app


class ChatFastLane:
    """Serves ``POST /v1/chat/completions`` ahead of FastAPI's exception middleware and router.

    The hot route takes only the request, so route matching, dependency solving and the
    per-route exception wrapping (about 0.1 ms of CPU a request) buy it nothing. Errors
    are rendered by ``http_errors.render``, as on every other route; the route's FastAPI
    registration stays for the OpenAPI schema.
    """

    def __init__(self, app: ASGIApp, shutdown: Shutdown, metrics: Metrics) -> None:
        self.app = app
        self.shutdown = shutdown
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CHAT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        with self.shutdown.request():
            try:
                response = await openai_routes.chat_completions(request)
            except ClientDisconnect:
                # Gone during the upload or the wait: nobody to answer, nothing to log. (Or
                # the body was late and the protocol answered 408 and closed.)
                late = scope.get("state", {}).get(READ_TIMED_OUT)
                self.metrics.count_request("chat", 408 if late else CLIENT_CLOSED_REQUEST)
                return
            except Exception as exc:  # noqa: BLE001 - each becomes its response; render logs the unexpected
                response = await http_errors.render(request, exc)
            await response(scope, receive, send)


def _publish_body_schemas(app: FastAPI) -> None:
    """Add the chat request models to the OpenAPI components (the route parses them itself)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            model = ChatCompletionIn.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(model.pop("$defs", {}))
            components["ChatCompletionIn"] = model
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app_from_env() -> FastAPI:
    """The factory uvicorn workers call: settings from SINCERE_CONFIG and SINCERE_DATA_DIR
    (and the shutdown grace `sincere serve` was given)."""
    settings = load_settings()
    if grace := os.environ.get(GRACE_ENV):
        settings = settings.with_server(shutdown_grace_s=float(grace))
    app = create_app(Gateway.create(settings))
    freeze_startup_heap()
    return app


def freeze_startup_heap() -> None:
    """Keep what the process made at startup out of the garbage collector's full passes.

    Modules, the app and the gateway live as long as the process. Left in the collector's
    oldest generation, each full pass walks all of them and stops the event loop for tens
    of milliseconds (56 ms measured, the p99 at concurrency 64 in docs/benchmarks.md).
    Call once, when the server is built and before it serves.
    """
    gc.collect()
    gc.freeze()
