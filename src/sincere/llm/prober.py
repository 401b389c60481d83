"""The idle prober: open deployments are probed on a schedule when no request probes them."""

from __future__ import annotations

import asyncio
import logging

from sincere.llm.cascade import ModelCascade

log = logging.getLogger("sincere.prober")

PROBE_TICK_S = 1.0


async def probe_idle_deployments(cascade: ModelCascade, tick_s: float = PROBE_TICK_S) -> None:
    """Until cancelled: every ``tick_s``, probe the deployments whose probe has been due a tick.

    A request that arrives when a probe is due is the probe; this steps in only when none
    came for a tick, so that an instance without traffic still recovers. One per process.
    """
    while True:
        await asyncio.sleep(tick_s)
        try:
            await cascade.probe_overdue(tick_s)
        except Exception:  # a defect in one round must not end the probing for good
            log.exception("probing idle deployments failed")
