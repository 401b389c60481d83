"""The FastAPI application: routes, error rendering, middleware, lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.routing import Route

from sincere import __version__
from sincere.config import load_settings
from sincere.server import http_errors, openai_routes, ops_routes, websocket
from sincere.server.gateway import Gateway
from sincere.server.middleware import RequestIdAndBodyLimit


def create_app(gateway: Gateway) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
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
    app.include_router(openai_routes.router)
    # The hot route, served ahead of FastAPI's router: it takes only the request, so
    # FastAPI's matching and dependency solving (about 0.15 ms) buy it nothing. Its
    # FastAPI registration above stays for the OpenAPI schema.
    app.router.routes.insert(
        0, Route("/v1/chat/completions", openai_routes.chat_completions, methods=["POST"])
    )
    app.include_router(ops_routes.router)
    app.include_router(websocket.router)
    http_errors.install(app)
    _publish_body_schemas(app)
    app.add_middleware(
        RequestIdAndBodyLimit,
        max_body_bytes=gateway.settings.server.max_body_bytes,
        metrics=gateway.metrics,
    )
    return app


def _publish_body_schemas(app: FastAPI) -> None:
    """Add the chat request models to the OpenAPI components (the route parses them itself)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            model = openai_routes.ChatCompletionIn.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(model.pop("$defs", {}))
            components["ChatCompletionIn"] = model
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app_from_env() -> FastAPI:
    """The factory uvicorn workers call: settings from SINCERE_CONFIG and SINCERE_DATA_DIR."""
    return create_app(Gateway.create(load_settings()))
