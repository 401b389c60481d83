"""Escalation: a failed request of an escalating tier gets a real ticket in a real incident,
and the operators hear of it; the incident is resolved when the deployment recovers.

A step of the one request pipeline (a ``RequestObserver``): it runs before the error is
rendered, so the ticket's fields (``error.members``) are in the body the caller reads.
One incident per deployment outage and failure class, not one per request; the store
writes the incident, the ticket and the notifications in one transaction, and the relay
delivers them (``tiers.relay``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sincere.config import Settings
from sincere.errors import ServiceError
from sincere.health import HealthState, Transition
from sincere.tiers.incidents import Destination, Failure, destinations

if TYPE_CHECKING:
    from sincere.ports import EscalationStore, RequestRecord

log = logging.getLogger("sincere.escalation")


def _always() -> bool:
    return True


def escalates(error: ServiceError) -> bool:
    """A failure of the service, not of the request: every route failed (5xx), the wait
    for a busy model ran out (503), or the providers refused with 429 after attempts.
    A caller's mistake (4xx) or sincere's own tier limit (429, no attempt) is no outage."""
    return error.status >= 500 or (error.status == 429 and bool(error.attempts))


class Escalation:
    """The pipeline's escalation step and the resolver of incidents.

    ``enabled`` is asked on every failed request (the ``escalation`` runtime flag);
    ``wake`` is called after every write, so the relay sends at once.
    """

    def __init__(
        self,
        settings: Settings,
        store: EscalationStore,
        *,
        enabled: Callable[[], bool] = _always,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._enabled = enabled
        self._wake = wake
        self._clock = clock
        self._targets: tuple[Destination, ...] = destinations(settings.escalation)
        # Deployments with an open incident, as far as this process knows (read from the
        # store once, then kept up to date): an answer from one of them resolves it.
        self._open: set[str] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ─── the pipeline's step ─────────────────────────────────────────────────────────

    async def finished(self, record: RequestRecord) -> None:
        if record.answer is not None:
            await self.answered(record.answer.provenance.deployment)
            return
        error = record.error
        if error is None or record.stop_reason is not None or not escalates(error):
            return
        limits = self._settings.tiers.get(record.tier)
        if limits is None or not limits.escalate or not self._enabled():
            return
        deployment = self._deployment(record)
        if deployment is None:
            return
        failure = Failure(
            request_id=record.request_id,
            user_id=record.user_id,
            tier=record.tier,
            deployment=deployment,
            failure_class=error.error_type,
            status=error.status,
            message=error.message,
            contact=record.contact,
            at=self._clock(),
        )
        escalated = await self._store.escalate(failure, self._targets)
        self._wake()
        if self._open is not None:
            self._open.add(deployment)
        error.members.update(
            ticket_id=escalated.ticket.id,
            incident_id=escalated.incident.id,
            incident_state=str(escalated.incident.state),
            escalation_reference=escalated.reference,
        )
        if record.contact is not None:
            error.members["contact"] = record.contact

    def _deployment(self, record: RequestRecord) -> str | None:
        """The first route tried; with no attempt, the requested model's first deployment."""
        if record.attempts:
            return record.attempts[0].deployment
        model = self._settings.model(record.requested_model)
        return model.deployments[0] if model is not None else None

    async def answered(self, deployment: str) -> None:
        """An answer from a deployment (or a service, such as the store) with an open
        incident is its recovery (a breaker that never opened never closes, so its
        transition cannot be waited for)."""
        if self._open is None:
            self._open = await self._store.open_deployments()
        if deployment in self._open:
            await self.resolve(deployment)

    # ─── recovery ────────────────────────────────────────────────────────────────────

    def on_transition(self, service: str, transition: Transition) -> None:
        """A registry listener: a deployment back to ready (its breaker closed) resolves
        its incidents. Only queued here; the store is written in the background."""
        if transition.state is not HealthState.READY:
            return
        task = asyncio.get_running_loop().create_task(self._resolve_quietly(service))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve_quietly(self, deployment: str) -> None:
        try:
            await self.resolve(deployment)
        except Exception:  # the next answer or closing breaker tries again
            log.warning("resolving %s's incidents failed", deployment, exc_info=True)

    async def resolve(self, deployment: str) -> int:
        """Resolve the deployment's open incidents, with their notifications; how many."""
        resolved = await self._store.resolve(deployment, self._clock(), self._targets)
        if self._open is not None:
            self._open.discard(deployment)
        if resolved:
            self._wake()
            for incident in resolved:
                log.info("incident %s (%s) resolved", incident.id, incident.dedup_key)
        return len(resolved)

    async def flush(self) -> None:
        """Wait for the resolutions under way (a closing process)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
