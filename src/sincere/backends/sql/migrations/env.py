"""Alembic environment: migrations run on the connection handed over by ``upgrade``."""

from __future__ import annotations

from alembic import context

from sincere.backends.sql.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
