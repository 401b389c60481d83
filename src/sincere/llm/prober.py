"""The prober: every open circuit is tested by a shadow probe when it is due, never by a
user's request."""

from __future__ import annotations

import asyncio
import logging

from sincere.llm.cascade import ModelCascade
from sincere.tiers.flags import Flag

log = logging.getLogger("sincere.prober")

# How often the prober looks for a due probe: a small part of the 4 s a recovered
# deployment may wait for its traffic (breaker_open_s 2 + this + the probe itself).
PROBE_TICK_S = 0.25


async def probe_open_deployments(cascade: ModelCascade, tick_s: float = PROBE_TICK_S) -> None:
    """Until cancelled: every ``tick_s``, start a probe of each deployment whose probe is
    due and not already running here. One task per process (the app's lifespan); in a
    fleet every process looks, and the breakers' claim lets one of them probe. With the
    shadow probes rolled back (``Flag.SHADOW_PROBE`` off) it starts none: the cascade lets a
    due circuit take a user's request as its probe instead."""
    running: dict[str, asyncio.Task[None]] = {}
    try:
        while True:
            due = cascade.due_probes() if cascade.flags(Flag.SHADOW_PROBE) else []
            for name in due:
                if name not in running:
                    running[name] = asyncio.create_task(_probe(cascade, name, running))
            await asyncio.sleep(tick_s)
    finally:
        for task in list(running.values()):
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)


async def _probe(cascade: ModelCascade, name: str, running: dict[str, asyncio.Task[None]]) -> None:
    try:
        await cascade.probe(name)
    except Exception:  # a defect in one probe must not end the probing for good
        log.exception("probing %s failed", name)
    finally:
        running.pop(name, None)
