"""A circuit breaker per deployment.

Our own small breaker rather than purgatory or pybreaker: the cascade needs one per
deployment, every transition as a value it can push to the users who depend on it, and the
schedule (when the next probe is due) to give honest recovery estimates.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sincere.config import Defaults


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    consecutive_failures: int = 5  # Envoy's outlier detection default
    window: int = 20  # sliding window of recent outcomes
    failure_ratio: float = 0.5  # resilience4j's default threshold
    min_calls: int = 10  # no ratio verdict on fewer calls than this
    open_s: float = 30.0  # first open period; doubles per re-open (Envoy), capped
    max_open_s: float = 300.0

    @classmethod
    def of(cls, d: Defaults) -> BreakerPolicy:
        """The policy the settings' ``[defaults]`` ask for."""
        return cls(
            consecutive_failures=d.breaker_consecutive_failures,
            window=d.breaker_window,
            failure_ratio=d.breaker_failure_ratio,
            min_calls=d.breaker_min_calls,
            open_s=d.breaker_open_s,
            max_open_s=d.breaker_max_open_s,
        )


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    deployment: str
    before: BreakerState
    after: BreakerState
    at: float  # unix time
    reason: str
    next_probe_in_s: float | None  # when open: the real schedule of the next probe


@dataclass(frozen=True, slots=True)
class BreakerAdmission:
    allowed: bool
    probe: bool = False  # this request is the half-open probe
    retry_after_s: float | None = None  # when refused: seconds until a probe is due


class CircuitBreaker:
    """Closed: all pass. Open: all skip until the probe is due. Half-open: one probe passes."""

    def __init__(
        self,
        deployment: str,
        policy: BreakerPolicy,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` (monotonic) runs the schedule; ``wall_clock`` dates the transitions."""
        self.deployment = deployment
        self.policy = policy
        self._clock = clock
        self._wall_clock = wall_clock
        self.state = BreakerState.CLOSED
        self._outcomes: deque[bool] = deque(maxlen=policy.window)
        self._consecutive = 0
        self._times_opened = 0
        self._probe_due = 0.0
        self._probing = False
        self.transitions: deque[BreakerTransition] = deque(maxlen=100)

    def seconds_until_probe(self) -> float | None:
        if self.state is BreakerState.CLOSED:
            return None
        return max(0.0, self._probe_due - self._clock())

    def probe_due(self, for_s: float = 0.0) -> bool:
        """Open, with its open period over (for at least ``for_s``): a probe may go now."""
        return self.state is BreakerState.OPEN and self._clock() >= self._probe_due + for_s

    def observed_state(self) -> BreakerState:
        """The state a request arriving now meets: half-open once the open period is over.

        ``state`` stays open until a request (or the idle prober) takes the probe; reports
        of what the deployment can do now (readiness, status) read this instead.
        """
        return BreakerState.HALF_OPEN if self.probe_due() else self.state

    def admit(self) -> tuple[BreakerAdmission, BreakerTransition | None]:
        if self.state is BreakerState.CLOSED:
            return BreakerAdmission(True), None
        now = self._clock()
        if self.state is BreakerState.OPEN and now >= self._probe_due:
            transition = self._move(BreakerState.HALF_OPEN, "its open period is over")
            self._probing = True
            return BreakerAdmission(True, probe=True), transition
        if self.state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return BreakerAdmission(True, probe=True), None
        wait = self._probe_due - now if self.state is BreakerState.OPEN else None
        return BreakerAdmission(False, retry_after_s=None if wait is None else max(0.0, wait)), None

    def release(self) -> None:
        """An admitted probe ended without a verdict (cancelled): let another one through."""
        self._probing = False

    def record_success(self, reason: str = "its probe succeeded") -> BreakerTransition | None:
        self._outcomes.append(True)
        self._consecutive = 0
        self._probing = False
        if self.state is not BreakerState.CLOSED:
            self._times_opened = 0
            self._outcomes.clear()
            return self._move(BreakerState.CLOSED, reason)
        return None

    def record_failure(
        self, reason: str, open_for_s: float | None = None
    ) -> BreakerTransition | None:
        """Count a failure; ``open_for_s`` opens at once (for example, a rejected API key)."""
        self._outcomes.append(False)
        self._consecutive += 1
        self._probing = False
        # Reasons read after "because": sincere's messages say "it stopped using X because …".
        if self.state is BreakerState.HALF_OPEN:
            return self._open(f"its probe failed: {reason}", open_for_s)
        if self.state is BreakerState.OPEN:
            return None
        if open_for_s is not None:
            return self._open(reason, open_for_s)
        if self._consecutive >= self.policy.consecutive_failures:
            return self._open(
                f"{self._consecutive} calls in a row failed (the last: {reason})", None
            )
        failures = self._outcomes.count(False)
        if (
            len(self._outcomes) >= self.policy.min_calls
            and failures / len(self._outcomes) >= self.policy.failure_ratio
        ):
            return self._open(
                f"{failures} of its last {len(self._outcomes)} calls failed (the last: {reason})",
                None,
            )
        return None

    def _open(self, reason: str, open_for_s: float | None) -> BreakerTransition:
        self._times_opened += 1
        if open_for_s is None:
            p = self.policy
            open_for_s = min(p.max_open_s, p.open_s * 2 ** (self._times_opened - 1))
        self._probe_due = self._clock() + open_for_s
        return self._move(BreakerState.OPEN, reason)

    def _move(self, after: BreakerState, reason: str) -> BreakerTransition:
        before, self.state = self.state, after
        transition = BreakerTransition(
            self.deployment, before, after, self._wall_clock(), reason, self.seconds_until_probe()
        )
        self.transitions.append(transition)
        return transition
