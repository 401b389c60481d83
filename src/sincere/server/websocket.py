"""WS /v1/events: a user's own service and request events, live, with replay."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
