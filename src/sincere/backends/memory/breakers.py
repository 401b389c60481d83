"""The breakers port in one process: a CircuitBreaker per deployment, in memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from sincere.llm.breaker import (
    BreakerAdmission,
    BreakerPolicy,
    BreakerTransition,
    CircuitBreaker,
)


class InProcessBreakers:
    """``Breakers`` for one process: each deployment's breaker lives here and nowhere else.

    Every call is answered at once (no I/O); the methods are async because the port is,
    so that a shared backend (Redis) can sit behind the same calls.
    """

    def __init__(
        self,
        deployments: Iterable[str],
        policy: BreakerPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._breakers = {
            name: CircuitBreaker(name, policy, clock, wall_clock) for name in deployments
        }

    def __getitem__(self, deployment: str) -> CircuitBreaker:
        """The breaker itself, for code in this process that drives it directly (tests)."""
        return self._breakers[deployment]

    def names(self) -> Sequence[str]:
        return list(self._breakers)

    def view(self, deployment: str) -> CircuitBreaker:
        return self._breakers[deployment]

    async def admit(self, deployment: str) -> tuple[BreakerAdmission, BreakerTransition | None]:
        return self._breakers[deployment].admit()

    async def release(self, deployment: str) -> None:
        self._breakers[deployment].release()

    async def record_success(
        self, deployment: str, reason: str = "its probe succeeded"
    ) -> BreakerTransition | None:
        return self._breakers[deployment].record_success(reason)

    async def record_failure(
        self, deployment: str, reason: str, open_for_s: float | None = None
    ) -> BreakerTransition | None:
        return self._breakers[deployment].record_failure(reason, open_for_s)

    async def probe_due(self, deployment: str, for_s: float = 0.0) -> bool:
        return self._breakers[deployment].probe_due(for_s)
