# ruff: noqa
"""Handlers that return an explicit, structured error instead of an answer."""

from fastapi.responses import JSONResponse, PlainTextResponse
from starlette import status


class ErrorResponse:
    def __init__(self, message, code):
        self.message = message
        self.code = code


def error_dict(client, prompt):
    try:
        return {"response": client.complete(prompt)}
    except Exception as exc:
        return {"error": "service_unavailable", "message": "The model did not answer in time."}


def detail_dict(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return {"detail": "Upstream model unavailable, please retry later."}


def status_dict(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return {"status": "unavailable", "message": "No model could answer this request."}


def success_false(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return {"success": False, "message": "The completion could not be generated."}


def nested_openai_error(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return {"error": {"message": "Rate limit reached, retry after a minute.", "type": "rate"}}


def typed_error(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return {"type": "error", "message": "The model is overloaded right now."}


def error_class(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return ErrorResponse(message="The model is temporarily unavailable.", code=503)


def http_error_response(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return JSONResponse({"message": "Service is unavailable at the moment."}, status_code=503)


def plain_text_error(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return PlainTextResponse("Internal Server Error: please try again.", 500)


def named_status(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return PlainTextResponse(
            "Service unavailable, try again later.", status.HTTP_503_SERVICE_UNAVAILABLE
        )


def problem_json(client, prompt, request_id):
    try:
        return client.complete(prompt)
    except Exception as exc:
        return JSONResponse(
            {
                "type": "https://example.com/problems/unavailable",
                "title": "Service unavailable",
                "status": 503,
                "detail": str(exc),
                "instance": request_id,
            },
            status_code=503,
        )


def initialization_result(service, context):
    """From the seed's UnifiedServiceInitializer: a failed result, said as such."""
    try:
        service.start(context)
    except Exception as e:
        return ServiceInitializationResult(
            status="failed",
            error=f"Critical service {service.name} unavailable",
            should_fail_request=True,
        )
    return ServiceInitializationResult(status="success", should_fail_request=False)
