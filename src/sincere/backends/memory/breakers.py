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
from sincere.ports import BreakerListener


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

    def listen(self, listener: BreakerListener) -> None:
        """Nothing happens elsewhere: every transition is returned by the call that made it."""

    async def admit(self, deployment: str) -> BreakerAdmission:
        return self._breakers[deployment].admit()

    async def record_success(self, deployment: str) -> BreakerTransition | None:
        return self._breakers[deployment].record_success()

    async def record_failure(
        self, deployment: str, reason: str, open_for_s: float | None = None
    ) -> BreakerTransition | None:
        return self._breakers[deployment].record_failure(reason, open_for_s)

    async def claim_probe(
        self, deployment: str, lease_s: float
    ) -> tuple[bool, BreakerTransition | None]:
        return self._breakers[deployment].claim_probe(lease_s)

    async def probe_succeeded(
        self, deployment: str, reason: str = "its probe succeeded"
    ) -> BreakerTransition | None:
        return self._breakers[deployment].probe_succeeded(reason)

    async def probe_failed(
        self, deployment: str, reason: str, open_for_s: float | None = None
    ) -> BreakerTransition | None:
        return self._breakers[deployment].probe_failed(reason, open_for_s)

    async def release(self, deployment: str) -> None:
        self._breakers[deployment].release()

    async def aclose(self) -> None:
        return None
