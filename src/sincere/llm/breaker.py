"""A circuit breaker per deployment, probed in the shadow of user requests.

Our own small breaker rather than purgatory or pybreaker: the cascade needs one per
deployment, every transition as a value it can push to the users who depend on it, and the
schedule (when the next probe is due) to give honest recovery estimates.

User requests only ever pass a closed circuit. An open one is tested by a separate minimal
request (the prober's, see ``ModelCascade.probe``): no user request is a probe, so none
waits on one. The probe claims the circuit (half-open) for a lease; its success closes
the circuit, its failure re-opens it for the next step of the schedule.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sincere.config import Defaults

# Why a circuit closed on a user request's success (one admitted before it opened).
SERVED_REASON = "a request it was already serving succeeded"


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"  # a probe is testing the deployment


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    consecutive_failures: int = 5  # Envoy's outlier detection default
    window: int = 20  # sliding window of recent outcomes
    failure_ratio: float = 0.5  # resilience4j's default threshold
    min_calls: int = 10  # no ratio verdict on fewer calls than this
    open_s: float = 2.0  # between probes for the first fast_probe_for_s of an outage,
    fast_probe_for_s: float = 60.0  # then doubling per failed probe (Envoy), capped
    max_open_s: float = 60.0

    @classmethod
    def of(cls, d: Defaults) -> BreakerPolicy:
        """The policy the settings' ``[defaults]`` ask for."""
        return cls(
            consecutive_failures=d.breaker_consecutive_failures,
            window=d.breaker_window,
            failure_ratio=d.breaker_failure_ratio,
            min_calls=d.breaker_min_calls,
            open_s=d.breaker_open_s,
            fast_probe_for_s=d.breaker_fast_probe_for_s,
            max_open_s=d.breaker_max_open_s,
        )

    def open_period(self, outage_s: float, slow_opens: int) -> float:
        """How long a (re-)opening lasts ``outage_s`` into an outage, after ``slow_opens``
        re-openings past the fast phase (this one included)."""
        if outage_s < self.fast_probe_for_s or slow_opens == 0:
            return min(self.open_s, self.max_open_s)
        return min(self.max_open_s, self.open_s * 2.0**slow_opens)


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
    retry_after_s: float | None = None  # when refused: seconds until a probe may close it


class CircuitBreaker:
    """Closed: all pass. Open: none pass; a probe is due on schedule. Half-open: a probe
    holds the circuit (for its lease) and no user request passes either."""

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
        self._outage_since = 0.0
        self._slow_opens = 0
        self._probe_due = 0.0
        self._lease_until = 0.0  # half-open: when an unfinished probe's claim lapses
        self._forced = False  # open for a time it was given (Retry-After, a rejected key)
        self.transitions: deque[BreakerTransition] = deque(maxlen=100)

    def seconds_until_probe(self) -> float | None:
        """None when closed; 0 while a probe is due or running."""
        if self.state is BreakerState.CLOSED:
            return None
        if self.state is BreakerState.HALF_OPEN:
            return 0.0
        return max(0.0, self._probe_due - self._clock())

    def probe_due(self) -> bool:
        """A probe may be claimed now: open with its period over, or a probe's lease lapsed."""
        now = self._clock()
        if self.state is BreakerState.OPEN:
            return now >= self._probe_due
        return self.state is BreakerState.HALF_OPEN and now >= self._lease_until

    def admit(self) -> BreakerAdmission:
        """A user request: only a closed circuit lets it through."""
        if self.state is BreakerState.CLOSED:
            return BreakerAdmission(True)
        return BreakerAdmission(False, retry_after_s=self.seconds_until_probe())

    def claim_probe(self, lease_s: float) -> tuple[bool, BreakerTransition | None]:
        """Take the due probe for ``lease_s``: whether it was taken, and the move to half-open."""
        if not self.probe_due():
            return False, None
        self._lease_until = self._clock() + lease_s
        if self.state is BreakerState.HALF_OPEN:
            return True, None  # an earlier probe's lease lapsed: this one takes over
        return True, self._move(BreakerState.HALF_OPEN, "its next probe is due")

    def resume_open(self, open_for_s: float) -> None:
        """Start open, with the next probe due in ``open_for_s``: the state this breaker
        takes over from the fleet's (no transition: nothing changed for the deployment)."""
        now = self._clock()
        self.state, self._outage_since, self._slow_opens = BreakerState.OPEN, now, 0
        self._probe_due, self._forced = now + open_for_s, False

    def release(self) -> None:
        """A claimed probe ended without a verdict (cancelled): the next one may go now."""
        self._lease_until = 0.0

    def record_success(self) -> BreakerTransition | None:
        """A user request's success. While closed it counts; after an opening (a request
        admitted before it, answered since) it is better evidence than a probe's one
        token and closes the circuit, unless the circuit is open for a time it was given
        (a provider's Retry-After, a rejected key) that has not run out: that time is kept."""
        if self.state is BreakerState.CLOSED:
            self._outcomes.append(True)
            self._consecutive = 0
            return None
        if self._forced and self._clock() < self._probe_due:
            return None
        return self.probe_succeeded(SERVED_REASON)

    def record_failure(
        self, reason: str, open_for_s: float | None = None
    ) -> BreakerTransition | None:
        """A user request's failure; ``open_for_s`` opens at once (a rejected API key, a
        provider's Retry-After). Requests admitted before an opening do not count after it."""
        if self.state is not BreakerState.CLOSED:
            return None
        self._outcomes.append(False)
        self._consecutive += 1
        # Reasons read after "because": sincere's messages say "it stopped using X because …".
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

    def probe_succeeded(self, reason: str = "its probe succeeded") -> BreakerTransition | None:
        if self.state is BreakerState.CLOSED:
            return None
        self._outcomes.clear()
        self._consecutive = 0
        return self._move(BreakerState.CLOSED, reason)

    def probe_failed(
        self, reason: str, open_for_s: float | None = None
    ) -> BreakerTransition | None:
        """Re-open for the schedule's next step (or exactly ``open_for_s``)."""
        if self.state is not BreakerState.HALF_OPEN:
            return None  # another probe decided meanwhile
        return self._open(f"its probe failed: {reason}", open_for_s)

    def _open(self, reason: str, open_for_s: float | None) -> BreakerTransition:
        now = self._clock()
        if self.state is BreakerState.CLOSED:
            self._outage_since, self._slow_opens = now, 0
        elif now - self._outage_since >= self.policy.fast_probe_for_s:
            self._slow_opens += 1
        period = self.policy.open_period(now - self._outage_since, self._slow_opens)
        self._probe_due = now + (period if open_for_s is None else open_for_s)
        self._forced = open_for_s is not None
        return self._move(BreakerState.OPEN, reason)

    def _move(self, after: BreakerState, reason: str) -> BreakerTransition:
        before, self.state = self.state, after
        transition = BreakerTransition(
            self.deployment, before, after, self._wall_clock(), reason, self.seconds_until_probe()
        )
        self.transitions.append(transition)
        return transition
