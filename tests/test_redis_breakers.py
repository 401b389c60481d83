"""Breakers shared by a fleet on the machine's real Redis: two ``RedisBreakers`` on two
clients play two processes; every test has its own key prefix."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from sincere.backends.redis import connect
from sincere.backends.redis.breakers import CONFIRM_S, SYNC_S, RedisBreakers
from sincere.backends.redis.trips import RoundTrips
from sincere.config import load_settings
from sincere.errors import ServiceError
from sincere.health import HealthState
from sincere.identity import Caller
from sincere.llm.breaker import SERVED_REASON, BreakerPolicy, BreakerState, BreakerTransition
from sincere.llm.request import ChatRequest
from sincere.runtime import build_runtime
from tests.clocks import ManualClock
from tests.faults import Fault, FaultServer
from tests.live import fallback_config
from tests.redis_cut import RedisCut

REDIS_URL = "redis://127.0.0.1:6379/0"
HANG_GUARD_S = 10.0  # only against a hang: no test waits this long when it passes
POLICY = BreakerPolicy(consecutive_failures=2, open_s=10)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"test:{uuid.uuid4().hex}:"
    yield prefix
    client = connect(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def cut() -> AsyncIterator[RedisCut]:
    """A proxy to the real Redis that a test can silence or cut."""
    proxy = await RedisCut().start()
    yield proxy
    await proxy.aclose()


@contextlib.asynccontextmanager
async def _process(
    prefix: str, clock: ManualClock | None = None, url: str = REDIS_URL
) -> AsyncIterator[RedisBreakers]:
    """One process's breakers, on its own Redis client."""
    client: Redis = connect(url)
    wall = clock.time if clock is not None else time.time
    breakers = RedisBreakers(client, ["a", "b"], POLICY, prefix=prefix, wall_clock=wall)
    try:
        yield breakers
    finally:
        await breakers.aclose()
        await client.aclose()


async def _until(condition: object, what: str, within_s: float = 10.0) -> float:
    """Seconds until ``condition()`` holds (polled); fails after ``within_s``."""
    assert callable(condition)
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within_s:
            pytest.fail(f"{what}: not within {within_s:g} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_a_circuit_opened_by_one_process_refuses_in_the_other_within_a_second(
    prefix: str,
) -> None:
    async with _process(prefix) as a, _process(prefix) as b:
        assert (await b.admit("a")).allowed
        await a.record_failure("a", "boom")
        opened = await a.record_failure("a", "boom")
        assert opened is not None
        assert opened.reason == "2 calls in a row failed (the last: boom)"
        assert opened.next_probe_in_s == pytest.approx(10, abs=0.1)
        assert not (await a.admit("a")).allowed  # at once where it opened
        seen_after = await _until(lambda: b.view("a").state is BreakerState.OPEN, "B sees it")
        refused = await b.admit("a")
        assert not refused.allowed
        assert refused.retry_after_s is not None
        assert 9 < refused.retry_after_s <= 10  # the fleet's schedule, not B's own
        assert (await b.admit("b")).allowed  # only that deployment
    assert seen_after <= 1.0  # the requirement (the mirror is refreshed every SYNC_S)
    assert SYNC_S <= 0.5


async def test_one_probe_per_due_time_for_the_fleet_and_its_success_closes_everywhere(
    prefix: str,
) -> None:
    clock = ManualClock(unix=time.time())  # both processes on one wall clock, moved by hand
    heard: list[BreakerTransition] = []

    async def hear(transition: BreakerTransition, made_here: bool) -> None:
        heard.append(transition)

    async with _process(prefix, clock) as a, _process(prefix, clock) as b:
        a.listen(hear)
        await b.record_failure("a", "boom")
        await b.record_failure("a", "boom")
        await _until(lambda: a.view("a").state is BreakerState.OPEN, "A sees it open")
        assert await a.claim_probe("a", 5) == (False, None)  # not due
        clock.advance(10)
        claims = await asyncio.gather(
            *(p.claim_probe("a", 5) for p in (a, b, a, b)),
        )
        assert sorted(claimed for claimed, _ in claims) == [False, False, False, True]
        moved = next(t for claimed, t in claims if claimed)
        assert moved is not None
        assert moved.after is BreakerState.HALF_OPEN
        winner = (a, b, a, b)[[claimed for claimed, _ in claims].index(True)]
        closed = await winner.probe_succeeded("a")
        assert closed is not None
        assert closed.after is BreakerState.CLOSED
        other = b if winner is a else a
        await _until(lambda: other.view("a").state is BreakerState.CLOSED, "closed everywhere")
        assert (await other.admit("a")).allowed
        assert await other.probe_succeeded("a") is None  # a stale verdict changes nothing
    # A heard what B did (its own calls return theirs): opened by B, then the rest.
    assert heard[0].after is BreakerState.OPEN
    assert heard[-1].after is BreakerState.CLOSED or winner is a


