"""Telemetry: one row per attempt of every request."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telemetry_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("tier", sa.String(20), nullable=False),
        sa.Column("surface", sa.String(20), nullable=False),
        sa.Column("requested_model", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("deployment", sa.String(200), nullable=True),
        sa.Column("outcome", sa.String(60), nullable=False),
        sa.Column("final", sa.Boolean, nullable=False),
        sa.Column("request_outcome", sa.String(60), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("latency_s", sa.Float, nullable=False),
        sa.Column("tokens_in", sa.Integer, nullable=True),
        sa.Column("tokens_out", sa.Integer, nullable=True),
        sa.Column("cost_usd", sa.Float, nullable=True),
        sa.Column("ttft_s", sa.Float, nullable=True),
        sa.Column("queue_wait_s", sa.Float, nullable=True),
        sa.Column("request_latency_s", sa.Float, nullable=True),
        sa.Column("request_cost_usd", sa.Float, nullable=True),
        sa.Column("request_rows", sa.Integer, nullable=True),
    )
    op.create_index(
        "ux_telemetry_attempts_request",
        "telemetry_attempts",
        ["request_id", "attempt"],
        unique=True,
    )
    op.create_index("ix_telemetry_attempts_at", "telemetry_attempts", ["at"])
    op.create_index("ix_telemetry_attempts_user_at", "telemetry_attempts", ["user_id", "at"])


def downgrade() -> None:
    op.drop_table("telemetry_attempts")
