from __future__ import annotations

import json

import pytest

from sincere.attempts import Attempt
from sincere.errors import (
    ContextTooLong,
    ErrorContext,
    ModelNotFound,
    RateLimited,
    ServiceError,
    ServiceUnavailable,
)
from sincere.redact import redact

CTX = ErrorContext(user_id="u1", request_id="req_1", service="model_cascade", tier="enterprise")


def test_problem_json_follows_rfc_9457_and_carries_request_and_attempts() -> None:
    attempt = Attempt("gpt", "openai-mini", "openai", "service_unavailable", 0.01, 503, "down")
    error = ServiceUnavailable("no route could answer", context=CTX, attempts=[attempt])
    problem = error.to_problem()
    assert problem["status"] == 503
    assert problem["type"].endswith("/service-unavailable")
    assert problem["title"] == "Service unavailable"
    assert problem["detail"] == "no route could answer"
    assert problem["instance"] == "urn:sincere:request:req_1"
    assert problem["request_id"] == "req_1"
    assert problem["tier"] == "enterprise"
    assert problem["retryable"] is True
    assert problem["attempts"] == [
        {
            "model": "gpt",
            "deployment": "openai-mini",
            "provider": "openai",
            "outcome": "service_unavailable",
            "duration_s": 0.01,
            "status_code": 503,
            "detail": "down",
        }
    ]
    assert "retry_after" not in problem  # unknown, so absent


def test_openai_error_object_has_the_sdk_fields() -> None:
    error = ContextTooLong("too long", context=CTX)
    body = error.to_openai_error()["error"]
    assert body["type"] == "invalid_request_error"
    assert body["code"] == "context_length_exceeded"
    assert body["param"] == "messages"
    assert body["message"] == "too long"
    assert body["request_id"] == "req_1"
    assert ContextTooLong.status == 400
    assert ModelNotFound.status == 404


def test_retry_after_is_rendered_only_when_known_and_rounded_up() -> None:
    error = RateLimited("slow down", retry_after=2.2)
    assert error.retry_after_header() == "3"
    assert error.to_problem()["retry_after"] == 2.2
    assert error.to_openai_error()["error"]["code"] == "rate_limit_exceeded"
    assert RateLimited("slow down").retry_after_header() is None


@pytest.mark.parametrize(
    "secret_text",
    [
        "upstream said: Incorrect API key provided: sk-proj-abcdefghijklmnop1234",
        "failed to reach https://admin:hunter2@llm.internal/v1",
        "header was Bearer abcdefghijklmnopqrstuvwx",
        "url https://api.example.com/v1?api_key=topsecretvalue",
    ],
)
def test_renderings_never_contain_credentials(secret_text: str) -> None:
    error = ServiceUnavailable(
        secret_text,
        context=CTX,
        attempts=[Attempt("m", "d", "openai", "auth", 0.1, 401, secret_text)],
        suggestions=[secret_text],
    )
    for rendering in (error.to_problem(), error.to_openai_error()):
        text = json.dumps(rendering)
        for secret in (
            "sk-proj-abcdefghijklmnop1234",
            "hunter2",
            "abcdefghijklmnopqrstuvwx",
            "topsecretvalue",
        ):
            assert secret not in text
        assert "[redacted]" in text


def test_renderings_carry_no_stack_trace() -> None:
    try:
        raise ValueError("internal detail")
    except ValueError as cause:
        error = ServiceUnavailable("no route could answer", context=CTX)
        error.__cause__ = cause
    text = json.dumps(error.to_problem()) + json.dumps(error.to_openai_error())
    assert "Traceback" not in text
    assert "internal detail" not in text
    assert "ValueError" not in text


def test_redact_removes_exact_known_secrets_of_any_shape() -> None:
    assert redact("key=abc123-plain", ["abc123-plain"]) == "key=[redacted]"
    assert redact("nothing here") == "nothing here"


def test_with_context_keeps_the_class_message_and_retry_hint() -> None:
    error = RateLimited("busy", retry_after=4)
    bound = error.with_context(CTX)
    assert isinstance(bound, RateLimited)
    assert bound.context.request_id == "req_1"
    assert bound.retry_after == 4
    assert isinstance(bound, ServiceError)