async def test_a_failed_probe_reopens_on_the_schedule_and_a_lapsed_claim_is_taken_over(
    prefix: str,
) -> None:
    clock = ManualClock(unix=time.time())
    async with _process(prefix, clock) as a, _process(prefix, clock) as b:
        await a.record_failure("a", "x", open_for_s=3)  # forced: exactly that long
        assert a.view("a").seconds_until_probe() == pytest.approx(3)
        clock.advance(3)
        assert (await a.claim_probe("a", 5))[0]
        clock.advance(5)  # A never reported: its lease lapsed
        assert (await b.claim_probe("a", 5)) == (True, None)  # still half-open: no news
        reopened = await b.probe_failed("a", "still down")
        assert reopened is not None
        assert reopened.reason == "its probe failed: still down"
        assert reopened.next_probe_in_s == pytest.approx(10)  # POLICY.open_s, fast phase
        assert await a.probe_failed("a", "late") is None  # A's stale verdict is ignored


async def test_a_restarted_process_sees_the_fleets_state(prefix: str) -> None:
    async with _process(prefix) as a:
        await a.record_failure("a", "x", open_for_s=60)
    async with _process(prefix) as restarted:
        await restarted.admit("b")  # any call starts its mirror
        await _until(lambda: restarted.view("a").state is BreakerState.OPEN, "the state")
        assert not (await restarted.admit("a")).allowed
        [opened] = restarted.view("a").transitions
        assert opened.reason == "x"


