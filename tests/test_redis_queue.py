"""Admission queues shared by a fleet on the real Redis: two queue objects with two clients
are two gateway processes. One capacity and one order for both, places told to each, a
dead process's slot free within its lease, and a Redis that cannot be reached never
fails a request."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sincere.backends.memory.events import InProcessEventBus
from sincere.backends.redis import connect
from sincere.backends.redis.queue import RedisAdmissionQueues
from sincere.config import Settings, load_settings
from sincere.context import ContextFactory, Tier
from sincere.errors import AtCapacity, QueueTimeout
from sincere.events import EventType
from sincere.ports import QueueSlot
from sincere.tiers.queue import QueueStatus
from sincere.tiers.service_times import MIN_SAMPLES
from tests.conftest import closing
from tests.redis_cut import RedisCut

REDIS = "redis://127.0.0.1:6379/0"
HANG_GUARD_S = 30  # only a broken queue takes this long


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


def _process(
    settings: Settings,
    prefix: str,
    *,
    url: str = REDIS,
    lease_s: float = 10.0,
    queueing: Callable[[], bool] = lambda: True,
    live: int = 1,
) -> RedisAdmissionQueues:
    client = closing(connect(url))
    return closing(
        RedisAdmissionQueues(
            client,
            settings,
            prefix=prefix,
            lease_s=lease_s,
            queueing=queueing,
            live_processes=lambda: live,
        )
    )


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.005)


async def _collect(slot: QueueSlot, into: list[QueueStatus]) -> None:
    async for status in slot.waiting():
        into.append(status)


@pytest.fixture
def prefix() -> str:
    return f"sincere-test:{uuid.uuid4().hex}:"  # tests share one Redis; keys expire


async def test_two_processes_share_one_capacity_and_one_order(tmp_path: Path, prefix: str) -> None:
    settings = _settings(tmp_path)
    one, two = _process(settings, prefix), _process(settings, prefix)
    bus = InProcessEventBus()
    contexts = ContextFactory(bus, default_timeout_s=60)
    busy = await one.enter(contexts.create("busy", Tier.STANDARD), "up")
    await _collect(busy, [])  # the one slot, at once
    free_seen: list[QueueStatus] = []
    enterprise_seen: list[QueueStatus] = []
    async with busy:
        free = await one.enter(contexts.create("f|x", Tier.FREE), "up")  # any character
        free_task = asyncio.create_task(_collect(free, free_seen))
        await _until(lambda: len(free_seen) == 1, "the free request told its place")
        enterprise = await two.enter(contexts.create("e", Tier.ENTERPRISE), "up")
        enterprise_task = asyncio.create_task(_collect(enterprise, enterprise_seen))
        await _until(lambda: len(free_seen) == 2, "the free request moved back")
        assert one.queues["up"].serving == 1  # the other process's request waits too
    # The slot freed in process one goes to the enterprise request in process two.
    await asyncio.wait_for(enterprise_task, HANG_GUARD_S)
    await _until(lambda: len(free_seen) == 3, "the free request is next")
    assert not free_task.done()
    async with enterprise:
        pass
    await asyncio.wait_for(free_task, HANG_GUARD_S)
    async with free:
        pass
    assert [s.position for s in free_seen] == [1, 2, 1, 0]
    assert [s.position for s in enterprise_seen] == [1, 0]
    assert free_seen[-1].dequeued
    assert free_seen[-1].waited_s > enterprise_seen[-1].waited_s
    kinds = [e.type for e in (await bus.replay("f|x")).events]
    assert kinds == [EventType.REQUEST_QUEUED] * 3 + [EventType.REQUEST_DEQUEUED]


async def test_a_slot_whose_process_died_is_free_again_within_its_lease(
    tmp_path: Path, prefix: str
) -> None:
    settings = _settings(tmp_path)
    dead = _process(settings, prefix, lease_s=0.5)
    alive = _process(settings, prefix, lease_s=0.5)
    contexts = ContextFactory(InProcessEventBus(), default_timeout_s=60)
    held = await dead.enter(contexts.create("a", Tier.FREE), "up")
    await _collect(held, [])
    await dead.aclose()  # its poller stops: nothing renews the slot, nothing releases it
    waiting = await alive.enter(contexts.create("b", Tier.FREE), "up")
    seen: list[QueueStatus] = []
    await asyncio.wait_for(_collect(waiting, seen), HANG_GUARD_S)
    async with waiting:
        assert seen[-1].dequeued


async def test_a_wait_that_runs_out_on_the_fleet_s_queue_says_where_it_was(
    tmp_path: Path, prefix: str
) -> None:
    settings = _settings(tmp_path, extra="[tiers.free]\nmax_queue_wait_s = 0.2\n")
    one, two = _process(settings, prefix), _process(settings, prefix)
    contexts = ContextFactory(InProcessEventBus(), default_timeout_s=60)
    busy = await one.enter(contexts.create("busy", Tier.ENTERPRISE), "up")
    async with busy:
        await _collect(busy, [])
        late = await two.enter(contexts.create("late", Tier.FREE), "up")
        with pytest.raises(QueueTimeout) as info:
            async with late:
                await asyncio.wait_for(_collect(late, []), HANG_GUARD_S)
    error = info.value
    assert error.members["queue_position"] == 1
    assert error.members["queue_waited_ms"] >= 200
    assert error.retry_after is None  # nothing measured here yet
    again = await two.enter(contexts.create("late", Tier.FREE), "up")
    async with again:
        await _collect(again, [])  # its place was given up: the freed slot is free


async def test_with_queueing_off_a_full_deployment_of_the_fleet_refuses_at_once(
    tmp_path: Path, prefix: str
) -> None:
    settings = _settings(tmp_path)
    one = _process(settings, prefix)
    two = _process(settings, prefix, queueing=lambda: False)
    contexts = ContextFactory(InProcessEventBus(), default_timeout_s=60)
    busy = await one.enter(contexts.create("busy", Tier.FREE), "up")
    async with busy:
        with pytest.raises(AtCapacity):
            await two.enter(contexts.create("e", Tier.ENTERPRISE), "up")
    free_now = await two.enter(contexts.create("e", Tier.ENTERPRISE), "up")
    async with free_now:
        await _collect(free_now, [])


async def test_while_redis_is_unreachable_each_process_queues_for_its_share(
    tmp_path: Path, prefix: str
) -> None:
    cut = await RedisCut().start()
    try:
        settings = _settings(tmp_path, capacity=4)
        process = _process(settings, prefix, url=cut.url, live=2)
        contexts = ContextFactory(InProcessEventBus(), default_timeout_s=60)
        cut.cut()
        first = await process.enter(contexts.create("a", Tier.FREE), "up")
        second = await process.enter(contexts.create("b", Tier.FREE), "up")
        third = await process.enter(contexts.create("c", Tier.FREE), "up")
        seen: list[QueueStatus] = []
        async with first, second:
            await _collect(first, [])
            await _collect(second, [])
            waiting = asyncio.create_task(_collect(third, seen))
            await _until(lambda: len(seen) == 1, "the third waits: 4 slots ÷ 2 processes")
            assert process.queues["up"].capacity == 4  # the fleet's, as configured
        await asyncio.wait_for(waiting, HANG_GUARD_S)
        async with third:
            assert seen[-1].dequeued
    finally:
        await cut.aclose()


async def test_a_request_stopped_while_it_enters_gives_back_what_it_took(
    tmp_path: Path, prefix: str
) -> None:
    settings = _settings(tmp_path)
    stopped = _process(settings, prefix, lease_s=60.0)  # a leak would hold it a minute
    other = _process(settings, prefix, lease_s=60.0)
    contexts = ContextFactory(InProcessEventBus(), default_timeout_s=60)
    entering = asyncio.create_task(stopped.enter(contexts.create("a", Tier.FREE), "up"))
    await asyncio.sleep(0)  # it asks Redis; the client goes before the answer is read
    entering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await entering
    slot = await other.enter(contexts.create("b", Tier.FREE), "up")
    async with slot:
        await asyncio.wait_for(_collect(slot, []), HANG_GUARD_S)


async def test_the_first_place_announced_counts_the_fleet_s_busy_slots(
    tmp_path: Path, prefix: str
) -> None:
    settings = _settings(tmp_path)
    one, two = _process(settings, prefix), _process(settings, prefix)
    for _ in range(MIN_SAMPLES):  # this process measured answers of about a second
        two.measured("up").add(1.0)
    contexts = ContextFactory(InProcessEventBus(), default_timeout_s=60)
    busy = await one.enter(contexts.create("busy", Tier.FREE), "up")
    async with busy:
        waiting = await two.enter(contexts.create("next", Tier.FREE), "up")
        seen: list[QueueStatus] = []
        task = asyncio.create_task(_collect(waiting, seen))
        await _until(lambda: len(seen) == 1, "its first place")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with waiting:
            pass
    # The other process's request holds the one slot: the wait is what is left of it.
    assert seen[0].serving == 1
    assert seen[0].estimate.p50_s is not None
    assert 0.5 < seen[0].estimate.p50_s <= 1.0
