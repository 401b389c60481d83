"""The circuit breaker on its own, driven by an explicit clock."""

from __future__ import annotations

from sincere.llm.breaker import BreakerPolicy, BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(**policy: float) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker("d", BreakerPolicy(**policy), clock=clock), clock  # type: ignore[arg-type]


def test_consecutive_failures_open_it_and_the_schedule_is_reported() -> None:
    breaker, _ = _breaker(consecutive_failures=3, open_s=30)
    assert breaker.record_failure("x") is None
    assert breaker.record_failure("x") is None
    opened = breaker.record_failure("boom")
    assert opened is not None
    assert (opened.before, opened.after) == (BreakerState.CLOSED, BreakerState.OPEN)
    assert opened.next_probe_in_s == 30
    assert opened.reason == "3 calls in a row failed (the last: boom)"
    admission, _ = breaker.admit()
    assert not admission.allowed
    assert admission.retry_after_s == 30


def test_a_failure_ratio_over_the_window_opens_it_even_without_a_streak() -> None:
    breaker, _ = _breaker(consecutive_failures=100, window=10, min_calls=10, failure_ratio=0.5)
    transitions = []
    for i in range(10):
        if i % 2:
            transitions.append(breaker.record_failure("x"))
        else:
            transitions.append(breaker.record_success())
    assert breaker.state is BreakerState.OPEN
    opened = [t for t in transitions if t is not None]
    assert len(opened) == 1
    assert opened[0].reason == "5 of its last 10 calls failed (the last: x)"


def test_success_resets_the_streak() -> None:
    breaker, _ = _breaker(consecutive_failures=2)
    breaker.record_failure("x")
    breaker.record_success()
    assert breaker.record_failure("x") is None
    assert breaker.state is BreakerState.CLOSED


def test_half_open_lets_exactly_one_probe_through_and_success_closes() -> None:
    breaker, clock = _breaker(consecutive_failures=1, open_s=10)
    breaker.record_failure("x")
    clock.now += 10
    probe, transition = breaker.admit()
    assert probe.allowed
    assert probe.probe
    assert transition is not None
    assert transition.after is BreakerState.HALF_OPEN
    other, _ = breaker.admit()
    assert not other.allowed  # one probe at a time
    closed = breaker.record_success()
    assert closed is not None
    assert closed.after is BreakerState.CLOSED
    assert breaker.admit()[0].allowed


def test_a_failed_probe_reopens_for_twice_as_long_up_to_the_cap() -> None:
    breaker, clock = _breaker(consecutive_failures=1, open_s=10, max_open_s=25)
    breaker.record_failure("x")
    periods = []
    for _ in range(3):
        clock.now += 100
        breaker.admit()
        reopened = breaker.record_failure("still down")
        assert reopened is not None
        assert reopened.reason == "its probe failed: still down"
        periods.append(reopened.next_probe_in_s)
    assert periods == [20, 25, 25]


def test_a_probe_abandoned_without_a_verdict_frees_the_slot() -> None:
    breaker, clock = _breaker(consecutive_failures=1, open_s=1)
    breaker.record_failure("x")
    clock.now += 1
    assert breaker.admit()[0].probe
    breaker.release()
    assert breaker.admit()[0].probe


def test_forced_opening_uses_the_given_period() -> None:
    breaker, _ = _breaker()
    opened = breaker.record_failure("invalid key", open_for_s=300)
    assert opened is not None
    assert opened.next_probe_in_s == 300


def test_an_open_period_that_is_over_is_observed_as_half_open_before_any_request() -> None:
    breaker, clock = _breaker(consecutive_failures=1, open_s=10)
    breaker.record_failure("x")
    assert breaker.observed_state() is BreakerState.OPEN
    assert not breaker.probe_due()
    clock.now += 10
    assert breaker.state is BreakerState.OPEN  # nobody has taken the probe yet
    assert breaker.observed_state() is BreakerState.HALF_OPEN  # but a request would be let in
    assert breaker.probe_due()
    assert not breaker.probe_due(1)  # due for a second: not yet
    clock.now += 1
    assert breaker.probe_due(1)
    assert breaker.admit()[0].probe
    assert not breaker.probe_due()  # taken
