"""The admission queue on its own: the order it lets requests through, the places and
waits it announces, and what it answers when a wait runs out or queueing is off."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from sincere.backends.memory.events import InProcessEventBus
from sincere.config import Settings, load_settings
from sincere.context import ContextFactory, Tier
from sincere.errors import AtCapacity, QueueTimeout, RetryAfterSource
from sincere.events import EventType
from sincere.tiers.queue import AdmissionQueues, DeploymentQueue, QueueStatus, Slot
from sincere.tiers.service_times import MIN_SAMPLES, Calibration, ServiceTimes, WaitEstimate
from tests.clocks import ManualClock

HANG_GUARD_S = 30  # only a broken queue takes this long


def _queue(capacity: int = 1, aging_s: float = 10.0) -> tuple[DeploymentQueue, ManualClock]:
    clock = ManualClock()
    return DeploymentQueue("up", capacity, aging_s, clock.monotonic), clock


def _order(queue: DeploymentQueue) -> list[str]:
    return [f"{w.tier}:{w.user.split(':', 1)[1]}#{w.seq}" for w in queue.order()]


def test_enterprise_goes_before_standard_before_free_and_each_tier_first_come_first_served() -> (
    None
):
    queue, _ = _queue()
    running = queue.enter("busy", Tier.FREE)  # holds the one slot
    assert running.granted_at is not None
    queue.enter("f1", Tier.FREE)
    queue.enter("s1", Tier.STANDARD)
    queue.enter("f2", Tier.FREE)
    queue.enter("e1", Tier.ENTERPRISE)
    queue.enter("s2", Tier.STANDARD)
    assert _order(queue) == [
        "enterprise:e1#4",
        "standard:s1#2",
        "standard:s2#5",
        "free:f1#1",
        "free:f2#3",
    ]


def test_one_user_s_burst_does_not_starve_another_user_of_the_same_tier() -> None:
    queue, _clock = _queue()
    queue.enter("busy", Tier.FREE)
    burst = [queue.enter("alice", Tier.FREE) for _ in range(5)]
    bob = queue.enter("bob", Tier.FREE)
    # Bob arrived last, yet takes the second turn: alice has as much service (none) as he,
    # and her first request came first; after it, bob has less.
    assert queue.order()[:3] == [burst[0], bob, burst[1]]
    assert (bob.position, burst[1].position) == (2, 3)


def test_a_user_who_was_served_more_waits_behind_one_who_was_served_less() -> None:
    queue, clock = _queue()
    first = queue.enter("alice", Tier.STANDARD)
    second = queue.enter("alice", Tier.STANDARD)
    bob = queue.enter("bob", Tier.STANDARD)  # lifted to alice's counter: both at 0
    # A tie: the user holding fewer slots now goes first, although alice asked first.
    assert queue.order() == [bob, second]
    clock.advance(3.0)
    queue.leave(first, served=True)  # alice received 3 s of service, bob none
    assert bob.granted_at is not None
    carol = queue.enter("carol", Tier.STANDARD)  # lifted to alice's 3 s: a tie again
    assert queue.order() == [second, carol]  # neither holds a slot: first come
    clock.advance(1.0)
    queue.leave(bob, served=True)  # bob: 1 s
    assert second.granted_at is not None  # carol was lifted to 3 s; alice has 3 s too
    assert carol.position == 1


def test_users_who_ask_one_at_a_time_go_first_beside_one_who_asks_for_many() -> None:
    """A closed loop on four slots: one user keeps twelve requests in flight, three keep
    one each. Each of the three asks again as its answer ends, after its slot went to
    the next waiting request: it must be next in line then (it holds no slot), never
    behind the heavy user's backlog, which leaves it the most a queue that keeps its
    slots busy can give: its slot for a service time of every service time plus the
    wait for the next slot to free (about 0.75 of a quarter here)."""
    queue, clock = _queue(capacity=4)
    for _ in range(MIN_SAMPLES):
        queue.times.add(1.0)
    users = {"heavy": 12, "a": 1, "b": 1, "c": 1}
    ends: dict[int, float] = {}
    held = dict.fromkeys(users, 0.0)
    places: list[int] = []
    for user, outstanding in users.items():
        for _ in range(outstanding):
            queue.enter(user, Tier.FREE)
    for step in range(4000):
        serving = {w.seq: w for w in queue._serving.values()}
        for seq in serving:
            if seq not in ends:
                ends[seq] = clock.monotonic() + 0.8 + 0.4 * ((seq * 7919) % 100) / 100
        seq = min(ends, key=ends.__getitem__)
        clock.advance(ends.pop(seq) - clock.monotonic())
        waiter = serving[seq]
        user = waiter.user.split(":", 1)[1]
        if step > 400:  # after the start
            held[user] += clock.monotonic() - (waiter.granted_at or 0.0)
        queue.leave(waiter, served=True)
        again = queue.enter(user, Tier.FREE)  # a closed loop: the user asks again at once
        if user != "heavy" and step > 400:
            places.append(again.position)
    assert max(places) <= 3  # behind the other light users at most
    share = {user: seconds / sum(held.values()) for user, seconds in held.items()}
    for user in ("a", "b", "c"):
        assert share[user] > 0.7 * 0.25, share


def test_aging_lets_a_free_request_that_waited_long_go_before_a_newer_enterprise_one() -> None:
    queue, clock = _queue(aging_s=10.0)
    queue.enter("busy", Tier.FREE)
    old_free = queue.enter("f", Tier.FREE)
    clock.advance(19.0)
    enterprise = queue.enter("e", Tier.ENTERPRISE)
    assert queue.order() == [enterprise, old_free]  # one step up: free ranks as standard
    clock.advance(1.0)  # 20 s: two steps, level with enterprise, and it came first
    assert queue.order() == [old_free, enterprise]


def test_the_slot_goes_to_the_first_in_order_and_a_request_that_leaves_gives_up_its_place() -> None:
    queue, _ = _queue()
    running = queue.enter("busy", Tier.FREE)
    f1 = queue.enter("f1", Tier.FREE)
    f2 = queue.enter("f2", Tier.FREE)
    e1 = queue.enter("e1", Tier.ENTERPRISE)
    assert (e1.position, f1.position, f2.position) == (1, 2, 3)
    queue.leave(f1, served=False)  # its client left
    assert f2.position == 2
    queue.leave(running, served=True)
    assert e1.granted_at is not None
    assert e1.position == 0
    assert f2.position == 1
    assert (queue.queued, queue.serving) == (1, 1)


def test_no_wait_is_estimated_before_enough_service_times_are_measured() -> None:
    times = ServiceTimes()
    for _ in range(MIN_SAMPLES - 1):
        times.add(1.0)
    estimate = times.wait(1, [0.2], 1)
    assert not estimate.known
    assert estimate.to_data()["estimated_wait_ms_p50"] is None
    assert estimate.samples == MIN_SAMPLES - 1


def test_the_estimate_is_the_running_request_s_rest_plus_the_turns_ahead() -> None:
    times = ServiceTimes()
    for seconds in (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0):
        times.add(seconds)
    # One slot, busy for 0.25 s: it frees after the median 1 s - 0.25; two turns of 1 s
    # each come before the third place.
    estimate = times.wait(3, [0.25], 1)
    assert estimate.p50_s == pytest.approx(2.75)
    assert estimate.p90_s is not None
    assert estimate.p90_s >= estimate.p50_s
    two_slots = times.wait(3, [0.25, 0.5], 2)
    assert two_slots.p50_s == pytest.approx(1.5)  # 0.75 → 1.75 and 0.5 → 1.5: the second turn


def test_a_request_running_longer_than_anything_measured_makes_the_wait_unknown() -> None:
    times = ServiceTimes()
    for _ in range(MIN_SAMPLES):
        times.add(1.0)
    assert not times.wait(1, [5.0], 1).known


def test_announced_waits_are_calibrated_by_the_waits_that_followed_earlier_ones() -> None:
    """Free requests overtaken by enterprise ones waited three times what the queue as
    it stood predicted: the next free request is told so; an enterprise one is not."""
    calibration = Calibration()
    for _ in range(MIN_SAMPLES):
        calibration.record("free:f", "free", predicted_s=1.0, waited_s=3.0)
    queue_only = WaitEstimate(2.0, 2.5, 20, queue_p50_s=2.0)
    free = calibration.apply("free:other", "free", queue_only)  # the tier's ratios
    assert (free.p50_s, free.p90_s) == (6.0, 6.0)
    assert free.queue_p50_s == 2.0
    assert calibration.apply("enterprise:e", "enterprise", queue_only) == queue_only
    for _ in range(MIN_SAMPLES):  # a user's own ratios come before the tier's
        calibration.record("free:light", "free", predicted_s=1.0, waited_s=1.0)
    assert calibration.apply("free:light", "free", queue_only).p50_s == 2.0


def test_a_queue_records_the_wait_that_followed_its_first_prediction() -> None:
    queue, clock = _queue()
    for _ in range(MIN_SAMPLES):
        queue.times.add(1.0)
    for _ in range(MIN_SAMPLES):
        running = queue.enter("busy", Tier.ENTERPRISE)
        waiting = queue.enter("f", Tier.FREE)
        predicted = queue.status(waiting).estimate.p50_s  # the slot frees in 1 s
        assert predicted == pytest.approx(1.0)
        clock.advance(2.0)  # it ran 2 s: the free request waited twice the prediction
        queue.leave(running, served=False)
        queue.leave(waiting, served=False)
    running = queue.enter("busy", Tier.ENTERPRISE)
    waiting = queue.enter("f", Tier.FREE)
    assert queue.status(waiting).estimate.p50_s == pytest.approx(2.0)


# ─── slots, as the cascade holds them ────────────────────────────────────────────────


def _settings(tmp_path: Path, capacity: int = 1, extra: str = "") -> Settings:
    path = tmp_path / "sincere.toml"
    path.write_text(
        f"""
