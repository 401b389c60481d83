"""Gateway processes: when each one observed its services (the status page's observed time)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_processes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("last_seen_at", sa.Float, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_gateway_processes_last_seen_at", "gateway_processes", ["last_seen_at"])


def downgrade() -> None:
    op.drop_table("gateway_processes")