class _Proxy:
    """A TCP proxy to Redis that can be cut and restored: Redis down for one client only
    (the machine's Redis is shared with other tests and must not be paused)."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._writers |= {writer, up_writer}

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))


async def test_with_redis_down_each_process_runs_its_own_breakers_then_rejoins_the_fleet(
    prefix: str,
) -> None:
    proxy = _Proxy()
    await proxy.up()
    url = f"redis://127.0.0.1:{proxy.port}/0"
    async with _process(prefix, url=url) as cut_off, _process(prefix) as other:
        assert (await cut_off.admit("a")).allowed
        await proxy.down()
        started = time.monotonic()
        await cut_off.record_failure("a", "boom")  # Redis does not answer: no error here
        opened = await cut_off.record_failure("a", "boom")
        waited = time.monotonic() - started
        assert cut_off.redis_down
        assert opened is not None  # its own breaker opened it
        assert not (await cut_off.admit("a")).allowed
        assert cut_off.view("a").state is BreakerState.OPEN
        assert (await other.admit("a")).allowed  # the fleet never heard of it
        await other.record_failure("b", "x", open_for_s=60)  # the fleet moves on meanwhile

        await proxy.up()  # Redis is back: the fleet's state replaces the local one
        await _until(lambda: not cut_off.redis_down, "rejoining the fleet")
        assert cut_off.view("a").state is BreakerState.CLOSED
        assert cut_off.view("b").state is BreakerState.OPEN
        assert (await cut_off.admit("a")).allowed
    # Only the first call waited for Redis (the client's timeouts); the next one did not.
    assert waited < 2.0


async def test_successes_counted_in_a_process_reach_the_fleet_before_its_next_failure(
    prefix: str,
) -> None:
    # Successes are written in bulk, not one round trip per answer: a failure after them
    # must still count as the first of a new streak, here and across processes.
    async with _process(prefix) as a, _process(prefix) as b:
        await a.record_failure("a", "boom")  # a streak of one (two open it)
        for _ in range(3):
            await a.record_success("a")
        assert await a.record_failure("a", "boom") is None  # the successes ended the streak
        for _ in range(5):
            await b.record_success("a")
        await b.sync()  # B's refresh writes what B counted
        redis = connect(REDIS_URL)
        outcomes = await redis.hget(f"{prefix}breaker:a", "outcomes")
        await redis.aclose()
        assert outcomes == b"0111011111"
        assert await a.record_failure("a", "boom") is None  # B's successes count too
        assert (await a.record_failure("a", "boom")) is not None  # two in a row: open


async def test_a_transition_is_recorded_once_in_the_fleets_history(
    prefix: str, tmp_path: Path, fault_server: FaultServer
) -> None:
    # Every process follows the fleet's breakers; only the one that moved a circuit
    # writes the transition to the shared history (else one row per process).
    extra = f'breaker_consecutive_failures = 1\n[cluster]\nredis_url = "{REDIS_URL}"\n'
    extra += f'key_prefix = "{prefix}"\n'
    env = {"SINCERE_DATA_DIR": str(tmp_path / "data")}  # one store for both
    settings = load_settings(fallback_config(tmp_path, fault_server.base_url, None, extra), env=env)
    here, there = build_runtime(settings, env={}), build_runtime(settings, env={})
    try:
        there.cascade.breakers.view("up")  # its mirror of the fleet's breakers runs
        fault_server.script(Fault.status(500))
        caller = Caller("alice", "free", "user", None)  # type: ignore[arg-type]
        with pytest.raises(ServiceError):
            await here.pipeline.complete(caller, ChatRequest.of("gpt", "Hi"), surface="test")
        record = there.cascade.registry.record("up")
        await _until(lambda: record.state is HealthState.UNAVAILABLE, "the other process sees it")
        await here.history_writer.flush()
        await there.history_writer.flush()
        rows = await here.history.recent("up")
        assert [r.state for r in rows] == ["unavailable"]
    finally:
        await here.aclose()
        await there.aclose()


async def test_a_success_rides_with_the_processes_next_round_trip(
    prefix: str,
) -> None:
    client = connect(REDIS_URL)
    trips = RoundTrips(client)
    # A mirror refreshed once a minute: only the round trips can write the success.
    breakers = RedisBreakers(client, ["a"], POLICY, prefix=prefix, sync_s=60, trips=trips)
    try:
        breakers.view("a")  # its mirror's first refresh, now
        await asyncio.sleep(0.1)
        await breakers.record_success("a")  # counted: it rides with the next round trip
        trips.wake()  # as a request's admission or release would
        outcomes = None
        for _ in range(100):
            outcomes = await client.hget(f"{prefix}breaker:a", "outcomes")
            if outcomes is not None:
                break
            await asyncio.sleep(0.01)
        assert outcomes == b"1"
    finally:
        await breakers.aclose()
        await trips.aclose()
        await client.aclose()


async def test_an_answer_after_an_opening_closes_it_for_the_fleet_unless_its_time_was_given(
    prefix: str,
) -> None:
    async with _process(prefix) as a, _process(prefix) as b:
        await a.record_failure("a", "boom")
        assert await a.record_failure("a", "boom") is not None  # open (two in a row)
        await _until(lambda: b.view("a").state is BreakerState.OPEN, "B sees it")
        closed = await b.record_success("a")  # a request B admitted before, answered now
        assert closed is not None
        assert closed.after is BreakerState.CLOSED
        assert closed.reason == SERVED_REASON
        await _until(lambda: a.view("a").state is BreakerState.CLOSED, "A sees it closed")
        # A provider's Retry-After: the circuit stays open for that time, whatever answers.
        assert await a.record_failure("a", "429", open_for_s=30) is not None
        await _until(lambda: b.view("a").state is BreakerState.OPEN, "B sees it")
        assert await b.record_success("a") is None
        assert not (await b.admit("a")).allowed


async def test_answers_counted_in_bulk_close_a_circuit_opened_elsewhere_and_say_so_here(
    prefix: str,
) -> None:
    client = connect(REDIS_URL)
    trips = RoundTrips(client)
    # B's mirror is refreshed once a minute: it still sees the circuit closed.
    b = RedisBreakers(client, ["a"], POLICY, prefix=prefix, sync_s=60, trips=trips)
    heard: list[tuple[BreakerState, bool]] = []

    async def hear(transition: BreakerTransition, made_here: bool) -> None:
        heard.append((transition.after, made_here))

    b.listen(hear)
    try:
        b.view("a")
        await asyncio.sleep(0.1)  # B's first refresh is done
        async with _process(prefix) as a:
            await a.record_failure("a", "boom")
            assert await a.record_failure("a", "boom") is not None  # A opened it
            assert await b.record_success("a") is None  # counted: B sees it closed
            trips.wake()  # B's next round trip carries it
            await _until(lambda: heard == [(BreakerState.CLOSED, True)], "B made the close")
            # A refuses on a view of it only after a second look: it is closed again.
            await asyncio.sleep(0.05)
            assert (await a.admit("a")).allowed
    finally:
        await b.aclose()
        await trips.aclose()
        await client.aclose()


async def test_a_refusals_second_look_at_a_silent_redis_costs_one_bounded_wait(
    prefix: str, cut: RedisCut
) -> None:
    async with _process(prefix, url=cut.url) as a:
        await a.record_failure("a", "boom")
        assert await a.record_failure("a", "boom") is not None
        cut.silence()  # Redis stops answering
        await asyncio.sleep(2 * CONFIRM_S)  # A's view is old enough for a second look
        async with asyncio.timeout(HANG_GUARD_S):
            await a.admit("a")  # the second look waits its bounded time, then gives up
        assert a.redis_down  # it did not answer: this process's breakers decide
        for _ in range(20):  # and no request waits on the silent Redis again
            admit = a.admit("a")
            with pytest.raises(StopIteration):
                admit.send(None)  # one step: it never suspends
        cut.restore()


async def test_when_redis_goes_away_an_open_circuit_stays_open_in_the_process(
    prefix: str, cut: RedisCut
) -> None:
    async with _process(prefix, url=cut.url) as a:
        await a.record_failure("a", "boom")
        assert await a.record_failure("a", "boom") is not None  # open for 10 s
        cut.cut()
        await asyncio.sleep(2 * CONFIRM_S)  # A's view is old enough for a second look
        refused = await a.admit("a")  # Redis does not answer: A's own breakers decide
        assert a.redis_down
        assert not refused.allowed  # from the fleet's state, not from scratch
        assert refused.retry_after_s is not None
        assert 9 < refused.retry_after_s <= 10
        assert (await a.admit("b")).allowed
        cut.restore()
