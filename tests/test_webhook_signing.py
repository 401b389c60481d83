"""Standard Webhooks signatures and the bodies incidents become."""

from __future__ import annotations

import json

import pytest

from sincere.config import EscalationConfig, PagerDutyConfig, WebhookConfig
from sincere.tiers import signing
from sincere.tiers.incidents import (
    Incident,
    IncidentEvent,
    IncidentState,
    Ticket,
    dedup_key,
    destinations,
    notifications,
)
from tests.webhooks import SECRET, Received, verify

# The example of the Standard Webhooks specification (and Svix's documentation).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_signature_is_the_specifications_example() -> None:
    assert signing.sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_headers_verify_with_an_independent_implementation() -> None:
    body = b'{"type":"incident.opened"}'
    headers = signing.headers(SECRET, "msg_1", 1700000000, body)
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == "1700000000"
    assert verify(SECRET, Received(headers, body, 200))
    assert not verify(SECRET, Received(headers, body + b" ", 200))


def test_a_secret_that_is_not_base64_is_refused_without_being_quoted() -> None:
    with pytest.raises(signing.InvalidSecret) as info:
        signing.sign("whsec_not base64!", "msg_1", 1, b"")
    assert "not base64!" not in str(info.value)


INCIDENT = Incident(
    id="inc_1",
    dedup_key=dedup_key("up", "service_unavailable"),
    deployment="up",
    failure_class="service_unavailable",
    state=IncidentState.OPEN,
    opened_at=1700000000.0,
    updated_at=1700000000.0,
    resolved_at=None,
    ticket_count=1,
)
TICKET = Ticket(
    id="tkt_1",
    incident_id="inc_1",
    request_id="req_1",
    user_id="bob",
    tier="enterprise",
    error_type="service_unavailable",
    status=503,
    message="every route failed",
    contact=None,
    created_at=1700000000.0,
)
CONFIG = EscalationConfig(
    webhooks=(WebhookConfig(url="https://ops.example.com/hooks?token=abc", secret_env="S"),),
    pagerduty=PagerDutyConfig(routing_key_env="PD"),
)


def test_a_webhook_body_has_the_recommended_shape_and_names_no_secret() -> None:
    targets = destinations(CONFIG)
    assert [t.name for t in targets] == ["webhook:https://ops.example.com/hooks", "pagerduty"]
    bodies = notifications(IncidentEvent.OPENED, INCIDENT, [TICKET], targets, 1700000001.0)
    webhook = json.loads(bodies[0][1])
    assert webhook["type"] == "incident.opened"
    assert webhook["timestamp"] == "2023-11-14T22:13:21Z"
    assert webhook["data"]["id"] == "inc_1"
    assert webhook["data"]["tickets"][0]["id"] == "tkt_1"
    assert "token=abc" not in bodies[0][1]


def test_pagerduty_gets_one_trigger_and_one_resolve_per_incident_by_its_dedup_key() -> None:
    targets = destinations(CONFIG)
    trigger = json.loads(notifications(IncidentEvent.OPENED, INCIDENT, [], targets, 1.0)[1][1])
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == "sincere/up/service_unavailable"
    assert trigger["payload"]["severity"] == "critical"
    assert "routing_key" not in trigger  # added from the environment when sent
    updated = notifications(IncidentEvent.UPDATED, INCIDENT, [], targets, 1.0)
    assert [t.name for t, _ in updated] == ["webhook:https://ops.example.com/hooks"]
    resolve = json.loads(notifications(IncidentEvent.RESOLVED, INCIDENT, [], targets, 1.0)[1][1])
    assert resolve == {"event_action": "resolve", "dedup_key": "sincere/up/service_unavailable"}
