"""One round trip for what every Redis backend of a process has waiting.

A request touches Redis at its start (its start event, its admission) and at its end (its
terminal event, its slot's release). Sent apart, each would be a round trip of its own,
with its syscalls and wake-ups on both sides. Here each part (the event bus, the limiter,
the breakers' successes) stages what it has waiting into one pipeline, sent by one task,
one pipeline at a time:
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

import hiredis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from sincere.backends.redis import COMMAND_TIMEOUT_S

DOWN = (RedisError, OSError, TimeoutError)  # Redis unreachable, timed out, refused, restarting

# A part's staged work learns its replies (in staging order), or what made the trip fail.
Staged = Callable[[Sequence[Any] | BaseException], None]


Command = tuple[Any, ...]  # a command and its arguments, as redis-py packs them


class Part(Protocol):
    def stage(self, commands: list[Command]) -> Staged | None:
        """Append the commands waiting to ``commands``; None when nothing waits."""
        ...


class RoundTrips:
    """The round trips of one Redis client, shared by the parts that join it, on a
    connection of their own (no pool, no per-command bookkeeping: one write, one read)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        pool = redis.connection_pool
        self._conn = pool.connection_class(**pool.connection_kwargs)
        self._parts: list[Part] = []
        self._scripts: dict[str, str] = {}  # SHA1 -> source
        self._loaded = False
        self._task: asyncio.Task[None] | None = None

    def script(self, source: str) -> str:
        """Register a script; its SHA1, for ``EVALSHA``."""
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
            commands: list[Command] = []
            staged: list[tuple[Staged, int, int]] = []
            for part in self._parts:
                start = len(commands)
                done = part.stage(commands)
                if done is not None:
                    staged.append((done, start, len(commands)))
            if not staged:
                return
            try:
                async with asyncio.timeout(COMMAND_TIMEOUT_S):
                    if not self._loaded:
                        await self._load()
                    try:
                        replies = await self._execute(commands)
                    except RedisConnectionError:
                        # A connection that Redis closed while idle (it restarted, or a
                        # proxy dropped it): once more, on a new one. If the first try was
                        # applied after all: events are written twice (at least once), an
                        # admission holds its one slot (the same id) and may see itself
                        # at a limit's edge, a release or a count is repeated harmlessly.
                        replies = await self._execute(commands)
            except DOWN as exc:
                for done, _, _ in staged:
                    done(exc)
                continue
            if any(isinstance(reply, NoScriptError) for reply in replies):
                self._loaded = False
            for done, start, end in staged:
                done(replies[start:end])

    async def _execute(self, commands: list[Command]) -> list[Any]:
        conn = self._conn
        try:
            # hiredis packs in C (redis-py's own packing costs several times more).
            packed = b"".join(map(hiredis.pack_command, commands))
            await conn.send_packed_command(packed)  # connects first if it has to
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as error:  # that command's reply: the others stand
                    replies.append(error)
            return replies
        except BaseException:
            await conn.disconnect()  # part of a reply may still be on its way
            raise

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
        await self._conn.disconnect()
