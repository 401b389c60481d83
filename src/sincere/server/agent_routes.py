"""``POST /v1/agents/analyst/runs``: the analyst answers a question about the caller's own
traffic (``sincere.agents.analyst``).

The body is ``{"question": "...", "window": "7d"}`` (or ``from``/``to`` instead of a named
window). The answer is the run: findings computed by code, each with its numbers and their
provenance, and a narrative a model wrote from them under the number rule, or ``null``
with the reason and the attempts. The run's events (``agent_started``, ``tool_executing``,
``tool_completed``, ``agent_completed`` or ``agent_failed``) reach the caller's event
stream under the run's id. No source of data able to answer: 503 ``data_unavailable``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.responses import JSONResponse

from sincere.agents.analyst import new_run_id
from sincere.agents.data import WINDOWS, window_of
from sincere.runtime import Runtime
from sincere.server.http_errors import bearer_key, request_id
from sincere.server.ops_routes import gateway

router = APIRouter(prefix="/v1/agents", tags=["agents"])

_ERROR: dict[str, Any] = {"application/json": {}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "An invalid question or window", "content": _ERROR},
    401: {"description": "Missing, unknown or revoked API key", "content": _ERROR},
    429: {"description": "The tier's limits refused the narrative's request", "content": _ERROR},
    503: {
        "description": "No data source can answer (data_unavailable), or the key store is down",
        "content": _ERROR,
    },
}


class AnalystRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    question: StrictStr = Field(min_length=1, max_length=2000)
    window: StrictStr | None = Field(
        None, description=f"One of {', '.join(WINDOWS)} (default 7d), or give from/to"
    )
    start: StrictStr | None = Field(None, alias="from", description="ISO 8601 or unix seconds")
    end: StrictStr | None = Field(None, alias="to", description="ISO 8601 or unix seconds")


@router.post("/analyst/runs", responses=_RESPONSES)
async def analyst_run(
    request: Request, body: AnalystRunIn, gw: Annotated[Runtime, Depends(gateway)]
) -> JSONResponse:
    """Findings about the caller's own traffic, and a narrative that states only their
    numbers (or none, with the reason)."""
    rid = request_id(request)
    who = await gw.auth.caller(bearer_key(request.headers), rid)
    label = body.window if body.window or body.start or body.end else "7d"
    window = window_of(label, body.start, body.end, gw.data.now())
    run = await gw.analyst.run(who, body.question, window, run_id=new_run_id())
    return JSONResponse(run.to_dict(), headers={"x-sincere-run-id": run.id})
