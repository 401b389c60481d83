"""The event bus on Redis (the real one at 127.0.0.1:6379): two buses are two processes.

The contract tests run on both buses (in-process and Redis); the others are the fleet's:
events across processes, ids across restarts and lost streams, Redis unreachable.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from sincere.backends.memory.events import InProcessEventBus
from sincere.backends.redis import connect
from sincere.backends.redis.events import GAP_UNREADABLE, RedisEventBus
from sincere.backends.redis.limits import RedisLimiter
from sincere.backends.redis.trips import RoundTrips
from sincere.config import TierLimits
from sincere.errors import ErrorContext
from sincere.events import (
    GAP_BEFORE,
    GAP_BEYOND,
    GAP_DROPPED,
    STREAM_LOST,
    Event,
    EventType,
    SlowConsumer,
)
from sincere.ports import EventBus, Subscription
from tests.redis_cut import RedisCut

REDIS_URL = "redis://127.0.0.1:6379/0"
HANG_GUARD_S = 10.0  # only against a hang: no test waits this long when it passes

MakeBus = Callable[..., Awaitable[EventBus]]


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A prefix of this test's own; its keys are deleted at the end."""
    name = f"test:{uuid.uuid4().hex}:"
    yield name
    redis = connect(REDIS_URL)
    keys = [k async for k in redis.scan_iter(match=f"{name}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.fixture
async def redis_bus(prefix: str) -> AsyncIterator[Callable[..., Awaitable[RedisEventBus]]]:
    """Makes Redis buses on one prefix, each with its own client (a process of its own)."""
    made: list[tuple[RedisEventBus, Redis]] = []

    async def make(url: str = REDIS_URL, **options: Any) -> RedisEventBus:
        client = connect(url)
        bus = RedisEventBus(client, prefix=prefix, **options)
        made.append((bus, client))
        return bus

    yield make
    for bus, client in made:
        await bus.aclose()
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def make_bus(
    request: pytest.FixtureRequest, redis_bus: Callable[..., Awaitable[RedisEventBus]]
) -> MakeBus:
    async def make(history: int = 1000, buffer: int = 256) -> EventBus:
        if request.param == "memory":
            return InProcessEventBus(history, buffer)
        return await redis_bus(history=history, buffer=buffer)

    return make


async def _publish(bus: EventBus, user: str, n: int, label: str = "event") -> list[Event]:
    return [
        await bus.publish(user, EventType.SERVICE_READY, f"{label} {i}", request_id="r")
        for i in range(n)
    ]


async def _next(sub: Subscription) -> Event:
    async with asyncio.timeout(HANG_GUARD_S):
        return await anext(sub)


async def _take(sub: Subscription, n: int) -> list[Event]:
    return [await _next(sub) for _ in range(n)]


def _ids(events: list[Event] | tuple[Event, ...]) -> list[int]:
    return [e.id for e in events]


# ─── the contract, on both buses ─────────────────────────────────────────────────────


async def test_ids_increase_by_one_per_user(make_bus: MakeBus) -> None:
    bus = await make_bus()
    alice = await _publish(bus, "alice", 3)
    bob = await _publish(bus, "bob", 2)
    for events in (alice, bob):
        assert _ids(events) == list(range(events[0].id, events[0].id + len(events)))
    assert _ids((await bus.replay("alice")).events) == _ids(alice)
    assert 0 < alice[-1].id < 2**53  # exact in JavaScript


async def test_replay_after_a_last_seen_id(make_bus: MakeBus) -> None:
    bus = await make_bus()
    events = await _publish(bus, "alice", 5)
    replay = await bus.replay("alice", after_id=events[2].id)
    assert _ids(replay.events) == _ids(events[3:])
    assert [e.message for e in replay.events] == ["event 3", "event 4"]
    assert replay.gap is False
    assert await bus.bounds("alice") == (events[0].id, events[-1].id)


async def test_trimmed_history_is_a_gap(make_bus: MakeBus) -> None:
    bus = await make_bus(history=3)
    events = await _publish(bus, "alice", 6)
    replay = await bus.replay("alice", after_id=events[0].id)
    assert _ids(replay.events) == _ids(events[3:])
    assert (replay.gap, replay.reason) == (True, GAP_DROPPED)
    assert (await bus.replay("alice", after_id=events[2].id)).gap is False
    assert await bus.bounds("alice") == (events[3].id, events[5].id)


async def test_an_id_beyond_the_stream_is_a_gap_with_everything_retained(make_bus: MakeBus) -> None:
    bus = await make_bus()
    events = await _publish(bus, "alice", 3)
    replay = await bus.replay("alice", after_id=events[-1].id + 40)
    assert (replay.gap, replay.reason) == (True, GAP_BEYOND)
    assert _ids(replay.events) == _ids(events)
    sub = await bus.subscribe("alice", after_id=events[-1].id + 40)
    more = await _publish(bus, "alice", 1)
    assert _ids(await _take(sub, 4)) == _ids(events + more)


async def test_zero_means_from_the_start_of_the_stream(make_bus: MakeBus) -> None:
    bus = await make_bus()
    await _publish(bus, "alice", 2)
    replay = await bus.replay("alice", after_id=0)
    assert (replay.gap, len(replay.events)) == (False, 2)


async def test_subscriber_gets_replay_then_live_events_without_duplicates(
    make_bus: MakeBus,
) -> None:
    bus = await make_bus()
    events = await _publish(bus, "alice", 3)
    sub = await bus.subscribe("alice", after_id=events[0].id)
    events += await _publish(bus, "alice", 2)
    assert _ids(await _take(sub, 4)) == _ids(events[1:])
    assert sub.last_id == events[-1].id
    assert sub.gap is False


async def test_subscriber_sees_only_its_own_users_events(make_bus: MakeBus) -> None:
    bus = await make_bus()
    alice = await bus.subscribe("alice")
    bob = await bus.subscribe("bob")
    await _publish(bus, "bob", 2)
    await _publish(bus, "alice", 1)
    await _publish(bus, "bob", 1)
    assert [e.user_id for e in await _take(bob, 3)] == ["bob"] * 3
    assert (await _next(alice)).user_id == "alice"
    with pytest.raises(TimeoutError):  # bob's last event was read with alice's or after it
        async with asyncio.timeout(0.1):
            await anext(alice)


async def test_event_messages_are_scrubbed_of_secrets_before_they_are_stored(
    make_bus: MakeBus,
) -> None:
    bus = await make_bus()
    secret = "sk-live-abcdefghijklmnop"
    event = await bus.publish("alice", EventType.SERVICE_UNAVAILABLE, f"401 for key {secret}")
    assert secret not in event.message
    stored = (await bus.replay("alice")).events[0]
    assert secret not in stored.message
    assert stored.type is EventType.SERVICE_UNAVAILABLE


async def test_closing_a_subscription_wakes_its_waiting_consumer(make_bus: MakeBus) -> None:
    bus = await make_bus()
    sub = await bus.subscribe("alice")
    waiting = asyncio.ensure_future(anext(sub))
    await asyncio.sleep(0)
    sub.close()
    with pytest.raises(StopAsyncIteration):
        await waiting
    await _publish(bus, "alice", 1)
    with pytest.raises(StopAsyncIteration):
        await anext(sub)


# ─── across processes ────────────────────────────────────────────────────────────────


async def test_events_published_on_one_process_arrive_on_another_in_order(
    redis_bus: Callable[..., Awaitable[RedisEventBus]],
) -> None:
    a, b = await redis_bus(), await redis_bus()
    on_b = await b.subscribe("alice")
    on_a = await a.subscribe("alice")
    published: list[Event] = []
    for i in range(20):  # both processes publish, interleaved
        published += await _publish(a if i % 2 else b, "alice", 1, label=f"from {i}")
    ids = _ids(published)
    assert ids == list(range(ids[0], ids[0] + 20))  # one order, one by one, across processes
    for sub in (on_a, on_b):
        received = await _take(sub, 20)
        assert _ids(received) == ids
        assert [e.message for e in received] == [f"from {i} 0" for i in range(20)]
    assert (await a.replay("alice", after_id=ids[9])).events == (
        await b.replay("alice", after_id=ids[9])
    ).events


async def test_concurrent_publishers_on_two_processes_never_share_an_id(
    redis_bus: Callable[..., Awaitable[RedisEventBus]],
) -> None:
    a, b = await redis_bus(), await redis_bus()
    sub = await b.subscribe("alice")
    results = await asyncio.gather(*(_publish(bus, "alice", 25) for bus in (a, b, a, b)))
    ids = sorted(e.id for events in results for e in events)
    assert ids == list(range(ids[0], ids[0] + 100))
    for events in results:  # each publisher's own events in its order
        assert _ids(events) == sorted(_ids(events))
    assert _ids(await _take(sub, 100)) == ids


async def test_a_restarted_process_replays_from_the_last_event_id(
    redis_bus: Callable[..., Awaitable[RedisEventBus]],
) -> None:
    first = await redis_bus()
    events = await _publish(first, "alice", 5)
    await first.aclose()  # the process ends; its client's last event id was events[1]
    restarted = await redis_bus()
    sub = await restarted.subscribe("alice", after_id=events[1].id)
    assert sub.gap is False
    more = await _publish(restarted, "alice", 1)
    assert _ids(await _take(sub, 4)) == _ids(events[2:] + more)


async def test_an_id_from_a_lost_stream_is_a_gap_and_is_never_given_again(
    redis_bus: Callable[..., Awaitable[RedisEventBus]], prefix: str
) -> None:
    bus = await redis_bus()
    before = await _publish(bus, "alice", 5)
    redis = connect(REDIS_URL)
    await redis.delete(f"{prefix}events:alice")  # Redis lost it: restarted, flushed, expired
    await redis.aclose()
    replay = await bus.replay("alice", after_id=before[2].id)
    assert (replay.gap, replay.reason, replay.events) == (True, GAP_BEFORE, ())
    after = await _publish(bus, "alice", 3)
    assert after[0].id > before[-1].id  # a new start, above every id of the lost stream
    assert _ids(after) == list(range(after[0].id, after[0].id + 3))
    sub = await bus.subscribe("alice", after_id=before[2].id)
    assert (sub.gap, sub.gap_reason) == (True, GAP_BEFORE)
    assert _ids(await _take(sub, 3)) == _ids(after)


async def test_a_live_subscriber_of_a_lost_stream_is_told_to_reconnect(
    redis_bus: Callable[..., Awaitable[RedisEventBus]], prefix: str
) -> None:
    bus = await redis_bus()
    sub = await bus.subscribe("alice")
    before = await _publish(bus, "alice", 2)
    assert _ids(await _take(sub, 2)) == _ids(before)
    redis = connect(REDIS_URL)
    await redis.delete(f"{prefix}events:alice")
    await redis.aclose()
    await _publish(bus, "alice", 1)
    with pytest.raises(SlowConsumer):  # the socket closes with 1013 and the id to resume
        await _next(sub)
    assert sub.last_id == before[-1].id


async def test_a_slow_consumer_is_dropped_and_loses_nothing_on_reconnect(
    redis_bus: Callable[..., Awaitable[RedisEventBus]],
) -> None:
    bus = await redis_bus(buffer=2)
    slow = await bus.subscribe("alice")
    events = await _publish(bus, "alice", 5)
    async with asyncio.timeout(HANG_GUARD_S):
        # Until the reader (another task, reading Redis) has offered it the third event:
        # nothing to wait on but its state.
        while slow._overflowed is False:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert _ids(await _take(slow, 2)) == _ids(events[:2])
    with pytest.raises(SlowConsumer):
        await _next(slow)
    assert _ids((await bus.replay("alice", after_id=slow.last_id)).events) == _ids(events[2:])


async def test_streams_expire_when_idle(
    redis_bus: Callable[..., Awaitable[RedisEventBus]], prefix: str
) -> None:
    bus = await redis_bus(ttl_s=60)
    await _publish(bus, "alice", 1)
    redis = connect(REDIS_URL)
    ttl_ms = await redis.pttl(f"{prefix}events:alice")
    await redis.aclose()
    assert 0 < ttl_ms <= 60_000


async def test_a_user_without_a_stream(
    redis_bus: Callable[..., Awaitable[RedisEventBus]],
) -> None:
    bus = await redis_bus()
    assert await bus.bounds("nobody") == (1, 0)
    assert (await bus.replay("nobody")).gap is False
    sub = await bus.subscribe("nobody", after_id=0)
    first = await _publish(bus, "nobody", 1)
    assert _ids(await _take(sub, 1)) == _ids(first)


# ─── Redis unreachable ───────────────────────────────────────────────────────────────


@pytest.fixture
async def cut() -> AsyncIterator[RedisCut]:
    proxy = await RedisCut().start()
    yield proxy
    await proxy.aclose()


async def test_while_redis_is_cut_events_wait_and_arrive_in_order_when_it_is_back(
    redis_bus: Callable[..., Awaitable[RedisEventBus]], cut: RedisCut
) -> None:
    emitting = await redis_bus(cut.url)
    elsewhere = await redis_bus()  # another process, which still reaches Redis
    here = await emitting.subscribe("alice")
    there = await elsewhere.subscribe("alice")
    before = await _publish(emitting, "alice", 2, label="before")
    assert await emitting.healthy() is True
    cut.cut()
    during = await _publish(emitting, "alice", 3, label="during")  # never raises
    assert _ids(during) == [0, 0, 0]  # not numbered yet
    assert emitting.pending == 3
    assert await emitting.healthy() is False
    assert emitting.last_error is not None
    assert (await emitting.bounds("alice")) == (1, 0)  # nothing known, nothing raised
    cut.restore()
    after = await _publish(emitting, "alice", 1, label="after")
    expected = ["before 0", "before 1", "during 0", "during 1", "during 2", "after 0"]
    for sub in (here, there):
        received = await _take(sub, 6)
        assert [e.message for e in received] == expected
        ids = _ids(received)
        assert ids == list(range(before[0].id, before[0].id + 6))
    assert after[0].id in (0, before[0].id + 5)  # queued behind the outbox, or written
    async with asyncio.timeout(HANG_GUARD_S):
        await emitting.written()  # delivered elsewhere can come before the writer's reply
    assert emitting.pending == 0
    assert await emitting.healthy() is True
    assert emitting.last_error is None


async def test_a_silent_redis_costs_a_publish_a_bounded_wait_and_the_next_ones_none(
    redis_bus: Callable[..., Awaitable[RedisEventBus]], cut: RedisCut
) -> None:
    bus = await redis_bus(cut.url)
    await _publish(bus, "alice", 1)
    cut.silence()  # connections stay open, nothing comes back
    first = await _publish(bus, "alice", 1)  # waits for COMMAND_TIMEOUT_S, then gives up
    assert first[0].id == 0
    for i in range(50):  # Redis is known to be down: the next ones do not wait at all
        publish = bus.publish("alice", EventType.SERVICE_READY, f"queued {i}")
        with pytest.raises(StopIteration) as finished:
            publish.send(None)  # one step: it never suspends
        assert finished.value.value.id == 0
    assert bus.pending == 51
    cut.restore()
    sub = await bus.subscribe("alice", after_id=0)  # replayed, or live as they are written
    messages = [e.message for e in await _take(sub, 52)]
    assert messages == ["event 0", "event 0", *(f"queued {i}" for i in range(50))]


async def test_a_publisher_cancelled_again_and_again_loses_no_event(
    redis_bus: Callable[..., Awaitable[RedisEventBus]], cut: RedisCut
) -> None:
    # A request stopped by its client runs its cleanup in a cancel scope that cancels every
    # await (anyio, under Starlette): its terminal event must be written all the same.
    bus = await redis_bus(cut.url)
    watcher = await (await redis_bus()).subscribe("alice")
    await _publish(bus, "alice", 1, label="before")
    cut.silence()  # the next write waits on Redis: the publisher is cancelled meanwhile

    async def request() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            try:
                await bus.publish("alice", EventType.REQUEST_STARTED, "started")
            finally:
                await bus.publish("alice", EventType.REQUEST_FAILED, "client gone")

    scopes: list[anyio.CancelScope] = []
    task = asyncio.create_task(request())
    await asyncio.sleep(0.05)
    scopes[0].cancel()
    await task  # the scope absorbs its cancellation
    cut.restore()
    received = [e.message for e in await _take(watcher, 3)]
    assert received == ["before 0", "started", "client gone"]


async def test_posted_events_are_written_in_order_with_published_ones(
    redis_bus: Callable[..., Awaitable[RedisEventBus]],
) -> None:
    bus = await redis_bus()
    watcher = await (await redis_bus()).subscribe("alice")
    posted = bus.post("alice", EventType.REQUEST_STARTED, "posted")
    assert posted.id == 0  # not numbered: nothing was waited for
    published = await bus.publish("alice", EventType.REQUEST_COMPLETED, "published")
    assert [e.message for e in await _take(watcher, 2)] == ["posted", "published"]
    assert published.id > 0


async def test_a_full_outbox_drops_the_oldest_and_counts_them(
    redis_bus: Callable[..., Awaitable[RedisEventBus]], cut: RedisCut
) -> None:
    bus = await redis_bus(cut.url, outbox=3)
    watcher = await (await redis_bus()).subscribe("alice")
    cut.cut()
    await _publish(bus, "alice", 5)
    assert (bus.pending, bus.dropped) == (3, 2)
    cut.restore()
    assert [e.message for e in await _take(watcher, 3)] == ["event 2", "event 3", "event 4"]


async def test_subscribing_while_redis_is_cut_is_a_gap_then_live_events_when_back(
    redis_bus: Callable[..., Awaitable[RedisEventBus]], cut: RedisCut
) -> None:
    other = await redis_bus()
    events = await _publish(other, "alice", 2)
    bus = await redis_bus(cut.url)
    cut.cut()
    sub = await bus.subscribe("alice", after_id=events[0].id)
    assert (sub.gap, sub.gap_reason) == (True, GAP_UNREADABLE)
    more = await _publish(other, "alice", 1)
    cut.restore()
    assert _ids(await _take(sub, 2)) == _ids(events[1:] + more)


async def test_a_reader_that_missed_part_of_the_feed_reads_the_users_stream_instead(
    redis_bus: Callable[..., Awaitable[RedisEventBus]], cut: RedisCut, prefix: str
) -> None:
    emitting = await redis_bus()
    reading = await redis_bus(cut.url)
    sub = await reading.subscribe("alice")
    cut.cut()  # the reading process cannot read while these are published and trimmed
    missed = await _publish(emitting, "alice", 3, label="missed")
    redis = connect(REDIS_URL)
    await redis.xtrim(f"{prefix}events-feed", maxlen=0)  # as if it fell a whole feed behind
    await redis.aclose()
    after = await _publish(emitting, "alice", 1, label="after")
    cut.restore()
    assert _ids(await _take(sub, 4)) == _ids(missed + after)


async def test_when_redis_loses_everything_the_fleet_goes_on_with_new_ids(
    redis_bus: Callable[..., Awaitable[RedisEventBus]], prefix: str
) -> None:
    a, b = await redis_bus(), await redis_bus()
    sub = await b.subscribe("alice")
    before = await _publish(a, "alice", 2)
    assert _ids(await _take(sub, 2)) == _ids(before)
    redis = connect(REDIS_URL)
    keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
    await redis.delete(*keys)  # a restart without persistence, for this fleet's keys
    await redis.aclose()
    after = await _publish(a, "alice", 2)
    assert after[0].id > before[-1].id
    with pytest.raises(SlowConsumer) as ended:  # told to reconnect: events may be lost
        await _next(sub)
    assert str(ended.value) == STREAM_LOST  # the socket's 1013 says so, not "overflow"
    again = await b.subscribe("alice", after_id=sub.last_id)
    assert (again.gap, again.gap_reason) == (True, GAP_BEFORE)
    more = await _publish(a, "alice", 1)
    assert _ids(await _take(again, 3)) == _ids(after + more)


async def test_a_subscription_made_while_redis_is_cut_catches_up_on_a_running_reader(
    redis_bus: Callable[..., Awaitable[RedisEventBus]], cut: RedisCut
) -> None:
    other = await redis_bus()
    bus = await redis_bus(cut.url)
    await bus.subscribe("bob")  # this process's reader is already reading the feed
    events = await _publish(other, "alice", 3)
    cut.cut()
    sub = await bus.subscribe("alice", after_id=events[0].id)
    assert (sub.gap, sub.gap_reason) == (True, GAP_UNREADABLE)
    cut.restore()
    more = await _publish(other, "alice", 1)
    assert _ids(await _take(sub, 3)) == _ids(events[1:] + more)


async def test_three_processes_five_users_each_socket_gets_exactly_its_users_stream(
    redis_bus: Callable[..., Awaitable[RedisEventBus]],
) -> None:
    buses = [await redis_bus() for _ in range(3)]
    users = [f"user-{n}" for n in range(5)]
    subs = {(b, u): await bus.subscribe(u) for b, bus in enumerate(buses) for u in users}

    async def publisher(bus: RedisEventBus, n: int) -> None:
        for i in range(20):
            await bus.publish(users[(n + i) % 5], EventType.REQUEST_STARTED, f"{n}:{i}")

    await asyncio.gather(*(publisher(buses[n % 3], n) for n in range(15)))  # 300 events
    streams = {u: (await buses[0].replay(u)).events for u in users}
    assert sum(len(s) for s in streams.values()) == 300
    for (_, user), sub in subs.items():
        received = await _take(sub, len(streams[user]))
        assert received == list(streams[user])  # this user's, all, in the stream's order
        ids = _ids(received)
        assert ids == list(range(ids[0], ids[0] + len(ids)))


async def test_a_process_without_subscribers_stops_reading_and_starts_again_without_loss(
    redis_bus: Callable[..., Awaitable[RedisEventBus]],
) -> None:
    a, b = await redis_bus(), await redis_bus()
    first = await b.subscribe("alice")
    events = await _publish(a, "alice", 2)
    assert _ids(await _take(first, 2)) == _ids(events)
    first.close()  # the last subscriber here: the fleet's events are no longer read
    assert b.reading is False
    events += await _publish(a, "alice", 2)  # published while nobody here listens
    again = await b.subscribe("alice", after_id=first.last_id)
    assert b.reading is True
    events += await _publish(a, "alice", 1)
    assert _ids(await _take(again, 3)) == _ids(events[2:])


async def test_every_event_a_process_published_before_it_was_killed_is_kept(
    redis_bus: Callable[..., Awaitable[RedisEventBus]], prefix: str
) -> None:
    publisher = textwrap.dedent(f"""
        import asyncio
        from sincere.backends.redis import connect
        from sincere.backends.redis.events import RedisEventBus
        from sincere.events import EventType

        async def main():
            bus = RedisEventBus(connect("{REDIS_URL}"), prefix="{prefix}")
            n = 0
            while True:
                event = await bus.publish("alice", EventType.REQUEST_STARTED, f"n{{n}}")
                print(event.id, flush=True)
                n += 1

        asyncio.run(main())
    """)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", publisher, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    published: list[int] = []
    async with asyncio.timeout(HANG_GUARD_S * 3):
        while len(published) < 100:
            published.append(int(await process.stdout.readline()))
    process.kill()  # SIGKILL, in the middle of publishing
    await process.wait()
    another = await redis_bus()
    _, last = await another.bounds("alice")
    sub = await another.subscribe("alice", after_id=published[9])
    kept = await _take(sub, last - published[9])
    assert _ids(kept[: len(published) - 10]) == published[10:]  # each one returned is in Redis
    assert _ids(kept) == list(range(published[10], last + 1))  # and nothing half-written


async def test_after_redis_forgets_the_scripts_events_and_admissions_go_on(
    redis_bus: Callable[..., Awaitable[RedisEventBus]], prefix: str
) -> None:
    client = connect(REDIS_URL)
    trips = RoundTrips(client)
    bus = RedisEventBus(client, prefix=prefix, trips=trips)
    limiter = RedisLimiter(
        client,
        {"free": TierLimits(requests_per_minute=10, concurrent_requests=1)},
        prefix=prefix,
        trips=trips,
    )
    try:
        watcher = await (await redis_bus()).subscribe("alice")
        await _publish(bus, "alice", 1, label="before")
        await client.script_flush()  # as after a restart without persistence
        after = await _publish(bus, "alice", 1, label="after")
        assert after[0].id > 0  # written (the script loaded again), not left queued
        async with limiter.admit("alice", "free", ErrorContext()):
            pass
        assert [e.message for e in await _take(watcher, 2)] == ["before 0", "after 0"]
    finally:
        await bus.aclose()
        await limiter.aclose()
        await trips.aclose()
        await client.aclose()
