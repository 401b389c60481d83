"""The service registry: declared services, their health checks, and their recorded states."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from sincere.context import RequestContext
from sincere.errors import ServiceError
from sincere.events import EventType
from sincere.redact import redact

if TYPE_CHECKING:
    from sincere.ports import ServiceHistory

log = logging.getLogger("sincere.health")


class HealthState(StrEnum):
    UNKNOWN = "unknown"
    READY = "ready"
    DEGRADED = "degraded"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class HealthReport:
    state: HealthState
    message: str


HealthCheck = Callable[[], Awaitable["HealthReport | bool"]]
"""A check returns a report, or True (ready) / False (unavailable); raising means unavailable."""


@dataclass(frozen=True, slots=True)
class Transition:
    at: float  # unix time
    state: HealthState
    message: str


@dataclass(slots=True)
class ServiceRecord:
    name: str
    check: HealthCheck
    critical: bool
    timeout_s: float
    state: HealthState = HealthState.UNKNOWN
    since: float = field(default_factory=time.time)
    transitions: deque[Transition] = field(default_factory=lambda: deque(maxlen=100))

    def record(self, report: HealthReport) -> Transition | None:
        if report.state == self.state:
            return None
        self.state = report.state
        self.since = time.time()
        transition = Transition(self.since, report.state, report.message)
        self.transitions.append(transition)
        return transition


class InitStatus(StrEnum):
    READY = "ready"
    PARTIAL = "partial"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class InitializationResult:
    status: InitStatus
    services: Mapping[str, HealthReport]
    duration_s: float


_RESULT_EVENT = {
    HealthState.READY: EventType.SERVICE_READY,
    HealthState.DEGRADED: EventType.SERVICE_DEGRADED,
    HealthState.UNAVAILABLE: EventType.SERVICE_UNAVAILABLE,
}


class ServiceRegistry:
    """Knows every service a request may depend on and checks them for a request on demand."""

    def __init__(self) -> None:
        self._services: dict[str, ServiceRecord] = {}
        self._listeners: list[Callable[[str, Transition], None]] = []

    def on_transition(self, listener: Callable[[str, Transition], None]) -> None:
        """Call ``listener(service, transition)`` on every recorded state change."""
        self._listeners.append(listener)

    def report(self, name: str, report: HealthReport, *, recorded: bool = False) -> None:
        """Record a service's state as observed now (by a check, a breaker, a request).
        ``recorded``: another process made this change and told its listeners (the
        history): this registry follows it without telling its own a second time."""
        transition = self._services[name].record(report)
        if transition is not None and not recorded:
            for listener in self._listeners:
                listener(name, transition)

    def register(
        self, name: str, check: HealthCheck, *, critical: bool = False, timeout_s: float = 30.0
    ) -> None:
        self._services[name] = ServiceRecord(name, check, critical, timeout_s)

    def __contains__(self, name: object) -> bool:
        return name in self._services

    def record(self, name: str) -> ServiceRecord:
        return self._services[name]

    async def initialize_for_context(
        self, ctx: RequestContext, required: Iterable[str], *, announce: bool = True
    ) -> InitializationResult:
        """Check each required service for this request, telling the user as it happens
        (unless ``announce`` is off: the detailed events are rolled back).

        ``failed`` only when a critical service is unavailable; ``partial`` when any
        service is not ready; otherwise ``ready``.
        """
        names = list(dict.fromkeys(required))
        unknown = [n for n in names if n not in self._services]
        if unknown:
            raise ValueError(f"services not registered: {', '.join(unknown)}")
        started = time.monotonic()
        reports = await asyncio.gather(
            *(self._check(ctx, self._services[n], announce) for n in names)
        )
        by_name = dict(zip(names, reports, strict=True))
        if any(
            r.state is HealthState.UNAVAILABLE and self._services[n].critical
            for n, r in by_name.items()
        ):
            status = InitStatus.FAILED
        elif all(r.state is HealthState.READY for r in reports):
            status = InitStatus.READY
        else:
            status = InitStatus.PARTIAL
        return InitializationResult(status, by_name, time.monotonic() - started)

    async def _check(
        self, ctx: RequestContext, service: ServiceRecord, announce: bool
    ) -> HealthReport:
        if announce:
            await ctx.emit(
                EventType.SERVICE_INITIALIZING,
                f"Checking {service.name}",
                service=service.name,
                state=str(service.state),
            )
        started = time.monotonic()
        timeout = max(0.0, min(service.timeout_s, ctx.remaining()))
        try:
            async with asyncio.timeout(timeout):
                outcome = await service.check()
        except TimeoutError:
            report = HealthReport(
                HealthState.UNAVAILABLE, f"health check did not finish within {timeout:.1f} s"
            )
        except ServiceError as exc:
            report = HealthReport(HealthState.UNAVAILABLE, exc.message)
        except Exception as exc:  # noqa: BLE001 - any failing check means unavailable
            report = HealthReport(HealthState.UNAVAILABLE, f"{type(exc).__name__}: {exc}")
        else:
            if isinstance(outcome, HealthReport):
                report = outcome
            elif outcome:
                report = HealthReport(HealthState.READY, "ready")
            else:
                report = HealthReport(HealthState.UNAVAILABLE, "health check reported failure")
        report = HealthReport(report.state, redact(report.message))
        self.report(service.name, report)
        if announce:
            await ctx.emit(
                _RESULT_EVENT.get(report.state, EventType.SERVICE_DEGRADED),
                f"{service.name}: {report.message}",
                service=service.name,
                check_duration_s=round(time.monotonic() - started, 6),
                critical=service.critical,
            )
        return report


class HistoryWriter:
    """Records the registry's transitions in the service history, in order, in the background.

    A registry listener (``registry.on_transition(writer)``): it only queues the transition,
    so neither the event loop nor the request whose outcome changed a state ever waits on
    the store. One task at a time drains the queue, in order; ``flush`` waits until it is empty.
    """

    def __init__(self, history: ServiceHistory) -> None:
        self._history = history
        self._queue: deque[tuple[str, Transition]] = deque()
        self._drain: asyncio.Task[None] | None = None

    def __call__(self, service: str, transition: Transition) -> None:
        self._queue.append((service, transition))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while self._queue:
            service, t = self._queue.popleft()  # taken first: a cancelled write is not repeated
            try:
                await self._history.record(service, str(t.state), t.message, t.at)
            except Exception:  # a silent store loses this record, never the ones after it
                log.warning("recording %s's transition failed", service, exc_info=True)

    async def flush(self) -> None:
        """Wait until every queued transition is written (a reader of the history first,
        a closing process last). Cancelling the wait leaves the writing going on."""
        while self._drain is not None and not self._drain.done():
            await asyncio.shield(self._drain)
