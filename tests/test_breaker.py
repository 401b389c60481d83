"""The circuit breaker on its own, and behind the breakers port, driven by a manual clock."""

from __future__ import annotations

from sincere.backends.memory.breakers import InProcessBreakers
from sincere.llm.breaker import SERVED_REASON, BreakerPolicy, BreakerState, CircuitBreaker
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
    admission = breaker.admit()
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


def test_an_open_circuit_refuses_every_user_request_and_one_probe_decides() -> None:
    breaker, clock = _breaker(consecutive_failures=1, open_s=10)
    breaker.record_failure("x")
    assert breaker.admit().retry_after_s == 10
    assert breaker.claim_probe(5) == (False, None)  # not due yet
    clock.advance(10)
    refused = breaker.admit()  # a due probe is no user request's job
    assert (refused.allowed, refused.retry_after_s) == (False, 0)
    claimed, transition = breaker.claim_probe(5)
    assert claimed
    assert transition is not None
    assert transition.after is BreakerState.HALF_OPEN
    assert breaker.claim_probe(5) == (False, None)  # one probe at a time
    assert not breaker.admit().allowed  # nor a user request while it runs
    closed = breaker.probe_succeeded()
    assert closed is not None
    assert closed.after is BreakerState.CLOSED
    assert breaker.admit().allowed


def test_a_request_admitted_before_the_opening_and_answered_since_closes_it() -> None:
    # Failures come back fast (a 500 in a millisecond), answers slowly (a stream): many
    # requests in flight, a few fast failures open the circuit while the deployment is
    # answering the rest. Such an answer is better evidence than a probe's one token.
    breaker, _ = _breaker(consecutive_failures=2, open_s=10)
    breaker.record_failure("x")
    breaker.record_failure("x")
    assert breaker.state is BreakerState.OPEN
    closed = breaker.record_success()
    assert closed is not None
    assert (closed.before, closed.after) == (BreakerState.OPEN, BreakerState.CLOSED)
    assert closed.reason == SERVED_REASON
    assert breaker.admit().allowed
    assert breaker.record_failure("x") is None  # a fresh streak: one failure is not two


def test_a_circuit_open_for_a_time_it_was_given_keeps_it_whatever_succeeds() -> None:
    # A provider's Retry-After (or a rejected key) set the time: nobody asks before it.
    breaker, clock = _breaker(consecutive_failures=5, open_s=10)
    breaker.record_failure("429", open_for_s=30)
    assert breaker.record_success() is None
    assert breaker.state is BreakerState.OPEN
    assert breaker.admit().retry_after_s == 30
    clock.advance(30)
    claimed, _ = breaker.claim_probe(5)
    assert claimed
    assert breaker.record_success() is not None  # its time is over: evidence counts again


def test_failures_of_requests_admitted_before_the_opening_do_not_reopen_it() -> None:
    breaker, clock = _breaker(consecutive_failures=1, open_s=10)
    breaker.record_failure("x")
    assert breaker.record_failure("late") is None
    clock.advance(10)
    breaker.claim_probe(5)
    assert breaker.record_failure("late") is None
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_failed_probe_reopens_for_twice_as_long_up_to_the_cap() -> None:
    breaker, clock = _breaker(consecutive_failures=1, open_s=10, max_open_s=25)
    breaker.record_failure("x")
    periods = []
    for _ in range(3):
        clock.advance(100)
        assert breaker.claim_probe(5)[0]
        reopened = breaker.probe_failed("still down")
        assert reopened is not None
        assert reopened.reason == "its probe failed: still down"
        periods.append(reopened.next_probe_in_s)
    assert periods == [20, 25, 25]


def test_the_default_schedule_probes_every_2_s_for_a_minute_then_doubles_to_60_s() -> None:
    breaker, clock = _breaker(consecutive_failures=1)
    opened = breaker.record_failure("x")
    assert opened is not None
    periods = [opened.next_probe_in_s]
    elapsed = 0.0
    while elapsed < 200:
        step = breaker.seconds_until_probe()
        assert step is not None
        clock.advance(step)
        elapsed += step
        assert breaker.claim_probe(5)[0]
        reopened = breaker.probe_failed("down")
        assert reopened is not None
        periods.append(reopened.next_probe_in_s)
    assert periods[:30] == [2.0] * 30  # 0 s .. 58 s into the outage
    assert periods[30:36] == [4, 8, 16, 32, 60, 60]


def test_a_probe_abandoned_without_a_verdict_lets_the_next_one_go_at_once() -> None:
    breaker, clock = _breaker(consecutive_failures=1, open_s=1)
    breaker.record_failure("x")
    clock.advance(1)
    assert breaker.claim_probe(5)[0]
    breaker.release()
    claimed, transition = breaker.claim_probe(5)
    assert claimed
    assert transition is None  # still half-open: no news


def test_a_probe_that_never_reports_loses_its_claim_when_its_lease_lapses() -> None:
    breaker, clock = _breaker(consecutive_failures=1, open_s=1)
    breaker.record_failure("x")
    clock.advance(1)
    assert breaker.claim_probe(5)[0]
    clock.advance(4.9)
    assert not breaker.probe_due()
    clock.advance(0.1)
    assert breaker.probe_due()
    assert breaker.claim_probe(5)[0]


def test_forced_opening_uses_the_given_period() -> None:
    breaker, _ = _breaker()
    opened = breaker.record_failure("invalid key", open_for_s=300)
    assert opened is not None
    assert opened.next_probe_in_s == 300


def test_a_retry_after_or_rejected_key_opens_for_exactly_that_long_even_on_a_probe() -> None:
    breaker, clock = _breaker(consecutive_failures=1, open_s=2)
    breaker.record_failure("x")
    clock.advance(2)
    breaker.claim_probe(5)
    reopened = breaker.probe_failed("the provider asked it to wait 120 s", open_for_s=120)
    assert reopened is not None
    assert reopened.next_probe_in_s == 120


def test_transitions_are_dated_by_the_wall_clock_it_is_given() -> None:
    breaker, clock = _breaker(consecutive_failures=1, open_s=10)
    opened = breaker.record_failure("x")
    assert opened is not None
    assert opened.at == clock.time()
    clock.advance(10)
    probe = breaker.claim_probe(5)[1]
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
    refused = await breakers.admit("a")
    assert (refused.allowed, refused.retry_after_s) == (False, 10)
    assert (await breakers.admit("b")).allowed  # another deployment is not affected
    assert breakers.view("a").state is BreakerState.OPEN
    assert breakers.view("b").state is BreakerState.CLOSED
    assert list(breakers.view("a").transitions) == [opened]


async def test_the_port_schedules_and_claims_probes_by_its_clock() -> None:
    clock = ManualClock()
    breakers = _breakers(clock, consecutive_failures=1, open_s=10)
    await breakers.record_failure("a", "boom")
    assert not breakers.view("a").probe_due()
    clock.advance(10)
    assert breakers.view("a").probe_due()
    assert breakers.view("a").state is BreakerState.OPEN  # due, not yet taken
    claimed, moved = await breakers.claim_probe("a", 5)
    assert claimed
    assert moved is not None
    assert moved.after is BreakerState.HALF_OPEN
    assert (await breakers.claim_probe("a", 5)) == (False, None)  # one probe at a time
    await breakers.release("a")  # the probe left without a verdict
    assert (await breakers.claim_probe("a", 5))[0]
    assert await breakers.probe_failed("b", "not half-open") is None
    closed = await breakers.probe_succeeded("a")
    assert closed is not None
    assert closed.after is BreakerState.CLOSED
    assert breakers.view("a").seconds_until_probe() is None
