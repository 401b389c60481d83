"""Admission queues: a deployment at its capacity makes requests wait, in a fair order,
and tells each one its real place and a wait estimated from measured service times.

Order (the next free slot goes to the first of these):
1. the best tier: enterprise, then standard, then free; a request ranks one tier higher
   for every ``queue_aging_s`` it has waited, so no tier waits for ever (aging);
2. between users of one tier, the one that has received the least service here: a
   virtual counter of slot-seconds, as the Virtual Token Counter of OSDI 2024 counts
   tokens (charged the mean service time when a request is let through, corrected by
   what it really held when it ends; a user who arrives is lifted to the least counter
   of those waiting, so idle time is not banked); on a tie, the user holding fewer
   slots now;
3. for one user, first come, first served.

A position is the place the request has in that order now (1: next); it changes when a
request arrives, leaves or is let through, and each change is announced. One queue per
deployment with a ``max_concurrency`` (the embedded model: 1), per process.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from sincere.config import Settings
from sincere.context import RequestContext, Tier
from sincere.errors import AtCapacity, QueueTimeout
from sincere.events import EventType
from sincere.tiers.service_times import (
    UNKNOWN,
    Calibration,
    ServiceTimes,
    WaitEstimate,
)

TIER_RANK = {Tier.ENTERPRISE: 0, Tier.STANDARD: 1, Tier.FREE: 2}

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """A queued request's place, as its user is told (and a streaming client sees)."""

    deployment: str
    tier: str
    position: int  # 1: next; 0 once let through
    ahead: int  # requests waiting ahead of it
    queued: int  # requests waiting in this deployment's queue, itself included
    serving: int  # requests holding a slot now
    capacity: int
    waited_s: float
    estimate: WaitEstimate  # the wait still ahead, from measured service times
    dequeued: bool = False

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "deployment": self.deployment,
            "tier": self.tier,
            "waited_ms": round(self.waited_s * 1000),
        }
        if not self.dequeued:
            data |= {
                "position": self.position,
                "ahead": self.ahead,
                "queued": self.queued,
                "serving": self.serving,
                "capacity": self.capacity,
                **self.estimate.to_data(),
            }
        return data

    def announce(self, ctx: RequestContext) -> None:
        """Tell the request's user its place, or the wait it had once let through."""
        if self.dequeued:
            message = f"Let through to {self.deployment} after {self.waited_s:.2f} s in its queue"
            ctx.post(EventType.REQUEST_DEQUEUED, message, service=self.deployment, **self.to_data())
            return
        message = (
            f"Waiting for {self.deployment}: position {self.position} "
            f"({self.serving} of {self.capacity} slots busy)"
        )
        ctx.post(EventType.REQUEST_QUEUED, message, service=self.deployment, **self.to_data())

    def comment(self) -> bytes:
        """The status as an SSE comment line (clients that do not know it ignore it)."""
        fields = " ".join(f"{k}={_plain(v)}" for k, v in self.to_data().items())
        kind = "dequeued" if self.dequeued else "queued"
        return f": sincere {kind} {fields}\n\n".encode()


