"""Runtime flags: features an operator can turn off at once, in every process, to roll back.

Each flag switches a feature that adds to a true answer (a queue, a human told, a stream
continued on another model, a shadow probe, detailed events). None of them can make
sincere answer with text that no model produced: there is no such feature to switch on.
"""

from __future__ import annotations

from enum import StrEnum


class Flag(StrEnum):
    """The flags; every one is on unless an operator turned it off."""

    # Off: a request over a deployment's capacity gets 429 with Retry-After, as before queues.
    QUEUEING = "queueing"
    # Off: no incident, ticket or notification is made for a failed request.
    ESCALATION = "escalation"
    # Off: a stream cut after text ends in an error instead of going on on a prefill fallback.
    STREAM_CONTINUATION = "stream_continuation"
    # Off: open circuits are not tested by shadow probes (a due circuit takes a request).
    SHADOW_PROBE = "shadow_probe"
    # Off: users' streams carry only request_* events, not each service's state changes.
    DETAILED_EVENTS = "detailed_events"


FLAG_DESCRIPTIONS = {
    Flag.QUEUEING: "requests over a deployment's capacity wait in the tier-aware queue",
    Flag.ESCALATION: "failed requests of escalating tiers open incidents, tickets, webhooks",
    Flag.STREAM_CONTINUATION: "a stream cut after text continues on a prefill-capable fallback",
    Flag.SHADOW_PROBE: "open circuits are tested by shadow probes, not users' requests",
    Flag.DETAILED_EVENTS: "users' event streams carry every service state change",
}
