"""Admin routes: the runtime flags, read and switched with an admin key.

``GET /admin/flags`` lists every flag; ``PUT /admin/flags/{name}`` with ``{"enabled": false}``
turns one off (or on) in every process of the fleet within 5 s, recorded with the key's id
and the time. A user key gets 403, no key 401, as problem+json with the request id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, StrictBool

from sincere.identity import KeyRecord
from sincere.ports import FlagState
from sincere.runtime import Runtime
from sincere.server.http_errors import RouteNotFound
from sincere.server.ops_routes import admin, gateway
from sincere.tiers.flags import FLAG_DESCRIPTIONS, Flag

router = APIRouter(prefix="/admin", tags=["admin"])

_PROBLEM: dict[str, Any] = {"application/problem+json": {}}
_ADMIN_ONLY: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, unknown or revoked API key", "content": _PROBLEM},
    403: {"description": "The key does not have the admin role", "content": _PROBLEM},
    503: {"description": "The store (the database) is unreachable", "content": _PROBLEM},
}


class FlagOut(BaseModel):
    """One flag: its value now, what it switches, and its last change (null: never set)."""

    name: str
    enabled: bool
    description: str
    changed_by: str | None  # "key:<key id>" or "cli:<os user>"
    changed_at: str | None  # ISO 8601, UTC


class FlagsOut(BaseModel):
    flags: list[FlagOut]


class FlagIn(BaseModel):
    """The new value of one flag."""

    model_config = ConfigDict(extra="forbid")

    enabled: StrictBool


@router.get("/flags", responses=_ADMIN_ONLY)
async def list_flags(
    gw: Runtime = Depends(gateway),  # noqa: B008
    _admin: KeyRecord = Depends(admin),  # noqa: B008
) -> FlagsOut:
    """Every runtime flag, as the store holds it now."""
    return _flags_out(await gw.flags.states())


@router.put("/flags/{name}", responses={**_ADMIN_ONLY, 404: {"content": _PROBLEM}})
async def set_flag(
    name: Annotated[str, PathParam(description="A flag: " + ", ".join(Flag))],
    body: FlagIn,
    gw: Runtime = Depends(gateway),  # noqa: B008
    key: KeyRecord = Depends(admin),  # noqa: B008
) -> FlagsOut:
    """Turn one flag on or off, recorded with the admin key's id; every flag in return."""
    flag = _flag(name)
    await gw.flags.set(flag, body.enabled, f"key:{key.id}")
    return _flags_out(await gw.flags.states())


def _flag(name: str) -> Flag:
    try:
        return Flag(name)
    except ValueError:
        raise RouteNotFound(
            f"no flag {name!r}; the flags are: {', '.join(Flag)}",
            suggestions=["List them with GET /admin/flags"],
        ) from None


def _flags_out(states: list[FlagState]) -> FlagsOut:
    return FlagsOut(
        flags=[
            FlagOut(
                name=str(s.flag),
                enabled=s.enabled,
                description=FLAG_DESCRIPTIONS[s.flag],
                changed_by=s.changed_by,
                changed_at=None if s.changed_at is None else _iso(s.changed_at),
            )
            for s in states
        ]
    )


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