def _plain(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(eq=False, slots=True)
class _Waiter:
    seq: int
    user: str  # tier and user: the party that fair shares are counted for
    tier: Tier
    enqueued: float
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    granted_at: float | None = None
    position: int = 0
    queued: bool = False  # it had to wait (not let through on arrival)
    charged: float = 0.0  # the service its user was charged when it was let through
    predicted_s: float | None = None  # the wait the queue first predicted for it


class DeploymentQueue:
    """One deployment's slots, its waiting requests and its measured service times."""

    def __init__(self, name: str, capacity: int, aging_s: float, clock: Clock) -> None:
        self.name = name
        self.capacity = capacity
        self.times = ServiceTimes()
        self.calibration = Calibration()
        self._aging_s = aging_s
        self._clock = clock
        self._seq = itertools.count()
        self._waiting: dict[int, _Waiter] = {}  # by arrival
        self._serving: dict[int, _Waiter] = {}
        self._counters: dict[str, float] = {}  # slot-seconds served, for users with work here
        self._work: dict[str, int] = defaultdict(int)  # their requests waiting or served

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def serving(self) -> int:
        return len(self._serving)

    def full(self) -> bool:
        return len(self._serving) >= self.capacity or bool(self._waiting)

    def enter(self, user_id: str, tier: Tier) -> _Waiter:
        """A request arrives: a slot at once if one is free and nobody waits, else a place."""
        user = f"{tier}:{user_id}"
        waiter = _Waiter(next(self._seq), user, tier, self._clock())
        if user not in self._counters:
            # Lifted to the least counter of those waiting in its tier: no banked credit.
            peers = [self._counters[w.user] for w in self._waiting.values() if w.tier is tier]
            self._counters[user] = min(peers, default=0.0)
        self._work[user] += 1
        if not self.full():
            self._grant(waiter)
        else:
            waiter.queued = True
            self._waiting[waiter.seq] = waiter
            self._reorder()
        return waiter

    def leave(self, waiter: _Waiter, *, served: bool) -> None:
        """The request is done: its slot goes to the next in order, or its place is given
        up. Only a slot that ``served`` an attempt adds to the measured service times."""
        if waiter.granted_at is not None:
            if self._serving.pop(waiter.seq, None) is None:
                return
            held = self._clock() - waiter.granted_at
            if served:
                self.times.add(held)
            self._counters[waiter.user] += held - waiter.charged  # the service it really had
        elif self._waiting.pop(waiter.seq, None) is None:
            return
        self._work[waiter.user] -= 1
        if not self._work[waiter.user]:
            del self._work[waiter.user]
            del self._counters[waiter.user]
        while len(self._serving) < self.capacity and self._waiting:
            self._grant(self.order()[0])
        self._reorder()

    def order(self) -> list[_Waiter]:
        """The waiting requests in the order they will be let through, as things stand:
        each turn taken by the best tier (aged), then the least-served user (on a tie, the
        one holding fewer slots now), then the earliest request; a user's counter grows by
        the mean service time per turn it is given."""
        now = self._clock()
        lines: dict[str, deque[_Waiter]] = defaultdict(deque)
        for waiter in self._waiting.values():  # in arrival order
            lines[waiter.user].append(waiter)
        turn = self.times.mean() or 1.0
        counters = {user: self._counters[user] for user in lines}
        held = Counter(w.user for w in self._serving.values())

        def key(user: str) -> tuple[int, float, int, int, str]:
            head = lines[user][0]
            return (self._rank(head, now), counters[user], held[user], head.seq, user)

        heap = [key(user) for user in lines]
        heapq.heapify(heap)
        order: list[_Waiter] = []
        while heap:
            user = heapq.heappop(heap)[-1]
            line = lines[user]
            order.append(line.popleft())
            counters[user] += turn
            held[user] += 1
            if line:
                heapq.heappush(heap, key(user))
        return order

    def status(self, waiter: _Waiter) -> QueueStatus:
        now = self._clock()
        if waiter.granted_at is not None:
            waited = waiter.granted_at - waiter.enqueued
            return QueueStatus(
                deployment=self.name,
                tier=str(waiter.tier),
                position=0,
                ahead=0,
                queued=self.queued,
                serving=self.serving,
                capacity=self.capacity,
                waited_s=waited,
                estimate=UNKNOWN,
                dequeued=True,
            )
        running = [now - w.granted_at for w in self._serving.values() if w.granted_at is not None]
        estimate = self.times.wait(waiter.position, running, self.capacity)
        if waiter.predicted_s is None:
            waiter.predicted_s = estimate.queue_p50_s
        return QueueStatus(
            deployment=self.name,
            tier=str(waiter.tier),
            position=waiter.position,
            ahead=waiter.position - 1,
            queued=self.queued,
            serving=self.serving,
            capacity=self.capacity,
            waited_s=now - waiter.enqueued,
            estimate=self.calibration.apply(waiter.user, str(waiter.tier), estimate),
        )

    def next_free(self) -> WaitEstimate:
        """When a slot should free, from measured service times (for a refusal's Retry-After)."""
        now = self._clock()
        running = [now - w.granted_at for w in self._serving.values() if w.granted_at is not None]
        return self.times.wait(1 + len(self._waiting), running, self.capacity)

    def _rank(self, waiter: _Waiter, now: float) -> int:
        aged = int((now - waiter.enqueued) // self._aging_s)
        return max(0, TIER_RANK[waiter.tier] - aged)

    def _grant(self, waiter: _Waiter) -> None:
        self._waiting.pop(waiter.seq, None)
        now = waiter.granted_at = self._clock()
        waiter.position = 0
        # Charged now, as the Virtual Token Counter charges a request when it is
        # dispatched, and corrected when it ends: a user's slots in use count already.
        waiter.charged = self.times.mean() or 0.0
        self._counters[waiter.user] += waiter.charged
        if waiter.predicted_s is not None:
            tier = str(waiter.tier)
            self.calibration.record(waiter.user, tier, waiter.predicted_s, now - waiter.enqueued)
        self._serving[waiter.seq] = waiter
        waiter.changed.set()

    def _reorder(self) -> None:
        for position, waiter in enumerate(self.order(), start=1):
            if waiter.position != position:
                waiter.position = position
                waiter.changed.set()


class QueueView(Protocol):
    """What /metrics shows of one deployment's queue."""

    @property
    def queued(self) -> int: ...

    @property
    def serving(self) -> int: ...

    capacity: int


def queue_timeout(deployment: str, capacity: int, status: QueueStatus) -> QueueTimeout:
    """The 503 of a request whose wait ran out: where it was, how long it waited, and a
    Retry-After only from measured service times."""
    error = QueueTimeout(
        f"{deployment} stayed at capacity ({capacity} at once) for the "
        f"{status.waited_s:.1f} s this request could wait; it was at position "
        f"{status.position}",
        retry_after=status.estimate.p50_s,
        suggestions=["Retry after the Retry-After interval, when one is given."],
    )
    error.members.update(
        queue_position=status.position,
        queue_ahead=status.ahead,
        queue_waited_ms=round(status.waited_s * 1000),
        **status.estimate.to_data(),
    )
    return error


def at_capacity(deployment: str, capacity: int, wait: WaitEstimate) -> AtCapacity:
    """The 429 of a request that finds a deployment full while queueing is turned off."""
    error = AtCapacity(
        f"{deployment} serves {capacity} request(s) at once and all are busy; queueing "
        "is turned off",
        retry_after=wait.p50_s,
        suggestions=["Retry after the Retry-After interval, when one is given."],
    )
    error.members.update(wait.to_data())
    return error


class Slot:
    """One attempt's hold on a deployment: ``async with`` it, let ``waiting()`` announce
    its places until it is let through, then run the attempt. Leaving the block frees the
    slot (or the place in the queue, for a request that stops waiting)."""

    def __init__(
        self,
        ctx: RequestContext,
        queue: DeploymentQueue | None,
        waiter: _Waiter | None,
        max_wait_s: float,
        clock: Clock,
    ) -> None:
        self._ctx = ctx
        self._queue = queue
        self._waiter = waiter
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._served = False  # let through: what follows is an attempt's service time
        self.waited_s = 0.0

    async def __aenter__(self) -> Slot:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._queue is not None and self._waiter is not None:
            self._queue.leave(self._waiter, served=self._served)

    async def waiting(self, budget_s: float | None = None) -> AsyncIterator[QueueStatus]:
        """Each new place while the request waits, then its dequeued status; nothing for a
        request let through at once. Raises ``QueueTimeout`` when its wait runs out: after
        ``budget_s`` (default: its tier's ``max_queue_wait_s``) or at its deadline."""
        queue, waiter, ctx = self._queue, self._waiter, self._ctx
        if queue is None or waiter is None or not waiter.queued:
            self._served = True
            return
        budget = self._max_wait_s if budget_s is None else budget_s
        deadline = waiter.enqueued + max(0.0, min(budget, ctx.remaining()))
        announced = 0
        while waiter.granted_at is None:
            waiter.changed.clear()
            if waiter.position != announced:
                announced = waiter.position
                status = queue.status(waiter)
                status.announce(ctx)
                yield status
            left = deadline - self._clock()
            if left <= 0:
                raise self._timeout(queue, waiter)
            try:
                await asyncio.wait_for(waiter.changed.wait(), left)
            except TimeoutError:
                continue  # the loop checks the deadline (and a grant that came with it)
        status = queue.status(waiter)
        self.waited_s = status.waited_s
        self._served = True
        status.announce(ctx)
        yield status

    def _timeout(self, queue: DeploymentQueue, waiter: _Waiter) -> QueueTimeout:
        status = queue.status(waiter)
        self.waited_s = status.waited_s
        return queue_timeout(queue.name, queue.capacity, status)


class AdmissionQueues:
    """The admission queue of every deployment with a capacity, in this process."""

    def __init__(
        self,
        settings: Settings,
        queueing: Callable[[], bool] = lambda: True,
        clock: Clock = time.monotonic,
    ) -> None:
        aging = settings.defaults.queue_aging_s
        self._queues = {
            d.name: DeploymentQueue(d.name, d.capacity, aging, clock)
            for d in settings.deployments
            if d.capacity is not None
        }
        self._max_wait = {name: t.max_queue_wait_s for name, t in settings.tiers.items()}
        self._queueing = queueing
        self._clock = clock

    @property
    def queues(self) -> Mapping[str, DeploymentQueue]:
        return self._queues

    async def enter(self, ctx: RequestContext, deployment: str) -> Slot:
        """``slot``, for the port (``ports.AdmissionQueue``)."""
        return self.slot(ctx, deployment)

    async def aclose(self) -> None:
        """Nothing runs in the background here."""

    def slot(self, ctx: RequestContext, deployment: str) -> Slot:
        """A hold on ``deployment`` for one attempt; raises ``AtCapacity`` when it is full
        and queueing is turned off."""
        queue = self._queues.get(deployment)
        if queue is None:
            return Slot(ctx, None, None, 0.0, self._clock)
        if queue.full() and not self._queueing():
            raise at_capacity(deployment, queue.capacity, queue.next_free())
        tier = ctx.tier
        waiter = queue.enter(ctx.user_id, tier)
        return Slot(ctx, queue, waiter, self._max_wait[str(tier)], self._clock)
