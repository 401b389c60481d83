"""One round trip for what every Redis backend of a process has waiting.

A request touches Redis at its start (its start event, its admission) and at its end (its
terminal event, its slot's release). Sent apart, each would be a round trip of its own,
with its syscalls and wake-ups on both sides. Here each part (the event bus, the limiter)
stages what it has waiting into one pipeline, sent by one task, one pipeline at a time:
at concurrency 1 a request's start is one round trip and its end another, and under load
one round trip carries the work of many requests. Commands run in the order staged, and
one pipeline runs after the other: what a part staged first, Redis applied first.

Scripts are called by SHA1: loaded once per client, and again when Redis answers
NOSCRIPT (it restarted, or was flushed); a part keeps such work for the next trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from sincere.backends.redis import COMMAND_TIMEOUT_S

DOWN = (RedisError, OSError, TimeoutError)  # Redis unreachable, timed out, refused, restarting

# A part's staged work learns its replies (in staging order), or what made the trip fail.
Staged = Callable[[Sequence[Any] | BaseException], None]


class Part(Protocol):
    def stage(self, pipe: Pipeline) -> Staged | None:
        """Add the commands waiting to ``pipe``; None when nothing waits."""
        ...


class RoundTrips:
    """The pipelines of one Redis client, shared by the parts that join it."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._parts: list[Part] = []
        self._scripts: dict[str, str] = {}  # SHA1 -> source
        self._loaded = False
        self._task: asyncio.Task[None] | None = None

    def script(self, source: str) -> str:
        """Register a script; its SHA1, for ``pipe.evalsha``."""
        sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self._scripts[sha] = source
        self._loaded = False
        return sha

    def join(self, part: Part) -> None:
        """Stage ``part``'s work in every trip (parts are staged in the order they joined)."""
        self._parts.append(part)

    def wake(self) -> None:
        """Make a trip soon, if none is under way (the running one looks again when done)."""
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), name="sincere-redis-trips")

    async def _run(self) -> None:
        while True:
            async with self._redis.pipeline(transaction=False) as pipe:
                staged: list[tuple[Staged, int, int]] = []
                for part in self._parts:
                    start = len(pipe)
                    done = part.stage(pipe)
                    if done is not None:
                        staged.append((done, start, len(pipe)))
                if not staged:
                    return
                commands = list(pipe.command_stack)
                try:
                    async with asyncio.timeout(COMMAND_TIMEOUT_S):
                        if not self._loaded:
                            await self._load()
                        try:
                            replies = await pipe.execute(raise_on_error=False)
                        except RedisConnectionError:
                            # A pooled connection that Redis closed (it restarted, or a
                            # proxy dropped it): once more, on a new one. Every command
                            # staged is safe to repeat (see the parts).
                            for args, options in commands:
                                pipe.execute_command(*args, **options)
                            replies = await pipe.execute(raise_on_error=False)
                except DOWN as exc:
                    for done, _, _ in staged:
                        done(exc)
                    continue
            if any(isinstance(reply, NoScriptError) for reply in replies):
                self._loaded = False
            for done, start, end in staged:
                done(replies[start:end])

    async def _load(self) -> None:
        for source in self._scripts.values():
            await self._redis.script_load(source)
        self._loaded = True

    async def aclose(self) -> None:
        """Let the trip under way finish (it is bounded), then stop."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(COMMAND_TIMEOUT_S * 2):
                    await asyncio.shield(self._task)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
