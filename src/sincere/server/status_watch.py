"""The status watch: this process's record of the shared parts (the store, Redis) and of its
own lifetime as an observer, for the status page's history.

Every ``[status] check_interval_s`` the watch probes the store and Redis (the probes /health
uses; their results there are observed too) and records a transition in the service history
when a part's state changes: ``ready`` or ``unavailable``, with a short message that names no
host, user or secret. The names are ``backend:store`` and ``backend:redis``; no deployment may
take a name with that prefix (``config.RESERVED_PREFIX``). Then it records that this process
is still observing: the heartbeat of its lifetime (``gateway_processes``). Time no process
observed is "no data" on the page, never up nor down.

The store cannot record its own outage. A transition or heartbeat it refuses is kept here,
in order, and written with its true time once it answers again; the lifetime is then
extended to that moment, since the process was observing all along. A process that dies
before the store is back loses what it kept: that time shows as not observed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from starlette.applications import Starlette

from sincere.config import RESERVED_PREFIX
from sincere.errors import ServiceError
from sincere.runtime import Runtime
from sincere.server.probes import Probe, probe_redis, probe_store

log = logging.getLogger("sincere.server")

STORE = RESERVED_PREFIX + "store"
REDIS = RESERVED_PREFIX + "redis"
# The status page's component name of each shared part, and its name in the history.
SERVICES = {"store": STORE, "redis": REDIS}
# A tick this much later than due means the process did not run (suspended, the machine
# slept): what it knew is stale, and it observes again from then, in a new lifetime.
STALL_S = 60.0


@dataclass(frozen=True, slots=True)
class Observed:
    """A shared part's state as this process last measured it, and since when."""

    state: str  # ready | unavailable
    since: float  # the time of the probe that found it in this state
    message: str
    first: bool  # the first measurement of this process's lifetime


class StatusWatch:
    """Probes the shared parts on an interval, records their transitions and this process's
    lifetime; keeps what the store refuses until it answers (see the module's docstring)."""

    def __init__(self, gw: Runtime, clock: Callable[[], float] = time.time) -> None:
        self._gw = gw
        self._interval = gw.settings.status.check_interval_s
        self._clock = clock
        self.observing_since = gw.started_at  # the start of this process's lifetime
        self._process: int | None = None  # its row, once the store has it
        self._states: dict[str, Observed] = {}
        self._pending: deque[tuple[str, str, str, float]] = deque()
        self._lock = asyncio.Lock()
        self._drain: asyncio.Task[None] | None = None
        self._last_tick: float | None = None

    def current(self, service: str) -> Observed | None:
        """The part's state as this process last measured it (None: not yet)."""
        return self._states.get(service)

    def observe(self, service: str, probe: Probe) -> Observed:
        """Take a measurement of a shared part: a change of state is recorded (in the
        background); an older measurement than the state's own changes nothing."""
        state = "ready" if probe.ok else "unavailable"
        current = self._states.get(service)
        if current is not None and (current.state == state or probe.at < current.since):
            return current
        message = "answered" if probe.ok else (probe.output or "did not answer")
        observed = Observed(state, probe.at, message, current is None)
        self._states[service] = observed
        self._pending.append((service, state, message, probe.at))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_task(self._write_logged())
        return observed

    async def run(self) -> None:
        """Until cancelled: a tick every interval; on the way out, the lifetime's end and
        what still waits are written (within the connect timeout)."""
        try:
            while True:
                await self.tick()
                await asyncio.sleep(self._interval)
        finally:
            with suppress(Exception):
                await asyncio.wait_for(self.write(), self._gw.settings.defaults.connect_timeout_s)

    async def tick(self) -> None:
        """Probe the store and Redis, then write the heartbeat and any transition."""
        now = self._clock()
        if self._last_tick is not None and now - self._last_tick > self._interval + STALL_S:
            # Not running in between: nothing was observed, and what was known is stale.
            self.observing_since, self._process, self._states = now, None, {}
        self._last_tick = now
        store, redis = await asyncio.gather(probe_store(self._gw), probe_redis(self._gw))
        self.observe(STORE, store)
        if redis is not None:
            self.observe(REDIS, redis)
        await self._write_logged()

    async def write(self) -> None:
        """Write, in order, the lifetime (begun, else extended to now) and the transitions
        waiting; the first refusal stops the writing and keeps the rest for next time."""
        history = self._gw.history
        async with self._lock:
            if self._process is None:
                self._process = await history.begin_observing(self.observing_since)
            await history.still_observing(self._process, self._clock())
            while self._pending:
                service, state, message, at = self._pending[0]
                await history.record(service, state, message, at)
                self._pending.popleft()

    async def _write_logged(self) -> None:
        try:
            await self.write()
        except ServiceError as exc:  # the store is down: what waits is written when it answers
            log.warning(
                "status watch: the store refused the heartbeat (%s); %d transitions kept",
                exc.message,
                len(self._pending),
            )
        except Exception:  # a defect: said in full; what waits is tried again next time
            log.exception("status watch: writing the heartbeat or a transition failed")


def of(app: Starlette) -> StatusWatch:
    """The app's watch, made on first use (the lifespan runs it; the routes feed it)."""
    watch: StatusWatch | None = getattr(app.state, "status_watch", None)
    if watch is None:
        watch = app.state.status_watch = StatusWatch(app.state.runtime)
    return watch
