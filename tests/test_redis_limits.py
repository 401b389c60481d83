"""Tier limits shared by a fleet on the real Redis: two limiters with two clients are two
gateway processes. Exact across them, a slot released however its request ends, a dead
holder's slot free within the lease, and a Redis that stops answering never fails a request."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable

import anyio
import pytest
from redis.asyncio import Redis

from sincere.backends.redis import connect
from sincere.backends.redis.limits import LEASE_S, RETRY_REDIS_S, RedisLimiter
from sincere.config import TierLimits
from sincere.errors import ErrorContext, RateLimited, RetryAfterSource
from tests.conftest import closing

REDIS = "redis://127.0.0.1:6379/0"


class Clock:
    """Unix seconds that move by hand, shared by every "process" of a test."""

    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


def _tiers(rpm: int, concurrent: int) -> dict[str, TierLimits]:
    return {"free": TierLimits(requests_per_minute=rpm, concurrent_requests=concurrent)}


def _prefix() -> str:
    return f"sincere-test:{uuid.uuid4().hex}:"  # tests share one Redis


def _process(
    rpm: int = 10,
    concurrent: int = 100,
    *,
    prefix: str,
    clock: Clock | None = None,
    url: str = REDIS,
    lease_s: float = LEASE_S,
) -> RedisLimiter:
    """One gateway process's limiter, on a Redis client of its own."""
    client = closing(connect(url))
    return closing(
        RedisLimiter(client, _tiers(rpm, concurrent), prefix=prefix, clock=clock, lease_s=lease_s)
    )


async def _one_request(limiter: RedisLimiter, user: str = "alice") -> None:
    async with limiter.admit(user, "free", ErrorContext()):
        pass


async def _outcome(limiter: RedisLimiter) -> RateLimited | None:
    try:
        await _one_request(limiter)
    except RateLimited as refused:
        return refused
    return None


async def _server_time(redis: Redis) -> float:
    seconds, micros = await redis.time()
    return float(seconds) + micros / 1_000_000


async def test_thirty_requests_over_two_processes_admit_exactly_ten_with_true_waits() -> None:
    prefix = _prefix()
    one, two = _process(prefix=prefix), _process(prefix=prefix)
    observer = closing(connect(REDIS))
    before = await _server_time(observer)
    outcomes = await asyncio.gather(*(_outcome((one, two)[i % 2]) for i in range(30)))
    after = await _server_time(observer)
    refusals = [o for o in outcomes if o is not None]
    assert outcomes.count(None) == 10
    assert len(refusals) == 20
    for refused in refusals:
        assert refused.message == "sincere's free-tier limit of 10 requests per minute is reached"
        assert refused.retry_after_source is RetryAfterSource.TIER_LIMIT
        # The oldest admitted request entered after `before`; the refusal came before
        # `after`: the true wait lies in between.
        assert refused.retry_after is not None
        assert 60 - (after - before) <= refused.retry_after <= 60


async def test_the_wait_is_when_the_oldest_request_of_any_process_leaves_the_window() -> None:
    prefix, clock = _prefix(), Clock()
    one, two = _process(2, prefix=prefix, clock=clock), _process(2, prefix=prefix, clock=clock)
    await _one_request(one)
    clock.now += 15
    await _one_request(two)
    refused = await _outcome(one)
    assert refused is not None
    assert refused.retry_after == pytest.approx(45)
    assert refused.suggestions == ("Retry after 45 s, when the window has room again.",)
    clock.now += 44.9
    assert await _outcome(two) is not None
    clock.now += 0.1
    assert await _outcome(two) is None  # the first request left the window


async def test_the_concurrency_limit_holds_across_processes_and_gives_no_wait() -> None:
    prefix = _prefix()
    one, two = _process(concurrent=2, prefix=prefix), _process(concurrent=2, prefix=prefix)
    async with one.admit("alice", "free", ErrorContext()):
        async with two.admit("alice", "free", ErrorContext()):
            refused = await _outcome(one)
            assert await _outcome(two) is not None
            await _one_request(two, "bob")  # another user's slots are their own
        await _one_request(one)  # the second process's slot came back
    assert refused is not None
    assert refused.message == "sincere's free-tier limit of 2 concurrent requests is reached"
    assert refused.retry_after is None


