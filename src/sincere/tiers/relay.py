"""The relay: delivers the outbox's notifications, retrying on a schedule, recording every
attempt.

One task per process (the server's lifespan). It claims due deliveries for a lease (on
PostgreSQL a fleet's relays never take the same one), sends each with a 15 s limit
(success: a 2xx, as Svix counts it), and records the attempt; a failure is retried after
the next wait of ``[escalation] retry_schedule_s``, and past its end the delivery is dead
until an operator replays it. A process killed mid-send loses nothing: its claim lapses
and another relay (or this one, restarted) sends it again, with the same webhook-id.
Secrets (the webhook's, PagerDuty's routing key) are read from the environment when sent,
and never written to the store, a log or an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import aiohttp

from sincere.config import EscalationConfig, WebhookConfig
from sincere.tiers import signing
from sincere.tiers.incidents import PAGERDUTY, Delivery, DeliveryAttempt, webhook_name

if TYPE_CHECKING:
    from sincere.ports import EscalationStore

log = logging.getLogger("sincere.relay")

SEND_TIMEOUT_S = 15.0  # Svix's: a receiver that takes longer has failed this attempt
# A claim outlives the longest send, so no live relay's delivery is taken from it.
LEASE_S = 2 * SEND_TIMEOUT_S
BATCH = 20  # deliveries claimed at once (sent concurrently)


class _NotSent(Exception):
    """A delivery that could not be sent at all; the message is its class of failure."""


class Relay:
    """Sends due deliveries until cancelled (``run``), or once (``deliver_due``)."""

    def __init__(
        self,
        store: EscalationStore,
        config: EscalationConfig,
        env: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._config = config
        self._env = env
        self._clock = clock
        self._webhooks: dict[str, WebhookConfig] = {webhook_name(w.url): w for w in config.webhooks}
        self._woken: asyncio.Event | None = None

    def wake(self) -> None:
        """Something was written: look now rather than at the next poll."""
        if self._woken is not None:
            self._woken.set()

    async def run(self) -> None:
        self._woken = asyncio.Event()
        async with _session() as session:
            while True:
                self._woken.clear()
                try:
                    while await self.deliver_due(session) > 0:
                        pass
                except Exception:  # the store unreachable, say: the next poll tries again
                    log.warning("the relay could not reach the outbox", exc_info=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), self._config.relay_poll_s)

    async def deliver_due(self, session: aiohttp.ClientSession | None = None) -> int:
        """Claim the due deliveries and send them; how many were claimed."""
        claimed = await self._store.claim(self._clock(), LEASE_S, BATCH)
        if not claimed:
            return 0
        if session is None:
            async with _session() as own:
                await asyncio.gather(*(self._deliver(own, d) for d in claimed))
        else:
            await asyncio.gather(*(self._deliver(session, d) for d in claimed))
        return len(claimed)

    async def _deliver(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        at = self._clock()
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            url, body, headers = self._request(delivery, int(at))
            async with session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                await response.read()
            if not 200 <= status < 300:
                error = f"http_{status}"
        except _NotSent as exc:
            error = str(exc)
        except TimeoutError:
            error = "timeout"
        except aiohttp.ClientError as exc:
            error = _client_error(exc)
        attempt = DeliveryAttempt(
            delivery_id=delivery.id,
            at=at,
            status=status,
            latency_ms=round((time.monotonic() - started) * 1000, 3),
            error=error,
        )
        await self._store.record_attempt(attempt, self._config.retry_schedule_s)
        if not attempt.ok:
            log.info(
                "delivery %s (%s to %s) failed: %s",
                delivery.id,
                delivery.event_type,
                delivery.destination,
                error,
            )

    def _request(self, delivery: Delivery, timestamp: int) -> tuple[str, bytes, dict[str, str]]:
        """The URL, body and headers of one attempt; secrets from the environment, now."""
        if delivery.destination == PAGERDUTY:
            pd = self._config.pagerduty
            if pd is None:
                raise _NotSent("destination_not_configured")
            routing_key = self._env.get(pd.routing_key_env)
            if not routing_key:
                raise _NotSent("routing_key_missing")
            event = {**json.loads(delivery.payload), "routing_key": routing_key}
            body = json.dumps(event, separators=(",", ":")).encode()
            return pd.url, body, {"content-type": "application/json"}
        hook = self._webhooks.get(delivery.destination)
        if hook is None:
            raise _NotSent("destination_not_configured")
        secret = self._env.get(hook.secret_env)
        if not secret:
            raise _NotSent("secret_missing")
        body = delivery.payload.encode()
        try:
            headers = signing.headers(secret, delivery.id, timestamp, body)
        except signing.InvalidSecret:
            raise _NotSent("secret_invalid") from None
        return hook.url, body, {**headers, "content-type": "application/json"}


def _session() -> aiohttp.ClientSession:
    # No cookie jar: one receiver's cookie must not travel to another.
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_S),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def _client_error(exc: aiohttp.ClientError) -> str:
    """A class of failure: an exception's text may quote the URL, which may hold a token."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return (
            "connection_refused"
            if isinstance(exc.os_error, ConnectionRefusedError)
            else ("connection_error")
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "bad_response"
    return "client_error"
