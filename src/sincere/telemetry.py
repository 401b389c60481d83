"""Telemetry: every attempt of every request, recorded off the request path.

The pipeline hands each finished request to ``TelemetryWriter`` (a ``RequestObserver``);
it turns the request into one row per attempt (``AttemptRow``; a request that made no
attempt, refused by a tier limit say, is one row with no deployment), keeps them in this
process's window of recent rows, and queues them for the store. A background task
writes the queue in batches every ``flush_s`` (one transaction per batch, on a worker
thread; a row already written is not written twice: ``(request_id, index)`` is unique).
What a ``kill -9`` can lose is bounded: the rows of the requests that ended in the last
``flush_s``, plus the batch being written (at most ``MAX_BATCH`` rows).

Unknown stays unknown: tokens, cost and time to first token are None (NULL) unless the
provider reported them (cost: unless prices are configured), never 0.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sincere.attempts import OK
from sincere.errors import ServiceError

if TYPE_CHECKING:
    from sincere.ports import RequestRecord, TelemetryStore

log = logging.getLogger("sincere.telemetry")

MAX_BATCH = 5_000  # rows per transaction
MAX_QUEUED = 200_000  # rows waiting for the store; beyond, the oldest are dropped (counted)
PRUNE_EVERY_S = 3600.0  # how often rows older than the retention are deleted


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One attempt of one request, as telemetry records it."""

    at: float  # unix time the request started
    request_id: str
    index: int  # the attempt's place in its request (0, 1, ...): (request_id, index) is unique
    user_id: str
    tier: str
    surface: str
    requested_model: str
    model: str | None  # the model of the route tried (None: no route was tried)
    deployment: str | None
    outcome: str  # "ok", an error type, "blocked", "circuit_open", "cancelled", ...
    final: bool  # the attempt that decided the request (its answer or its last failure)
    request_outcome: str  # "answered", else the error type the caller received
    status_code: int | None
    latency_s: float  # the attempt's duration
    tokens_in: int | None
    tokens_out: int | None
    cost_usd: float | None
    ttft_s: float | None
    queue_wait_s: float | None  # on the final row: the request's time in queues
    request_latency_s: float | None  # on the final row: the whole request's duration
    # On the final row: what all of the request's attempts were billed (None: one of them
    # is unknown; 0 for a request that reached no deployment), and its number of rows.
    request_cost_usd: float | None = None
    request_rows: int | None = None

    @property
    def answered(self) -> bool:
        return self.request_outcome == "answered"


def rows_of(record: RequestRecord) -> list[AttemptRow]:
    """The rows of one finished request: its attempts, the deciding one marked ``final``."""
    answer, error = record.answer, record.error
    if answer is not None:
        request_outcome = "answered"
        queue_wait: float | None = answer.provenance.queue_wait_s
    elif error is not None:
        request_outcome = error.error_type
        waited = error.members.get("queue_waited_ms")
        queue_wait = waited / 1000 if isinstance(waited, int | float) else None
    else:
        request_outcome = "cancelled"  # stopped from outside
        queue_wait = None
    usage = answer.provenance.usage if answer is not None else None
    ttft = answer.provenance.time_to_first_token_s if answer is not None else None
    rows = []
    attempts = record.attempts
    last = len(attempts) - 1
    for i, a in enumerate(attempts):
        won = answer is not None and a.outcome == OK and i == last
        final = i == last
        rows.append(
            AttemptRow(
                at=record.started_at,
                request_id=record.request_id,
                index=i,
                user_id=record.user_id,
                tier=record.tier,
                surface=record.surface,
                requested_model=record.requested_model,
                model=a.model or None,
                deployment=a.deployment,
                outcome=a.outcome,
                final=final,
                request_outcome=request_outcome,
                status_code=a.status_code,
                latency_s=a.duration_s,
                tokens_in=usage.prompt_tokens if won and usage else None,
                tokens_out=usage.completion_tokens if won and usage else None,
                cost_usd=a.cost_usd,
                ttft_s=ttft if won else None,
                queue_wait_s=queue_wait if final else None,
                request_latency_s=record.duration_s if final else None,
            )
        )
    if rows:
        costs = [a.cost_usd for a in attempts]
        cost = None if None in costs else math.fsum(c for c in costs if c is not None)
        rows[-1] = replace(rows[-1], request_cost_usd=cost, request_rows=len(rows))
    if not rows:  # refused before any route was tried (a tier limit, a bad request)
        rows.append(
            AttemptRow(
                at=record.started_at,
                request_id=record.request_id,
                index=0,
                user_id=record.user_id,
                tier=record.tier,
                surface=record.surface,
                requested_model=record.requested_model,
                model=None,
                deployment=None,
                outcome=request_outcome,
                final=True,
                request_outcome=request_outcome,
                status_code=None,
                latency_s=record.duration_s,
                tokens_in=None,
                tokens_out=None,
                cost_usd=None,
                ttft_s=None,
                queue_wait_s=queue_wait,
                request_latency_s=record.duration_s,
                request_cost_usd=0.0,  # no provider was asked
                request_rows=1,
            )
        )
    return rows