async def _fails(limiter: RedisLimiter) -> None:
    with pytest.raises(RuntimeError):
        async with limiter.admit("alice", "free", ErrorContext()):
            raise RuntimeError("the cascade failed")


async def _is_cancelled(limiter: RedisLimiter) -> None:
    admitted = asyncio.Event()

    async def request() -> None:
        async with limiter.admit("alice", "free", ErrorContext()):
            admitted.set()
            await asyncio.Event().wait()  # the answer never comes: the client left

    task = asyncio.create_task(request())
    await admitted.wait()
    assert await _outcome(limiter) is not None  # held while the request runs
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _stream_closed_early(limiter: RedisLimiter) -> None:
    async def stream() -> AsyncGenerator[str, None]:
        async with limiter.admit("alice", "free", ErrorContext()):
            yield "Hello"
            yield " world"

    body = stream()
    assert await anext(body) == "Hello"
    assert await _outcome(limiter) is not None
    await body.aclose()  # the client went away after the first chunk


@pytest.mark.parametrize("ending", [_fails, _is_cancelled, _stream_closed_early])
async def test_a_request_releases_its_slot_however_it_ends(
    ending: Callable[[RedisLimiter], Awaitable[None]],
) -> None:
    limiter = _process(concurrent=1, prefix=_prefix())
    await ending(limiter)
    await _one_request(limiter)


async def test_a_running_request_keeps_its_slot_past_the_lease_by_renewing_it() -> None:
    prefix, clock = _prefix(), Clock()
    one, two = _process(prefix=prefix, clock=clock), _process(prefix=prefix, clock=clock)
    async with one.admit("alice", "free", ErrorContext()):
        clock.now += LEASE_S * 0.8
        await one.renew()
        clock.now += LEASE_S * 0.8  # past the first lease: renewed, so still held
        assert await _outcome(_process(concurrent=1, prefix=prefix, clock=clock)) is not None
    assert await _outcome(_process(concurrent=1, prefix=prefix, clock=clock)) is None
    assert await _outcome(two) is None


