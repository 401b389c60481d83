"""The ports: async protocols for every piece of state a request shares with others.

The domain and the request pipeline see shared state only through these. Each has an
in-process (or SQLite) implementation under ``sincere.backends`` for one process; the
fleet (Redis, PostgreSQL) plugs in beside them. No implementation may block the event
loop: SQL runs on a worker thread (or an async driver), Redis through its asyncio client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from sincere.agents.usage import GroupBy, GroupFigures
from sincere.answer import Answer, Usage
from sincere.attempts import Attempt
from sincere.availability import AttemptCounts
from sincere.context import RequestContext
from sincere.errors import ErrorContext, ServiceError
from sincere.events import Event, EventType, Replay
from sincere.identity import KeyRecord, KeyRole
from sincere.llm.breaker import BreakerAdmission, BreakerState, BreakerTransition
from sincere.telemetry import AttemptRow
from sincere.tiers.flags import Flag
from sincere.tiers.incidents import (
    Delivery,
    DeliveryAttempt,
    Destination,
    Escalated,
    Failure,
    Incident,
    IncidentDetail,
    Ticket,
)
from sincere.tiers.queue import QueueStatus, QueueView

# ─── events ──────────────────────────────────────────────────────────────────────────


class Subscription(Protocol):
    """One consumer of one user's events: first the replay, then live events, in id order."""

    gap: bool  # the replay could not serve everything after the requested id
    gap_reason: str | None

    @property
    def last_id(self) -> int:
        """The id of the last event handed to the consumer: where a reconnect resumes."""
        ...

    def close(self) -> None:
        """End the subscription; a consumer waiting for the next event stops at once."""
        ...

    def __aiter__(self) -> AsyncIterator[Event]: ...

    async def __anext__(self) -> Event: ...


