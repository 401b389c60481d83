"""The durable store: API keys and service history (SQLite by default, PostgreSQL by URL)."""

from sincere.backends.sql.database import Database, open_database
from sincere.backends.sql.history import SqlServiceHistory
from sincere.backends.sql.keys import SqlKeyStore
from sincere.backends.sql.streams import start_event_stream

__all__ = [
    "Database",
    "SqlKeyStore",
    "SqlServiceHistory",
    "open_database",
    "start_event_stream",
]
