"""``GET /v1/usage``: a caller's traffic in figures, with their source, freshness and
reliability (``sincere.agents.data``).

A user key sees its own user's traffic only (asking for another user is a 403); an admin
key may name any user, or none for every user. Errors are the OpenAI error object with
the request id, as everywhere under /v1; with no source able to answer, a 503
``data_unavailable``, never a figure from nowhere.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse

from sincere.agents.data import STORE, WINDOWS, window_of
from sincere.agents.usage import GroupBy
from sincere.attempts import Attempt
from sincere.context import RequestContext
from sincere.errors import DataUnavailable, PermissionDenied
from sincere.identity import Caller, KeyRole
from sincere.ports import RequestRecord
from sincere.runtime import Runtime
from sincere.server.http_errors import bearer_key, request_id
from sincere.server.ops_routes import gateway

router = APIRouter(prefix="/v1", tags=["usage"])

_ERROR: dict[str, Any] = {"application/json": {}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "An invalid window or group", "content": _ERROR},
    401: {"description": "Missing, unknown or revoked API key", "content": _ERROR},
    403: {"description": "A user key asked for another user's usage", "content": _ERROR},
    503: {
        "description": "No source can answer (data_unavailable), or the key store is down",
        "content": _ERROR,
    },
}


# The published shape of the answer (UsageOut); the route returns Usage.to_dict() as is,
# and a test holds the two together.


class WindowOut(BaseModel):
    start: str
    end: str
    label: str


class FreshnessOut(BaseModel):
    newest_at: str | None  # null: nothing recorded
    age_s: float | None
    verdict: str  # pass | warn | error | unknown
    warn_after_s: float
    error_after_s: float


class ReliabilityOut(BaseModel):
    min_samples: int
    rows_read: int
    requests: int
    groups_below_min_samples: int


class PercentilesOut(BaseModel):
    p50: float | None
    p95: float | None


class GroupReliabilityOut(BaseModel):
    samples: int
    below_min_samples: bool
    latency_samples: int
    latency_below_min_samples: bool
    ttft_samples: int
    ttft_below_min_samples: bool
    token_coverage: float | None
    cost_coverage: float | None


class GroupOut(BaseModel):
    key: str
    requests: int
    answered: int
    failed: dict[str, int]
    success_rate: float | None
    latency_s: PercentilesOut
    ttft_s: PercentilesOut
    tokens_in: int | None  # null: no request's tokens are known
    tokens_out: int | None
    cost_usd: float | None  # null: no request's cost is known
    reliability: GroupReliabilityOut


class UsageOut(BaseModel):
    """Usage figures and what they rest on."""

    object: str
    as_of: str
    source: str
    degraded: bool
    scope: str
    current: bool  # false: the newest record is past error_after_s (or none exists)
    window: WindowOut
    group_by: str
    user: str | None  # null: every user
    freshness: FreshnessOut
    reliability: ReliabilityOut
    query: str
    groups: list[GroupOut]
    notes: list[str]


@router.get("/usage", response_model=UsageOut, responses=_RESPONSES)
async def usage(
    request: Request,
    gw: Annotated[Runtime, Depends(gateway)],
    window: Annotated[
        str | None,
        Query(description=f"One of {', '.join(WINDOWS)} (default 24h), or give from/to"),
    ] = None,
    group_by: Annotated[GroupBy, Query(description="How to group the requests")] = GroupBy.MODEL,
    user: Annotated[
        str | None, Query(description="Whose traffic (admin keys; a user key: only its own)")
    ] = None,
    start: Annotated[
        str | None, Query(alias="from", description="Start: ISO 8601 or unix seconds")
    ] = None,
    end: Annotated[
        str | None, Query(alias="to", description="End (default now): ISO 8601 or unix seconds")
    ] = None,
) -> JSONResponse:
    """Requests, outcomes, latency, tokens and cost per group over a window, with the
    source they come from, its freshness and the reliability of every figure."""
    rid = request_id(request)
    key = await gw.auth.key(bearer_key(request.headers), rid)
    if key.role is not KeyRole.ADMIN:
        if user is not None and user != key.user_id:
            raise PermissionDenied(
                "a user key sees only its own usage; another user's needs an admin key",
                context=gw.contexts.create(key.user_id, key.tier, request_id=rid).error_context(
                    "usage"
                ),
            )
        user = key.user_id
    asked = window_of(window, start, end, gw.data.now())
    ctx = gw.contexts.create(key.user_id, key.tier, request_id=rid)
    started_at, started = time.time(), time.monotonic()
    try:
        answer = await gw.data.usage(ctx, asked, group_by, user)
    except DataUnavailable as exc:
        raise await _escalated(gw, Caller.of(key), ctx, exc, started_at, started) from None
    if not answer.degraded:
        await gw.escalation.answered(STORE)  # the store answered: its outage is over
    return JSONResponse(answer.to_dict())


async def _escalated(
    gw: Runtime,
    caller: Caller,
    ctx: RequestContext,
    exc: DataUnavailable,
    started_at: float,
    started: float,
) -> DataUnavailable:
    """No source could answer: for a tier that escalates, a ticket in the store's incident
    (as for a deployment's outage), with its fields in the error the caller reads."""
    duration = time.monotonic() - started
    tried = Attempt("", STORE, "sql", exc.error_type, round(duration, 6), detail=exc.message)
    error = exc.with_context(ctx.error_context("usage"), [tried])
    record = RequestRecord(
        request_id=ctx.request_id,
        user_id=caller.user_id,
        tier=str(caller.tier),
        surface="usage",
        requested_model="usage",
        started_at=started_at,
        duration_s=duration,
        attempts=(tried,),
        answer=None,
        error=error,
        contact=caller.contact,
    )
    await gw.escalation.finished(record)
    assert isinstance(error, DataUnavailable)
    return error