[[models]]
name = "gpt"
deployments = ["up"]

[[deployments]]
name = "up"
provider = "openai"
base_url = "http://127.0.0.1:9"
model = "up-model"
max_concurrency = {capacity}
{extra}
"""
    )
    return load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path / "data")})


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(100_000):  # loop turns, not time: the waiter runs between them
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never came true")


async def _collect(slot: Slot, into: list[QueueStatus]) -> None:
    async for status in slot.waiting():
        into.append(status)


async def test_a_queued_request_is_told_its_places_then_its_wait_and_the_slot_passes_on(
    tmp_path: Path,
) -> None:
    bus = InProcessEventBus()
    contexts = ContextFactory(bus, default_timeout_s=60)
    queues = AdmissionQueues(_settings(tmp_path))
    first = queues.slot(contexts.create("a", Tier.FREE), "up")
    await _collect(first, [])  # let through at once: nothing to announce
    waiting_ctx = contexts.create("b", Tier.FREE)
    second = queues.slot(waiting_ctx, "up")
    seen: list[QueueStatus] = []
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(second)
        waiter = asyncio.create_task(_collect(second, seen))
        await _until(lambda: len(seen) == 1)  # position 1
        async with queues.slot(contexts.create("c", Tier.ENTERPRISE), "up") as enterprise:
            await _until(lambda: len(seen) == 2)  # position 2: the enterprise request first
            async with first:
                pass  # the first request ends: the enterprise one is let through
            await _until(lambda: len(seen) == 3)  # position 1 again
            await _collect(enterprise, [])
        # The enterprise request ended: the slot is the free request's.
        await asyncio.wait_for(waiter, HANG_GUARD_S)
    assert [s.position for s in seen] == [1, 2, 1, 0]
    assert seen[-1].dequeued
    assert seen[-1].waited_s > 0
    replay = await bus.replay("b")
    types = [e.type for e in replay.events]
    assert types == [EventType.REQUEST_QUEUED] * 3 + [EventType.REQUEST_DEQUEUED]
    queued = replay.events[0].data
    assert queued["position"] == 1
    assert queued["ahead"] == 0
    assert queued["tier"] == "free"
    assert queued["estimate_known"] is False
    assert queued["estimated_wait_ms_p50"] is None
    assert all(e.request_id == waiting_ctx.request_id for e in replay.events)
    queue = queues.queues["up"]
    assert (queue.queued, queue.serving) == (0, 0)
    assert len(queue.times) == 3  # each request's service time


async def test_a_wait_that_runs_out_says_where_it_was_how_long_it_waited_and_no_invented_wait(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, extra="[tiers.free]\nmax_queue_wait_s = 0.05\n")
    queues = AdmissionQueues(settings)
    contexts = ContextFactory(InProcessEventBus(), default_timeout_s=60)
    async with queues.slot(contexts.create("a", Tier.ENTERPRISE), "up") as busy:
        await _collect(busy, [])
        late = queues.slot(contexts.create("b", Tier.FREE), "up")
        with pytest.raises(QueueTimeout) as info:
            async with late:
                await asyncio.wait_for(_collect(late, []), HANG_GUARD_S)
    error = info.value
    assert error.status == 503
    assert error.members["queue_position"] == 1
    assert error.members["queue_waited_ms"] >= 50
    assert error.retry_after is None  # nothing was measured yet: no Retry-After
    assert error.members["estimate_known"] is False
    assert queues.queues["up"].queued == 0  # it left the queue


async def test_a_wait_that_runs_out_after_measured_service_gets_a_measured_retry_after(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    settings = _settings(tmp_path, extra="[tiers.free]\nmax_queue_wait_s = 5\n")
    queues = AdmissionQueues(settings, clock=clock.monotonic)
    contexts = ContextFactory(InProcessEventBus(), default_timeout_s=60)
    for _ in range(MIN_SAMPLES):
        async with queues.slot(contexts.create("a", Tier.FREE), "up") as done:
            await _collect(done, [])
            clock.advance(10.0)
    async with queues.slot(contexts.create("a", Tier.ENTERPRISE), "up") as busy:
        await _collect(busy, [])
        clock.advance(0.5)
        late = queues.slot(contexts.create("b", Tier.FREE), "up")
        statuses: list[QueueStatus] = []
        async with late:
            collecting = asyncio.create_task(_collect(late, statuses))
            await asyncio.sleep(0)
            clock.advance(5.0)  # the wait is over on the queue's clock
            late._waiter.changed.set()  # type: ignore[union-attr]  # wake it to look
            with pytest.raises(QueueTimeout) as info:
                await asyncio.wait_for(collecting, HANG_GUARD_S)
    error = info.value
    # Announced when it queued: the running request's rest, 10 - 0.5 s.
    assert statuses[0].estimate.p50_s == pytest.approx(9.5)
    assert error.retry_after_source is RetryAfterSource.MEASURED_SERVICE_TIMES
    assert error.retry_after == pytest.approx(4.5)  # what is left of it after 5.5 s
    assert error.members["queue_waited_ms"] == 5000


async def test_with_queueing_off_a_full_deployment_answers_429_with_a_measured_wait(
    tmp_path: Path,
) -> None:
    queueing = False
    queues = AdmissionQueues(_settings(tmp_path), queueing=lambda: queueing)
    contexts = ContextFactory(InProcessEventBus(), default_timeout_s=60)
    async with queues.slot(contexts.create("a", Tier.FREE), "up") as busy:
        await _collect(busy, [])
        with pytest.raises(AtCapacity) as info:
            queues.slot(contexts.create("b", Tier.ENTERPRISE), "up")
        queueing = True
        queued = queues.slot(contexts.create("b", Tier.ENTERPRISE), "up")
        async with queued:
            assert queues.queues["up"].queued == 1
    assert info.value.status == 429
    assert info.value.retry_after is None  # no service time measured yet


async def test_a_deployment_without_a_capacity_never_queues(tmp_path: Path) -> None:
    path = tmp_path / "sincere.toml"
    path.write_text(
        """
[[models]]
name = "gpt"
deployments = ["up"]

[[deployments]]
name = "up"
provider = "openai"
base_url = "http://127.0.0.1:9"
model = "up-model"
"""
    )
    settings = load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path / "data")})
    queues = AdmissionQueues(settings)
    assert "up" not in queues.queues
    assert queues.queues["embedded"].capacity == 1
    contexts = ContextFactory(InProcessEventBus(), default_timeout_s=60)
    async with AsyncExitStack() as stack:
        for _ in range(50):
            slot = await stack.enter_async_context(queues.slot(contexts.create("a"), "up"))
            await _collect(slot, [])
