"""Tables, in SQLAlchemy Core. Alembic migrations under ``migrations/`` create them."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),  # public id, e.g. key_1a2b3c4d
    Column("key_hash", String(64), nullable=False, unique=True),  # sha256 hex of the key
    Column("prefix", String(24), nullable=False),  # shown in listings to recognise a key
    Column("user_id", String(200), nullable=False),
    Column("tier", String(20), nullable=False),
    Column("role", String(20), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("contact", String(320), nullable=True),  # an email address, given by the operator
)

service_transitions = Table(
    "service_transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("service", String(200), nullable=False),
    Column("state", String(20), nullable=False),
    Column("message", Text, nullable=False),
    Column("at", Float, nullable=False),
    Index("ix_service_transitions_service_at", "service", "at"),
)

# One row per gateway process that observed its services (the status page's checks ran):
# when it started and when it last said it was still observing. Time no process observed
# is "no data" on the status page, never up nor down.
gateway_processes = Table(
    "gateway_processes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
    Index("ix_gateway_processes_last_seen_at", "last_seen_at"),
    sqlite_autoincrement=True,  # never reuse an id, even one whose row is gone
)

# One row per event stream (a process's event bus): its epoch numbers that process's event ids.
event_streams = Table(
    "event_streams",
    metadata,
    Column("epoch", Integer, primary_key=True, autoincrement=True),
    Column("started_at", Float, nullable=False),
    sqlite_autoincrement=True,  # never reuse an epoch, even one whose row is gone
)

# Runtime flags (sincere flags, /admin/flags): the current value of each flag set so far (a
# flag without a row has its default), and every change with who made it.
flags = Table(
    "flags",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("enabled", Boolean, nullable=False),
    Column("changed_at", Float, nullable=False),
    Column("changed_by", String(200), nullable=False),
)

flag_changes = Table(
    "flag_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("at", Float, nullable=False),
    Column("changed_by", String(200), nullable=False),
    Index("ix_flag_changes_name_at", "name", "at"),
)

# Escalation (tiers/escalation.py): one incident per deployment outage and failure class,
# a ticket per failed request of an escalating tier, and the outbox of notifications.
incidents = Table(
    "incidents",
    metadata,
    Column("id", String(32), primary_key=True),  # inc_…
    Column("dedup_key", String(255), nullable=False),  # deployment and failure class
    # The dedup key while the incident is open, NULL once resolved: unique, so two processes
    # failing at once find one open incident (NULLs never collide, on SQLite and PostgreSQL).
    Column("open_key", String(255), nullable=True, unique=True),
    Column("deployment", String(200), nullable=False),
    Column("failure_class", String(64), nullable=False),
    Column("state", String(20), nullable=False),  # open | resolved
    Column("opened_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("resolved_at", Float, nullable=True),
    Column("ticket_count", Integer, nullable=False),
    Index("ix_incidents_deployment_state", "deployment", "state"),
    Index("ix_incidents_opened_at", "opened_at"),
)

tickets = Table(
    "tickets",
    metadata,
    Column("id", String(32), primary_key=True),  # tkt_…
    Column("incident_id", String(32), nullable=False),
    Column("request_id", String(200), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("tier", String(20), nullable=False),
    Column("error_type", String(64), nullable=False),
    Column("status", Integer, nullable=False),  # the HTTP status the caller received
    Column("message", Text, nullable=False),  # the error's message, as the caller read it
    Column("contact", String(320), nullable=True),
    Column("created_at", Float, nullable=False),
    Index("ix_tickets_incident_id", "incident_id"),
    Index("ix_tickets_created_at", "created_at"),
)

# The outbox: one row per (incident event, destination), written in the transaction that
# changed the incident; the relay delivers it and records every attempt.
deliveries = Table(
    "deliveries",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # the order of writing
    Column("id", String(40), nullable=False, unique=True),  # msg_…: the webhook-id
    Column("incident_id", String(32), nullable=False),
    Column("event_type", String(40), nullable=False),  # incident.opened | .updated | .resolved
    Column("destination", String(300), nullable=False),  # webhook:<url without query> | pagerduty
    Column("payload", Text, nullable=False),  # the JSON body (PagerDuty's without routing key)
    Column("created_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("claimed_until", Float, nullable=True),  # a relay is sending it until then
    Column("attempts", Integer, nullable=False),  # attempts of the current schedule
    Column("delivered_at", Float, nullable=True),
    Column("dead", Boolean, nullable=False),  # the schedule ran out: replay by hand
    Index("ix_deliveries_due", "delivered_at", "dead", "next_attempt_at"),
    Index("ix_deliveries_incident_id", "incident_id"),
    sqlite_autoincrement=True,
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", String(40), nullable=False),
    Column("at", Float, nullable=False),
    Column("status", Integer, nullable=True),  # the receiver's HTTP status; NULL: no answer
    Column("latency_ms", Float, nullable=False),
    Column("error", String(200), nullable=True),  # a class of failure, never a secret or URL
    Index("ix_delivery_attempts_delivery_id", "delivery_id"),
)

# Telemetry: one row per attempt of every request (sincere.telemetry.AttemptRow). NULL is
# unknown, never 0. Indexes: by time (windows, retention), by user and time (a user's own
# traffic), the deciding rows by time (request-level figures).
telemetry_attempts = Table(
    "telemetry_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("tier", String(20), nullable=False),
    Column("surface", String(20), nullable=False),
    Column("requested_model", String(200), nullable=False),
    Column("model", String(200), nullable=True),
    Column("deployment", String(200), nullable=True),
    Column("outcome", String(60), nullable=False),
    Column("final", Boolean, nullable=False),
    Column("request_outcome", String(60), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("latency_s", Float, nullable=False),
    Column("tokens_in", Integer, nullable=True),
    Column("tokens_out", Integer, nullable=True),
    Column("cost_usd", Float, nullable=True),
    Column("ttft_s", Float, nullable=True),
    Column("queue_wait_s", Float, nullable=True),
    Column("request_latency_s", Float, nullable=True),
    Column("request_cost_usd", Float, nullable=True),
    Column("request_rows", Integer, nullable=True),
    Index("ux_telemetry_attempts_request", "request_id", "attempt", unique=True),
    Index("ix_telemetry_attempts_at", "at"),
    Index("ix_telemetry_attempts_user_at", "user_id", "at"),
)