# A gateway process that takes a slot, says so, and is then killed with SIGKILL.
_HOLDER = """
import asyncio, sys
from sincere.backends.redis import connect
from sincere.backends.redis.limits import RedisLimiter
from sincere.config import TierLimits
from sincere.errors import ErrorContext

async def main() -> None:
    tiers = {"free": TierLimits(requests_per_minute=100, concurrent_requests=1)}
    clock = lambda: float(sys.argv[2])
    limiter = RedisLimiter(connect(sys.argv[3]), tiers, prefix=sys.argv[1], clock=clock)
    async with limiter.admit("alice", "free", ErrorContext()):
        print("holding", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_the_slot_of_a_process_killed_mid_request_is_free_within_the_lease() -> None:
    prefix, clock = _prefix(), Clock()
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOLDER,
        prefix,
        str(clock.now),
        REDIS,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert holder.stdout is not None
    assert await holder.stdout.readline() == b"holding\n"
    holder.send_signal(signal.SIGKILL)  # no release, no goodbye
    await holder.wait()
    survivor = _process(concurrent=1, prefix=prefix, clock=clock)
    clock.now += LEASE_S - 0.01
    refused = await _outcome(survivor)
    assert refused is not None
    assert refused.message == "sincere's free-tier limit of 1 concurrent requests is reached"
    clock.now += 0.01
    assert await _outcome(survivor) is None  # the dead holder's lease ran out


async def test_with_redis_down_a_process_enforces_the_full_limit_alone() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    limiter = _process(2, prefix=_prefix(), url=f"redis://127.0.0.1:{port}/0")
    await _one_request(limiter)
    await _one_request(limiter)
    refused = await _outcome(limiter)  # never a Redis error: sincere's own limit, in memory
    assert refused is not None
    assert refused.message == "sincere's free-tier limit of 2 requests per minute is reached"


class SilenceableProxy:
    """A TCP proxy to Redis that can go silent (accepting, never answering) and come back."""

    def __init__(self) -> None:
        self.silent = False
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._connections: set[asyncio.Task[object]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    def go_silent(self) -> None:
        self.silent = True

    def come_back(self) -> None:
        self.silent = False
        for writer in self._writers:  # the silent connections are dead for good
            writer.close()
        self._writers.clear()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        self.come_back()  # every connection ends: its pipes see the end of their streams
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._writers.append(writer)
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._writers.append(upstream_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if not self.silent:
                    dst.write(data)
            dst.close()

        await asyncio.gather(
            pipe(reader, upstream_writer), pipe(upstream_reader, writer), return_exceptions=True
        )


async def test_redis_unreachable_divides_the_limit_and_exactness_returns_with_it() -> None:
    proxy = closing(SilenceableProxy())
    url, prefix, clock = await proxy.start(), _prefix(), Clock()
    # A long lease: the heartbeats renew only when the test says so.
    one, two = (_process(prefix=prefix, clock=clock, url=url, lease_s=600) for _ in range(2))
    await _one_request(one)
    await _one_request(two)
    await one.renew()  # both processes are seen alive
    assert one.live_processes == 2

    proxy.go_silent()
    outcomes = [await _outcome(one) for _ in range(10)]  # none fails for Redis's sake
    refusals = [o for o in outcomes if o is not None]
    assert outcomes.count(None) == 5  # this process's half of the ten
    assert {r.message for r in refusals} == {
        "sincere's free-tier limit of 5 requests per minute is reached"
    }

    proxy.come_back()
    clock.now += RETRY_REDIS_S  # Redis is asked again: the fleet's window, exact
    outcomes = await asyncio.gather(*(_outcome((one, two)[i % 2]) for i in range(20)))
    assert outcomes.count(None) == 8  # ten per minute, two of them taken before the outage


async def test_a_slot_granted_to_a_request_that_stopped_waiting_is_freed_at_once() -> None:
    # The client left while its admission was on its way: Redis grants the slot all the
    # same, and it must not stay taken until its lease runs out.
    prefix = _prefix()
    limiter = _process(concurrent=1, prefix=prefix)
    entered = asyncio.Event()

    async def request() -> None:
        async with limiter.admit("alice", "free", ErrorContext()):
            entered.set()

    task = asyncio.create_task(request())
    await asyncio.sleep(0)  # its admission is queued for the next round trip
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not entered.is_set()
    redis = closing(connect(REDIS))
    slots = f"{prefix}limits:slots:alice"
    for _ in range(200):  # granted, then freed in the round trip after
        if await redis.exists(f"{prefix}limits:window:alice") and not await redis.zcard(slots):
            break
        await asyncio.sleep(0.01)
    assert await redis.zcard(slots) == 0
    assert await _outcome(_process(concurrent=1, prefix=prefix)) is None  # free elsewhere


async def test_a_release_survives_a_request_cancelled_at_every_await() -> None:
    # Under Starlette a request stopped by its client runs its cleanup in a cancel scope
    # that cancels every await: its slot must be released all the same.
    prefix = _prefix()
    limiter = _process(concurrent=1, prefix=prefix)
    scopes: list[anyio.CancelScope] = []
    admitted = asyncio.Event()

    async def request() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            async with limiter.admit("alice", "free", ErrorContext()):
                admitted.set()
                await asyncio.Event().wait()  # the answer never comes: the client leaves

    task = asyncio.create_task(request())
    await admitted.wait()
    scopes[0].cancel()
    await task
    other = _process(concurrent=1, prefix=prefix)
    for _ in range(200):
        if await _outcome(other) is None:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the slot of the cancelled request was never released")
