"""Why a request was stopped before it ended, as the edges say it and the cascade reports it.

An edge stops a request by cancelling the task that runs it with the reason as the
cancellation message (``task.cancel(StopReason.CLIENT_GONE)``); the cascade reads it back
with ``stop_reason`` for the ``request_failed`` event that ends the user's stream.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum


class StopReason(StrEnum):
    CLIENT_GONE = "client_gone"  # the client closed its connection
    SHUTTING_DOWN = "shutting_down"  # the gateway's shutdown grace period ran out
    CANCELLED = "cancelled"  # anything else that cancelled it (Ctrl-C, a caller's task)

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    StopReason.CLIENT_GONE: "the client went away before the answer was complete",
    StopReason.SHUTTING_DOWN: "the gateway is shutting down",
    StopReason.CANCELLED: "the request was cancelled",
}


def stop_reason(exc: BaseException) -> StopReason:
    """The reason a cancellation carries as its message, else ``CANCELLED``."""
    if isinstance(exc, asyncio.CancelledError) and exc.args and isinstance(exc.args[0], str):
        try:
            return StopReason(exc.args[0])
        except ValueError:
            pass
    return StopReason.CANCELLED
