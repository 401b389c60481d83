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
