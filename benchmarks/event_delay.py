"""Cross-process event delay on the Redis event bus: publish in one process, receipt in another.

    .venv/bin/python -m benchmarks.event_delay [--events 2000] [--interval-ms 2]
        [--idle-users 0 1000] [--others 0 9] [--redis redis://127.0.0.1:6379/0]

This process subscribes to one user's events on its own ``RedisEventBus`` (its own client
and reader, as a gateway process has), plus ``--idle-users`` subscriptions of other users
who receive nothing (a process with that many connected users). It then starts a
publisher process with its own bus and client, which publishes ``--events`` events (after
100 not counted, to warm up) one every ``--interval-ms``, each carrying the moment it was
handed to ``publish`` (``time.monotonic_ns``: one clock for every process on Linux), and
after each, ``--others`` events of users nobody here subscribed to (the rest of the
fleet's traffic, which every process's reader reads and passes over). The delay of an
event is from that moment to the moment this process's subscriber gets it: the
publish's round trip to Redis, the reader's blocked XREAD waking, parsing, the
subscriber's queue. Every combination of ``--idle-users`` and ``--others`` is measured;
reported for each: p50, p90, p99 and the maximum. Both processes run on uvloop when
it is installed, as the server does. Every key is under a prefix of this run's own and is
deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

from rich.progress import Progress

from sincere.backends.redis import connect
from sincere.backends.redis.events import RedisEventBus
from sincere.events import EventType

WARMUP = 100
USER = "bench-user"


async def _publisher(url: str, prefix: str, events: int, interval_s: float, others: int) -> None:
    redis = connect(url)
    bus = RedisEventBus(redis, prefix=prefix)
    next_at = time.monotonic()
    for i in range(WARMUP + events):
        next_at += interval_s
        await bus.publish(
            USER, EventType.REQUEST_STARTED, "bench", data={"i": i, "t": time.monotonic_ns()}
        )
        await asyncio.gather(
            *(bus.publish(f"other-{n}", EventType.REQUEST_STARTED, "bench") for n in range(others))
        )
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await bus.aclose()
    await redis.aclose()


async def _measure(
    args: argparse.Namespace, idle_users: int, others: int, progress: Progress
) -> tuple[list[float], float, float]:
    """The delays (ms), the fleet's events per second as they were published, and this
    process's CPU time per 1,000 of the fleet's events (its reader reads every one)."""
    url, events, interval_ms = args.redis, args.events, args.interval_ms
    prefix = f"bench:{uuid.uuid4().hex}:"
    redis = connect(url)
    bus = RedisEventBus(redis, prefix=prefix)
    idle = [await bus.subscribe(f"idle-{n}") for n in range(idle_users)]
    sub = await bus.subscribe(USER)
    cpu = time.process_time()
    publisher = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "benchmarks.event_delay", "--publish", prefix),
        *("--redis", url, "--events", str(events), "--interval-ms", str(interval_ms)),
        *("--others", str(others)),
    )
    label = f"{idle_users} idle users, {others} others per event"
    task = progress.add_task(label, total=WARMUP + events)
    delays: list[float] = []
    sent: list[int] = []
    try:
        for _ in range(WARMUP + events):
            event = await anext(sub)
            arrived = time.monotonic_ns()
            if event.data["i"] >= WARMUP:
                delays.append((arrived - event.data["t"]) / 1e6)
                sent.append(event.data["t"])
            progress.advance(task)
        cpu = time.process_time() - cpu
    finally:
        async with asyncio.timeout(60):
            await publisher.wait()
        for s in (sub, *idle):
            s.close()
        await bus.aclose()
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    if publisher.returncode != 0:
        raise RuntimeError(f"the publisher failed (exit {publisher.returncode})")
    fleet_events = (WARMUP + events) * (1 + others)
    rate = (len(sent) - 1) * (1 + others) / ((sent[-1] - sent[0]) / 1e9)
    return delays, rate, cpu * 1000 / fleet_events * 1000


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(args: argparse.Namespace) -> None:
    results: dict[tuple[int, int], tuple[list[float], float, float]] = {}
    with Progress() as progress:
        for idle_users in args.idle_users:
            for others in args.others:
                results[idle_users, others] = await _measure(args, idle_users, others, progress)
    load = os.getloadavg()[0]
    print(
        f"\n{args.events} events, one every {args.interval_ms} ms, publisher and subscriber "
        f"in separate processes, Redis at {args.redis} (load average {load:.1f})\n"
    )
    print(
        "| users subscribed in the receiving process | fleet events/s | p50 | p90 | p99 | max "
        "| receiving process's CPU per 1,000 fleet events |"
    )
    print("|---|---|---|---|---|---|---|")
    for (idle_users, _), (delays, rate, cpu_ms) in results.items():
        cells = " | ".join(f"{_p(delays, q):.2f} ms" for q in (0.5, 0.9, 0.99))
        print(
            f"| {idle_users + 1} | {rate:.0f} | {cells} | {max(delays):.2f} ms | {cpu_ms:.0f} ms |"
        )


def _run(coro: object) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
    else:
        uvloop.run(coro)  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--interval-ms", type=float, default=2.0)
    parser.add_argument("--idle-users", type=int, nargs="+", default=[0, 1000])
    parser.add_argument("--others", type=int, nargs="+", default=[0, 9])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--publish", metavar="PREFIX", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        interval_s = args.interval_ms / 1000
        _run(_publisher(args.redis, args.publish, args.events, interval_s, args.others[0]))
    else:
        _run(main(args))
