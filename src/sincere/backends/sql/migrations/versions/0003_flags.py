"""Runtime flags: each one's current value, and every change with who made it and when."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flags",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("changed_at", sa.Float, nullable=False),
        sa.Column("changed_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "flag_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("changed_by", sa.String(200), nullable=False),
    )
    op.create_index("ix_flag_changes_name_at", "flag_changes", ["name", "at"])


def downgrade() -> None:
    op.drop_index("ix_flag_changes_name_at", table_name="flag_changes")
    op.drop_table("flag_changes")
    op.drop_table("flags")
