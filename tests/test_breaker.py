"""The circuit breaker on its own, and behind the breakers port, driven by a manual clock."""

from __future__ import annotations

from sincere.backends.memory.breakers import InProcessBreakers
from sincere.llm.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from tests.clocks import ManualClock


def _breaker(**policy: float) -> tuple[CircuitBreaker, ManualClock]:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "d",
        BreakerPolicy(**policy),  # type: ignore[arg-type]
        clock=clock.monotonic,
        wall_clock=clock.time,
    )
    return breaker, clock


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
    clock.advance(10)
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
        clock.advance(100)
        breaker.admit()
        reopened = breaker.record_failure("still down")
        assert reopened is not None
        assert reopened.reason == "its probe failed: still down"
        periods.append(reopened.next_probe_in_s)
    assert periods == [20, 25, 25]


def test_a_probe_abandoned_without_a_verdict_frees_the_slot() -> None:
    breaker, clock = _breaker(consecutive_failures=1, open_s=1)
    breaker.record_failure("x")
    clock.advance(1)
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
    clock.advance(10)
    assert breaker.state is BreakerState.OPEN  # nobody has taken the probe yet
    assert breaker.observed_state() is BreakerState.HALF_OPEN  # but a request would be let in
    assert breaker.probe_due()
    assert not breaker.probe_due(1)  # due for a second: not yet
    clock.advance(1)
    assert breaker.probe_due(1)
    assert breaker.admit()[0].probe
    assert not breaker.probe_due()  # taken


def test_transitions_are_dated_by_the_wall_clock_it_is_given() -> None:
    breaker, clock = _breaker(consecutive_failures=1, open_s=10)
    opened = breaker.record_failure("x")
    assert opened is not None
    assert opened.at == clock.time()
    clock.advance(10)
    probe = breaker.admit()[1]
    assert probe is not None
    assert probe.at == opened.at + 10


# Behind the port: the in-process implementation of ``Breakers``


def _breakers(clock: ManualClock, **policy: float) -> InProcessBreakers:
    return InProcessBreakers(
        ["a", "b"],
        BreakerPolicy(**policy),  # type: ignore[arg-type]
        clock=clock.monotonic,
        wall_clock=clock.time,
    )


async def test_the_port_keeps_one_breaker_per_deployment() -> None:
    clock = ManualClock()
    breakers = _breakers(clock, consecutive_failures=1, open_s=10)
    assert list(breakers.names()) == ["a", "b"]
    opened = await breakers.record_failure("a", "boom")
    assert opened is not None
    assert (opened.deployment, opened.after) == ("a", BreakerState.OPEN)
    refused, _ = await breakers.admit("a")
    assert (refused.allowed, refused.retry_after_s) == (False, 10)
    assert (await breakers.admit("b"))[0].allowed  # another deployment is not affected
    assert breakers.view("a").state is BreakerState.OPEN
    assert breakers.view("b").state is BreakerState.CLOSED
    assert list(breakers.view("a").transitions) == [opened]


async def test_the_port_schedules_probes_by_its_clock() -> None:
    clock = ManualClock()
    breakers = _breakers(clock, consecutive_failures=1, open_s=10)
    await breakers.record_failure("a", "boom")
    assert not await breakers.probe_due("a")
    clock.advance(10)
    assert await breakers.probe_due("a")
    assert breakers.view("a").observed_state() is BreakerState.HALF_OPEN
    assert not await breakers.probe_due("a", 1)
    probe, moved = await breakers.admit("a")
    assert probe.probe
    assert moved is not None
    assert moved.after is BreakerState.HALF_OPEN
    assert not (await breakers.admit("a"))[0].allowed  # one probe at a time
    await breakers.release("a")  # the probe left without a verdict
    assert (await breakers.admit("a"))[0].probe
    closed = await breakers.record_success("a")
    assert closed is not None
    assert closed.after is BreakerState.CLOSED
    assert breakers.view("a").seconds_until_probe() is None