class RecentWindow:
    """This process's rows of the last ``seconds``: the data agent's second source, real
    data with a true scope, when the store cannot be read."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.seconds = seconds
        self._clock = clock
        self._rows: deque[AttemptRow] = deque()

    def add(self, rows: Iterable[AttemptRow]) -> None:
        self._rows.extend(rows)
        self._trim()

    def rows(self, start: float, end: float) -> list[AttemptRow]:
        self._trim()
        return [r for r in self._rows if start <= r.at < end]

    def since(self) -> float:
        """The start of what this window can hold."""
        return self._clock() - self.seconds

    def _trim(self) -> None:
        horizon = self._clock() - self.seconds
        while self._rows and self._rows[0].at < horizon:
            self._rows.popleft()


class TelemetryWriter:
    """The pipeline's telemetry step: rows queued here, written in batches by ``run``."""

    def __init__(
        self,
        store: TelemetryStore,
        window: RecentWindow,
        *,
        flush_s: float,
        retention_s: float,
        enabled: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.window = window
        self._flush_s = flush_s
        self._retention_s = retention_s
        self._enabled = enabled
        self._clock = clock
        self._queued: deque[AttemptRow] = deque()
        self._wake = asyncio.Event()
        self.dropped = 0  # rows dropped because the store fell too far behind
        self.last_written: float | None = None  # unix time of the last successful write

    async def finished(self, record: RequestRecord) -> None:
        if not self._enabled():
            return
        rows = rows_of(record)
        self.window.add(rows)
        self._queued.extend(rows)
        overflow = len(self._queued) - MAX_QUEUED
        for _ in range(max(0, overflow)):
            self._queued.popleft()
            self.dropped += 1

    @property
    def store(self) -> TelemetryStore:
        """Where the rows are written (the status page counts them there)."""
        return self._store

    @property
    def pending(self) -> int:
        return len(self._queued)

    async def run(self) -> None:
        """Until cancelled: every ``flush_s``, write what is queued; prune now and then."""
        pruned_at = 0.0
        try:
            while True:
                await asyncio.sleep(self._flush_s)
                await self.flush()
                if self._clock() - pruned_at >= PRUNE_EVERY_S:
                    pruned_at = self._clock()
                    await self._prune()
        finally:
            await self.flush()  # a clean stop loses nothing

    async def flush(self) -> None:
        """Write everything queued now, in batches; a batch the store refuses is kept."""
        while self._queued:
            batch = [self._queued[i] for i in range(min(MAX_BATCH, len(self._queued)))]
            try:
                await asyncio.shield(self._store.write(batch))
            except ServiceError:  # the store is unreachable: the rows wait for it
                log.warning("telemetry: %d rows wait for the store", len(self._queued))
                return
            for _ in batch:
                self._queued.popleft()
            self.last_written = self._clock()

    async def _prune(self) -> None:
        try:
            await self._store.prune(self._clock() - self._retention_s)
        except ServiceError:  # the next round tries again
            log.warning("telemetry: pruning old rows failed", exc_info=True)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile of sorted values (None for none)."""
    if not values:
        return None
    return values[max(0, math.ceil(q * len(values)) - 1)]
