from __future__ import annotations

import asyncio

import pytest

from sincere.backends.memory.events import InProcessEventBus
from sincere.context import ContextFactory
from sincere.events import EPOCH_SPAN, GAP_DROPPED, EventType, SlowConsumer


async def _publish(bus: InProcessEventBus, user: str, n: int) -> None:
    for i in range(n):
        await bus.publish(user, EventType.SERVICE_READY, f"event {i}", request_id="r", service="s")


async def test_ids_increase_by_one_per_user() -> None:
    bus = InProcessEventBus()
    await _publish(bus, "alice", 3)
    await _publish(bus, "bob", 2)
    assert [e.id for e in (await bus.replay("alice")).events] == [1, 2, 3]
    assert [e.id for e in (await bus.replay("bob")).events] == [1, 2]


async def test_replay_from_a_last_seen_id() -> None:
    bus = InProcessEventBus()
    await _publish(bus, "alice", 5)
    replay = await bus.replay("alice", after_id=3)
    assert [e.id for e in replay.events] == [4, 5]
    assert [e.message for e in replay.events] == ["event 3", "event 4"]
    assert replay.gap is False


async def test_replay_reports_a_gap_when_history_was_dropped() -> None:
    bus = InProcessEventBus(history=3)
    await _publish(bus, "alice", 6)
    replay = await bus.replay("alice", after_id=1)
    assert [e.id for e in replay.events] == [4, 5, 6]
    assert replay.gap is True
    assert (await bus.replay("alice", after_id=3)).gap is False


async def test_subscriber_gets_replay_then_live_events_in_order_without_duplicates() -> None:
    bus = InProcessEventBus()
    await _publish(bus, "alice", 3)
    sub = await bus.subscribe("alice", after_id=1)
    await _publish(bus, "alice", 2)
    received = [await anext(sub) for _ in range(4)]
    assert [e.id for e in received] == [2, 3, 4, 5]


async def test_subscriber_sees_only_its_own_users_events() -> None:
    bus = InProcessEventBus()
    alice = await bus.subscribe("alice")
    bob = await bus.subscribe("bob")
    await _publish(bus, "alice", 2)
    await _publish(bus, "bob", 1)
    assert [(await anext(alice)).user_id for _ in range(2)] == ["alice", "alice"]
    only = await anext(bob)
    assert only.user_id == "bob"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await anext(bob)


async def test_closing_a_subscription_wakes_its_waiting_consumer() -> None:
    bus = InProcessEventBus()
    sub = await bus.subscribe("alice")
    waiting = asyncio.ensure_future(anext(sub))
    await asyncio.sleep(0)  # the consumer is now waiting for the next event
    assert not waiting.done()
    sub.close()
    for _ in range(10):  # a few turns of the loop, not a clock: without the wake-up it hangs
        await asyncio.sleep(0)
    assert waiting.done()
    with pytest.raises(StopAsyncIteration):
        waiting.result()
    await _publish(bus, "alice", 1)  # a closed subscription gets nothing more
    with pytest.raises(StopAsyncIteration):
        await anext(sub)


async def test_slow_consumer_is_dropped_instead_of_blocking_publishers() -> None:
    bus = InProcessEventBus(subscriber_buffer=2)
    sub = await bus.subscribe("alice")
    await _publish(bus, "alice", 5)  # never blocks, though nobody reads
    assert [(await anext(sub)).id for _ in range(2)] == [1, 2]
    with pytest.raises(SlowConsumer):
        await anext(sub)
    # Nothing lost for a reconnecting client: the history still has everything.
    assert [e.id for e in (await bus.replay("alice", after_id=2)).events] == [3, 4, 5]


async def test_event_messages_are_scrubbed_of_secrets() -> None:
    bus = InProcessEventBus()
    event = await bus.publish(
        "alice", EventType.SERVICE_UNAVAILABLE, "401 for key sk-live-abcdefghijklmnop"
    )
    assert "sk-live-abcdefghijklmnop" not in event.message
    assert event.to_dict()["type"] == "service_unavailable"


async def test_contexts_are_fresh_per_request(contexts: ContextFactory) -> None:
    a = contexts.create("alice", "enterprise")
    b = contexts.create("alice", "enterprise")
    assert a.request_id != b.request_id
    assert a.emitter is not b.emitter
    assert a.tier == "enterprise"
    assert 59 < a.remaining() <= 60
    with pytest.raises(ValueError, match="platinum"):
        contexts.create("alice", "platinum")


async def test_an_id_beyond_the_stream_is_a_gap_and_replays_everything_retained() -> None:
    bus = InProcessEventBus()
    await _publish(bus, "alice", 3)
    replay = await bus.replay("alice", after_id=40)  # say, an id from before a restart
    assert replay.gap is True
    assert [e.id for e in replay.events] == [1, 2, 3]
    sub = await bus.subscribe("alice", after_id=40)
    await _publish(bus, "alice", 1)
    assert [(await anext(sub)).id for _ in range(4)] == [1, 2, 3, 4]
    assert await bus.bounds("alice") == (1, 4)


async def test_a_restarted_bus_never_reuses_an_id_and_flags_an_old_one_as_a_gap() -> None:
    before = InProcessEventBus(epoch=1)
    await _publish(before, "alice", 5)
    last_seen = (await before.replay("alice")).events[2].id  # the client saw 3 of the 5
    after = InProcessEventBus(epoch=2)  # the process restarted: its history is empty
    await _publish(after, "alice", 4)
    new_ids = [e.id for e in (await after.replay("alice")).events]
    assert min(new_ids) > max(e.id for e in (await before.replay("alice")).events)
    assert new_ids == list(range(new_ids[0], new_ids[0] + 4))  # still one by one
    replay = await after.replay("alice", after_id=last_seen)
    assert replay.gap is True
    assert replay.reason is not None
    assert "before this stream began" in replay.reason
    assert [e.id for e in replay.events] == new_ids  # nothing of the new stream skipped
    sub = await after.subscribe("alice", after_id=last_seen)
    assert sub.gap is True
    await _publish(after, "alice", 1)
    received = [(await anext(sub)).id for _ in range(5)]
    assert received == [*new_ids, new_ids[-1] + 1]


async def test_zero_means_from_the_start_of_this_stream() -> None:
    bus = InProcessEventBus(epoch=7)
    await _publish(bus, "alice", 2)
    replay = await bus.replay("alice", after_id=0)
    assert replay.gap is False
    assert len(replay.events) == 2
    assert await bus.bounds("bob") == (7 * EPOCH_SPAN + 1, 7 * EPOCH_SPAN)  # a user with no events


async def test_the_last_id_an_empty_stream_announces_resumes_it_with_the_true_gap_reason() -> None:
    # A client connected before any event gets the stream's start as its last id (bounds);
    # resuming from it after the history dropped events is a dropped-events gap, not an id
    # of an earlier process.
    bus = InProcessEventBus(epoch=3, history=3)
    _, announced = await bus.bounds("alice")
    await _publish(bus, "alice", 5)
    replay = await bus.replay("alice", after_id=announced)
    assert replay.gap is True
    assert replay.reason == GAP_DROPPED
    assert [e.id for e in replay.events] == [announced + 3, announced + 4, announced + 5]
    assert (await InProcessEventBus(epoch=3).replay("alice", after_id=announced)).gap is False
