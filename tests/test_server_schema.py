"""Schemathesis against the generated OpenAPI schema: no undeclared 5xx, no stack trace.

Each operation's cases come from schemathesis's Hypothesis strategy, driven here directly
(its pytest plugin does not run under this pytest version).
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi import APIRouter, Depends
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings

from sincere.server import openai_routes
from sincere.server.app import ServeAhead, create_app
from sincere.server.openai_routes import ChatRoute, chat_completions
from tests.live import LiveGateway


def test_no_operation_returns_an_undeclared_server_error(live: LiveGateway) -> None:
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    auth = {"Authorization": f"Bearer {live.keys['admin']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /v1/chat/completions",
        "GET /v1/models",
    }
    seen: set[tuple[str, int]] = set()
    # Invalid inputs only exist where there is an input: the request bodies.
    runs = [(op, schemathesis.GenerationMode.POSITIVE) for op in operations] + [
        (op, schemathesis.GenerationMode.NEGATIVE)
        for op in operations
        if "requestBody" in op.definition.raw
    ]
    for operation, mode in runs:
        declared = operation.definition.raw.get("responses", {})

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def call(case: schemathesis.Case) -> None:
            response = case.call(headers=auth)
            seen.add((case.path, response.status_code))
            if response.status_code >= 500:
                assert str(response.status_code) in declared, (  # noqa: B023 - this operation's
                    f"undeclared {response.status_code} for {case.method} {case.path}: "
                    f"{response.text}"
                )
            assert "Traceback" not in response.text
            assert response.headers.get("x-request-id")

        call()
    # Valid bodies for unknown models (404) and invalid bodies (400) were both generated.
    chat = {status for path, status in seen if path == "/v1/chat/completions"}
    assert {400, 404} <= chat, seen


def test_the_chat_route_is_registered_once_and_published_from_that_registration(
    live: LiveGateway,
) -> None:
    app = create_app(live.gateway)
    chat = [
        r
        for r in openai_routes.router.routes
        if isinstance(r, APIRoute) and r.path == "/v1/chat/completions"
    ]
    assert len(chat) == 1
    assert isinstance(chat[0], ChatRoute)
    # What serves it ahead of the router is that same registration, not a copy.
    ahead = [m.kwargs["route"] for m in app.user_middleware if m.cls is ServeAhead]
    assert ahead == [chat[0]]
    operation = app.openapi()["paths"]["/v1/chat/completions"]["post"]
    assert operation["operationId"] == chat[0].unique_id
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionIn"
    }
    assert "ChatCompletionIn" in app.openapi()["components"]["schemas"]


def test_a_dependency_on_the_chat_route_is_refused_not_silently_skipped() -> None:
    # The route's handler is sincere's own (no dependency solving): a dependency declared
    # on it would never run, so declaring one fails at once.
    async def check() -> None:
        return None

    router = APIRouter()
    with pytest.raises(TypeError, match="without FastAPI's dependency solving"):
        router.add_api_route(
            "/chat",
            chat_completions,
            methods=["POST"],
            dependencies=[Depends(check)],
            route_class_override=ChatRoute,
        )
