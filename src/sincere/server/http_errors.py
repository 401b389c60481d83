"""Every failure as an HTTP response: the OpenAI error object under /v1, RFC 9457 elsewhere."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response

from sincere.context import new_request_id
from sincere.errors import BadRequest, ErrorContext, InternalError, ServiceError

log = logging.getLogger("sincere.server")


class RouteNotFound(ServiceError):
    """No such path here."""

    status = 404
    error_type = "not_found"
    title = "Not found"
    openai_type = "invalid_request_error"


class MethodNotAllowed(BadRequest):
    status = 405
    error_type = "method_not_allowed"
    title = "Method not allowed"


class RequestTimeout(BadRequest):
    """The client did not send its whole request in time (``server.header_timeout_s``,
    ``body_timeout_s``); the server answers it and closes the connection."""

    status = 408
    error_type = "request_timeout"
    title = "Request timeout"


def request_id(connection: HTTPConnection) -> str:
    """The id the request-id middleware gave this request or socket (a new one without it)."""
    rid = connection.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else new_request_id()


def bearer_key(headers: Mapping[str, str]) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, or None."""
    header = headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None


def context_of(request: Request) -> ErrorContext:
    return ErrorContext(request_id=request_id(request))


def status_url(request: HTTPConnection) -> str:
    """The absolute address of this gateway's /status: ``[server] public_url`` when set,
    else the address the client sent this request to (never a host made up here)."""
    runtime = getattr(request.app.state, "runtime", None)
    public = runtime.settings.server.public_url if runtime is not None else None
    base = public or str(request.base_url).rstrip("/")
    return base + "/status"


def error_response(error: ServiceError, path: str, status: str | None = None) -> Response:
    """The error rendered for the route family it happened on, with Retry-After when known
    and, for a failure of the service (5xx, 429), ``status``: the absolute /status URL."""
    headers = {}
    if (retry_after := error.retry_after_header()) is not None:
        headers["Retry-After"] = retry_after
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if path.startswith("/v1/") and not path.startswith("/v1/events"):
        body, media = error.to_openai_error(), "application/json"
        members = body["error"]
    else:
        body, media = error.to_problem(), "application/problem+json"
        members = body
    if error.status >= 500:
        members["status_page"] = "/status"  # the recorded state of every deployment
    if status is not None and (error.status >= 500 or error.status == 429):
        members["status_url"] = status
    return Response(json.dumps(body), error.status, headers, media_type=media)


async def render(request: Request, exc: Exception) -> Response:
    """Any exception as the response a client gets: ServiceError, validation, HTTP, other."""
    if isinstance(exc, ServiceError):
        return _service_error(request, exc)
    if isinstance(exc, RequestValidationError):
        return _invalid(request, exc)
    if isinstance(exc, HTTPException):
        return _http_error(request, exc)
    return _unexpected(request, exc)


def install(app: FastAPI) -> None:
    """Route every exception through ``render``; nothing else reaches a client."""
    for kind in (ServiceError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(kind, render)


def _service_error(request: Request, exc: ServiceError) -> Response:
    if not exc.context.request_id:
        exc = exc.with_context(context_of(request))
    return error_response(exc, request.url.path, status_url(request))


def _invalid(request: Request, exc: RequestValidationError) -> Response:
    # One line per member; a union's members each add their reason ("a string or a list").
    problems: dict[str | None, list[str]] = {}
    for err in exc.errors():
        # A union that found no variant for a member's value names that member in ctx.
        member = (err.get("ctx") or {}).get("member")
        loc = (*err.get("loc", ()), member) if isinstance(member, str) else err.get("loc", ())
        reasons = problems.setdefault(_param(loc), [])
        if (msg := err.get("msg", "invalid")) not in reasons:
            reasons.append(msg)
    text = "; ".join(f"{param or 'body'}: {' or '.join(why)}" for param, why in problems.items())
    # The first member at fault, as deep as one of a union's alternatives reached into it.
    param = first = next(iter(problems), None)
    if first is not None:
        inside = [p for p in problems if p and p.startswith((f"{first}.", f"{first}["))]
        param = max(inside, key=len, default=first)
    error = BadRequest("invalid request: " + text, context=context_of(request), param=param)
    return error_response(error, request.url.path)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "dict", "list", "any"})
_MEMBER = re.compile(r"[a-z_][a-z0-9_]*")


def _param(loc: Sequence[int | str]) -> str | None:
    """The request member an error is about, as OpenAI names it: ``messages[0].content``.

    pydantic puts in the location the tag of each union alternative it tried (``str``,
    ``list[str]``, ``ToolChoiceIn``, ``literal[...]``) and ``[key]`` for a mapping's keys;
    those are left out, as are keys that are no member name (a token id in ``logit_bias``).
    """
    param = ""
    for part in loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif part != "body" and _MEMBER.fullmatch(part) and part not in _TYPE_TAGS:
            param += f".{part}" if param else part
    return param or None


def _http_error(request: Request, exc: HTTPException) -> Response:
    context = context_of(request)
    error: ServiceError
    if exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed here", context=context)
    elif exc.status_code == 404:
        error = RouteNotFound(f"no route {request.url.path}", context=context)
    else:
        error = BadRequest(str(exc.detail), context=context)
        error.status = exc.status_code  # type: ignore[misc]
    return error_response(error, request.url.path)


def _unexpected(request: Request, exc: Exception) -> Response:
    # The trace goes to the operator's log, never to the client.
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(InternalError.of(context_of(request)), request.url.path)