class EventBus(Protocol):
    """Per-user ordered event streams with bounded history (in-process; Redis Streams)."""

    async def publish(
        self,
        user_id: str,
        type: EventType,
        message: str,
        *,
        request_id: str | None = None,
        service: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Event:
        """Append an event to the user's stream and return it numbered (a bus on the
        network waits a bounded time for that; past it, the event is returned with id 0
        and written later, in order). Cancelling the call never takes the event back."""
        ...

    def post(
        self,
        user_id: str,
        type: EventType,
        message: str,
        *,
        request_id: str | None = None,
        service: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Event:
        """``publish`` without waiting: the event is appended in order with every other
        one of this process, at once or within a round trip (a bus on the network)."""
        ...

    async def replay(self, user_id: str, after_id: int = 0) -> Replay:
        """The retained events after ``after_id`` (0: all retained), with a gap if any is lost."""
        ...

    async def bounds(self, user_id: str) -> tuple[int, int]:
        """The oldest retained id (last + 1 when none is) and the last id of a user's stream."""
        ...

    async def subscribe(self, user_id: str, after_id: int | None = None) -> Subscription:
        """Live events from now on; with ``after_id``, the retained ones after it first."""
        ...

    async def aclose(self) -> None: ...


# ─── limits ──────────────────────────────────────────────────────────────────────────


class Limiter(Protocol):
    """Per-user admission by tier: requests per minute and concurrent requests."""

    def admit(
        self, user_id: str, tier: str, context: ErrorContext
    ) -> AbstractAsyncContextManager[None]:
        """Hold one slot for the ``async with`` block; entering raises ``RateLimited``
        (with a true ``retry_after`` where one is known) when the tier's limits are reached.
        Leaving the block, however it is left, releases the slot."""
        ...

    async def aclose(self) -> None:
        """Stop what runs in the background (a fleet's heartbeat); held slots are not kept."""
        ...


# ─── admission queues ────────────────────────────────────────────────────────────────


class QueueSlot(Protocol):
    """One attempt's hold on a deployment, entered: ``async with`` it, let ``waiting``
    announce its places until it is let through, then run the attempt; leaving the block
    frees the slot (or the place, for a request that stops waiting)."""

    waited_s: float  # measured, once it is let through (or its wait ran out)

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def waiting(self, budget_s: float | None = None) -> AsyncIterator[QueueStatus]:
        """Each new place, then the dequeued status (nothing when let through at once);
        ``QueueTimeout`` when ``budget_s`` (default: the tier's wait) or the deadline
        runs out."""
        ...


class AdmissionQueue(Protocol):
    """Every deployment's capacity and the requests waiting for it (one process; Redis
    for a fleet)."""

    @property
    def queues(self) -> Mapping[str, QueueView]: ...

    async def enter(self, ctx: RequestContext, deployment: str) -> QueueSlot:
        """A hold on ``deployment``: a slot at once, or a place in its queue; raises
        ``AtCapacity`` when it is full and queueing is turned off."""
        ...

    async def aclose(self) -> None: ...


# ─── breakers ────────────────────────────────────────────────────────────────────────


class BreakerView(Protocol):
    """What is known here of one deployment's breaker (synchronous: read by /metrics and
    the prober; for a fleet, a local mirror at most a second old)."""

    deployment: str

    @property
    def state(self) -> BreakerState: ...

    def seconds_until_probe(self) -> float | None:
        """None when closed; 0 while a probe is due or running."""
        ...

    def probe_due(self) -> bool:
        """A probe may be claimed now (open with its period over, or a probe's lease lapsed)."""
        ...

    @property
    def transitions(self) -> Sequence[BreakerTransition]: ...


# Told of a transition and whether this process made it: a move made elsewhere (news), or
# one made here without a caller to hand it to (successes written in bulk closed it).
BreakerListener = Callable[[BreakerTransition, bool], Awaitable[None]]
"""Told about a transition another process made (this process's own are returned)."""


class Breakers(Protocol):
    """The circuit breaker state of every deployment (in-process; Redis for a fleet).

    User requests pass only a closed circuit (``admit``) and report their outcome
    (``record_success``, ``record_failure``); an open circuit is tested by one shadow probe
    at a time (``claim_probe``, then ``probe_succeeded``, ``probe_failed`` or ``release``).
    """

    def names(self) -> Sequence[str]: ...

    def view(self, deployment: str) -> BreakerView: ...

    def listen(self, listener: BreakerListener) -> None:
        """Hear of the transitions made elsewhere (never of those a call here returns)."""
        ...

    async def admit(self, deployment: str) -> BreakerAdmission: ...

    async def record_success(self, deployment: str) -> BreakerTransition | None:
        """A user request's success: counted while closed; closes a circuit opened by the
        failure rules (not one open for a time it was given), returning that move."""
        ...

    async def record_failure(
        self, deployment: str, reason: str, open_for_s: float | None = None
    ) -> BreakerTransition | None: ...

    async def claim_probe(
        self, deployment: str, lease_s: float
    ) -> tuple[bool, BreakerTransition | None]:
        """Take the due probe for ``lease_s`` (one taker per due time, fleet-wide)."""
        ...

    async def probe_succeeded(
        self, deployment: str, reason: str = "its probe succeeded"
    ) -> BreakerTransition | None: ...

    async def probe_failed(
        self, deployment: str, reason: str, open_for_s: float | None = None
    ) -> BreakerTransition | None: ...

    async def release(self, deployment: str) -> None:
        """A claimed probe ended without a verdict: the next one may go now."""
        ...

    async def aclose(self) -> None: ...


# ─── keys and history ────────────────────────────────────────────────────────────────


class KeyStore(Protocol):
    """API keys: stored as hashes; verified on every request (so cached briefly)."""

    async def verify(self, key: str) -> KeyRecord | None:
        """The active key's record, or None for an unknown, revoked or malformed key."""
        ...

    async def create(
        self, user_id: str, tier: str, role: KeyRole = KeyRole.USER, contact: str | None = None
    ) -> tuple[str, KeyRecord]:
        """A new key; its plaintext is returned here once and never stored. ``contact``:
        whom to reach about its failed requests (an email address), when the operator
        gives one."""
        ...

    async def list(self) -> list[KeyRecord]: ...

    async def revoke(self, key_id: str) -> bool:
        """Revoke by public id; False when no active key has that id."""
        ...


@dataclass(frozen=True, slots=True)
class RecordedTransition:
    service: str
    state: str
    message: str
    at: float  # unix time


class ServiceHistory(Protocol):
    """Every recorded state change of every service, for /status and recovery estimates,
    and when gateway processes were observing them (time none observed is "no data")."""

    async def record(self, service: str, state: str, message: str, at: float) -> None: ...

    async def recent(self, service: str, limit: int = 20) -> list[RecordedTransition]:
        """The newest transitions of one service, newest first."""
        ...

    async def between(self, service: str, start: float, end: float) -> list[RecordedTransition]:
        """The transitions of one service recorded in ``[start, end)``, oldest first, led by
        the last one before ``start`` when there is one (the state the range began in)."""
        ...

    async def begin_observing(self, at: float) -> int:
        """Record that a gateway process observes its services from ``at``; its id."""
        ...

    async def still_observing(self, process: int, at: float) -> None:
        """Record that the process ``process`` was still observing at ``at``."""
        ...

    async def observed(self, start: float, end: float) -> list[tuple[float, float]]:
        """The lifetimes ``(started_at, last_seen_at)`` of the processes that observed some
        of ``[start, end)``, by start."""
        ...


# ─── escalation ──────────────────────────────────────────────────────────────────────


class EscalationStore(Protocol):
    """Incidents, tickets and the outbox of their notifications (SQLite or PostgreSQL).

    Every change of an incident is written in one transaction with the notifications it
    causes, so none is lost to a crash; a relay then claims due deliveries (on PostgreSQL
    with ``FOR UPDATE SKIP LOCKED``, so a fleet's relays never send one twice at once),
    sends them and records each attempt.
    """

    async def escalate(self, failure: Failure, targets: Sequence[Destination]) -> Escalated:
        """A ticket for the failure, in the open incident of its deployment and failure
        class (opened now if there is none: ``incident.opened``, else ``incident.updated``)."""
        ...

    async def resolve(
        self, deployment: str, at: float, targets: Sequence[Destination]
    ) -> list[Incident]:
        """Resolve the deployment's open incidents (``incident.resolved``); those resolved."""
        ...

    async def open_deployments(self) -> set[str]:
        """The deployments that have an open incident."""
        ...

    async def claim(self, now: float, lease_s: float, limit: int) -> list[Delivery]:
        """Due deliveries, each taken for ``lease_s`` (after which another relay may take
        it, should this one die). A delivery waits for the earlier ones of its incident
        and destination, so a resolve never overtakes its trigger."""
        ...

    async def record_attempt(self, attempt: DeliveryAttempt, schedule: Sequence[float]) -> None:
        """Record one attempt; a failure schedules the next per ``schedule`` (or, past its
        end, marks the delivery dead)."""
        ...

    async def replay(self, delivery_id: str, at: float) -> bool:
        """Send a delivery again from the start of the schedule; False if there is none."""
        ...

    async def incidents(self, limit: int = 50) -> list[Incident]: ...

    async def incident(self, incident_id: str) -> IncidentDetail | None: ...

    async def tickets(self, limit: int = 50) -> list[Ticket]: ...

    async def ticket(self, ticket_id: str) -> Ticket | None: ...


# ─── runtime flags ───────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class FlagState:
    """One flag as the store knows it: its value and its last change (None: never set,
    so it has its default, on)."""

    flag: Flag
    enabled: bool
    changed_by: str | None = None  # "key:<key id>" or "cli:<os user>"
    changed_at: float | None = None  # unix time


class FlagStore(Protocol):
    """The runtime flags every process of a fleet shares (``sincere flags``, /admin/flags).

    ``enabled`` is on the request path, so it never waits: it answers from what this
    process last read, refreshed in the background often enough that a change made
    anywhere is in force everywhere within 5 s. A store that cannot be read leaves the last
    known values in force; it never fails a request.
    """

    def enabled(self, flag: Flag) -> bool:
        """The flag's value as last read (on for a flag never set)."""
        ...

    async def set(self, flag: Flag, enabled: bool, by: str) -> FlagState:
        """Change a flag and record who (``by``) and when; in force here at once."""
        ...

    async def states(self) -> list[FlagState]:
        """Every flag, read from the store now (a ``ServiceUnavailable`` when it cannot be)."""
        ...

    def start(self) -> None:
        """Keep the values fresh in the background, on the running event loop."""
        ...

    async def aclose(self) -> None:
        """Stop the background refresh; ``enabled`` keeps answering from the last values."""
        ...


# ─── what each request leaves behind ─────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One finished request, as the pipeline hands it to telemetry (and escalation)."""

    request_id: str
    user_id: str
    tier: str
    surface: str  # "http", "sse", "cli", ...
    requested_model: str
    started_at: float  # unix time
    duration_s: float
    attempts: tuple[Attempt, ...]
    answer: Answer | None  # None when the request failed
    error: ServiceError | None  # the error the caller received, if it failed
    stop_reason: str | None = None  # set when the request was stopped from outside
    contact: str | None = None  # the caller's key's contact, when one was configured

    @property
    def failed_over(self) -> bool:
        """Answered by another deployment than the first one tried (retries are not)."""
        a = self.answer
        return a is not None and a.provenance.attempts[0].deployment != a.provenance.deployment


class RequestObserver(Protocol):
    """Told about every finished request: telemetry (metrics, recorded attempts),
    escalation. Called off the answer's critical path where it can be; must not raise."""

    async def finished(self, record: RequestRecord) -> None: ...


class TelemetryStore(Protocol):
    """Where every attempt is recorded (SQLite or PostgreSQL), written in batches."""

    source: str  # what the data agent names as its source ("sql:postgresql", ...)

    async def write(self, rows: Sequence[AttemptRow]) -> None:
        """One batch, in one transaction; rows already written are skipped."""
        ...

    async def prune(self, before: float) -> int:
        """Delete the rows of requests started before ``before`` (unix time); how many."""
        ...

    async def newest(self) -> float | None:
        """When the newest recorded request started (None: nothing is recorded)."""
        ...

    async def rows(self, start: float, end: float, user_id: str | None = None) -> list[AttemptRow]:
        """The rows of requests started in ``[start, end)``, of one user or of all."""
        ...

    async def attempt_counts(
        self, start: float, end: float, *, by_day: bool
    ) -> list[AttemptCounts]:
        """Per deployment (and UTC day, ``by_day``): the attempts sent to it, failed by its
        fault and answered (``sincere.availability``), of requests started in the range."""
        ...

    async def figures(
        self, start: float, end: float, user_id: str | None, group_by: GroupBy, min_samples: int
    ) -> tuple[tuple[GroupFigures, ...], int]:
        """The figures ``agents.figures.aggregate`` makes of those rows, computed where the
        rows are; and how many rows they rest on."""
        ...


@dataclass(frozen=True, slots=True)
class ProbeRecord:
    """One shadow probe of a deployment: what it cost, like any attempt (no user's request)."""

    attempt: Attempt  # model "" (a probe serves no model); outcome "ok" or the error type
    usage: Usage | None  # tokens, when the provider reported them
    at: float  # unix time it started


class ProbeObserver(Protocol):
    """Told about every shadow probe (metrics now; the telemetry store, issue 13). Must not
    raise."""

    async def probed(self, record: ProbeRecord) -> None: ...
