"""The FastAPI application: routes, error rendering, middleware, lifecycle."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from sincere import __version__
from sincere.config import load_settings
from sincere.llm.prober import probe_open_deployments
from sincere.runtime import Runtime, build_runtime
from sincere.server import (
    admin_routes,
    agent_routes,
    http_errors,
    openai_routes,
    ops_routes,
    playground,
    status_routes,
    status_watch,
    usage_routes,
    websocket,
)
from sincere.server.chat_in import ChatCompletionIn
from sincere.server.lifecycle import Shutdown
from sincere.server.middleware import RequestIdAndBodyLimit
from sincere.server.serving import SERVER_KEY, SHUTDOWN_KEY

GRACE_ENV = "SINCERE_SHUTDOWN_GRACE_S"  # `sincere serve --shutdown-grace`, for its workers


def create_app(runtime: Runtime) -> FastAPI:
    shutdown = Shutdown(runtime.settings.server.shutdown_grace_s)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        runtime.flags.start()  # every process reads the flags again every second
        prober = asyncio.create_task(probe_open_deployments(runtime.cascade))
        relay = asyncio.create_task(runtime.relay.run())  # the outbox's notifications
        recorder = asyncio.create_task(runtime.telemetry.run())  # attempts, in batches
        watch = asyncio.create_task(status_watch.of(_app).run())  # the store, Redis, uptime
        # The server's protocols find the limits and the drain here (see serving).
        yield {SERVER_KEY: runtime.settings.server, SHUTDOWN_KEY: shutdown}
        for task in (prober, relay, recorder, watch):
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        await runtime.aclose()  # the flags' refresh with the rest

    app = FastAPI(
        title="sincere",
        version=__version__,
        summary="An LLM gateway that never fakes an answer.",
        lifespan=lifespan,
        # FastAPI's OpenTelemetry hooks look for providers on every request (about 40 us
        # here); sincere reports through its own Prometheus metrics and events.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.runtime = runtime
    app.state.shutdown = shutdown
    app.state.event_sockets = websocket.SocketLimit(runtime.settings.server.max_sockets_per_user)
    app.include_router(openai_routes.router)
    app.include_router(ops_routes.router)
    app.include_router(status_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(usage_routes.router)
    app.include_router(agent_routes.router)
    app.include_router(websocket.router)
    app.include_router(playground.router)
    app.mount("/static", playground.static_files(), name="static")
    http_errors.install(app)
    _publish_body_schemas(app)
    app.add_middleware(ServeAhead, route=openai_routes.CHAT_ROUTE)
    app.add_middleware(
        RequestIdAndBodyLimit,
        max_body_bytes=runtime.settings.server.max_body_bytes,
        metrics=runtime.metrics,
    )
    return app


class ServeAhead:
    """Serves one route (the chat route: the hot path) ahead of FastAPI's exception
    middleware and router, through the route's own ``serve``; everything else goes on."""

    def __init__(self, app: ASGIApp, route: openai_routes.ChatRoute) -> None:
        self.app = app
        self.route = route
        self.methods = route.methods or set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == self.route.path
            and scope["method"] in self.methods
        ):
            await self.route.serve(scope, receive, send)
            return
        await self.app(scope, receive, send)


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
    app = create_app(build_runtime(settings))
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
