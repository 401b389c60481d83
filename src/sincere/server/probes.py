"""The timed round trips to the shared parts: the store's ``SELECT 1`` and Redis's ``PING``.

Read by /readyz, /health and /status at request time, and by the status watch on its
interval (which records their transitions). Each is bounded by the connect timeout; what a
failure says publicly names no host, user or password.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from redis.exceptions import RedisError
from sqlalchemy import text

from sincere.redact import redact
from sincere.runtime import Runtime

log = logging.getLogger("sincere.server")


@dataclass(frozen=True, slots=True)
class Probe:
    """One timed round trip to a shared part (the store's SELECT 1, Redis's PING)."""

    ok: bool
    at: float
    ms: float | None = None  # the measured round trip, only when it answered
    output: str | None = None  # public: what failed, never a host, user or password
    detail: str | None = None  # for operators: the driver's message, secrets redacted


async def probe_store(gw: Runtime) -> Probe:
    """Time a ``SELECT 1`` off the event loop, bounded by the connect timeout."""
    limit = gw.settings.defaults.connect_timeout_s
    at, started = time.time(), time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.to_thread(_select_one, gw), limit)
    except TimeoutError:
        return Probe(False, at, output=f"no answer to SELECT 1 within {limit:g} s")
    except Exception as exc:  # any failure means the store cannot serve
        # The driver's message may name hosts or users: it goes to the log, not to the public.
        log.warning("store check failed", exc_info=True)
        return Probe(False, at, output=f"SELECT 1 failed: {type(exc).__name__}", detail=said(exc))
    return Probe(True, at, ms=round((time.perf_counter() - started) * 1000, 3))


async def probe_redis(gw: Runtime) -> Probe | None:
    """Time a ``PING`` to the fleet's Redis (None: there is none). The client's own socket
    timeouts bound it; the connect timeout is the backstop."""
    if gw.redis is None:
        return None
    limit = gw.settings.defaults.connect_timeout_s
    at, started = time.time(), time.perf_counter()
    try:
        await asyncio.wait_for(gw.redis.ping(), limit)
    except TimeoutError:
        return Probe(False, at, output=f"no answer to PING within {limit:g} s")
    except (RedisError, OSError) as exc:  # Redis cannot serve: it refused, closed, erred
        log.warning("redis check failed: %s", said(exc))
        return Probe(False, at, output=f"PING failed: {type(exc).__name__}", detail=said(exc))
    return Probe(True, at, ms=round((time.perf_counter() - started) * 1000, 3))


def said(exc: BaseException) -> str:
    """An exception's type and message with every known secret and credential removed
    (the Redis password is one: the composition root remembers it)."""
    return redact(f"{type(exc).__name__}: {exc}")


def _select_one(gw: Runtime) -> None:
    with gw.database.engine.connect() as conn:
        conn.execute(text("SELECT 1")).scalar_one()
