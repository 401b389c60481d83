"""The ports on Redis, for a fleet of gateway processes ([cluster] redis_url).

Every key a backend writes starts with its ``prefix`` (default ``sincere:``), so that
several gateways (or tests) can share one Redis without seeing each other's state.
"""

from __future__ import annotations

from redis.asyncio import Redis

# Every command waits at most this long: a Redis that is down or unreachable costs a
# request a bounded wait, never a hang.
COMMAND_TIMEOUT_S = 0.5
DEFAULT_PREFIX = "sincere:"


def connect(url: str) -> Redis:
    """An asyncio client for ``url`` (it connects on first use, in the loop that uses it)."""
    return Redis.from_url(
        url,
        socket_timeout=COMMAND_TIMEOUT_S,
        socket_connect_timeout=COMMAND_TIMEOUT_S,
        health_check_interval=10,
    )
