"""The durable store: API keys and service history (SQLite by default, PostgreSQL by URL)."""

from sincere.store.database import Database, open_database
from sincere.store.history import ServiceHistory
from sincere.store.keys import KeyRecord, KeyStore, Role
from sincere.store.streams import start_event_stream

__all__ = [
    "Database",
    "KeyRecord",
    "KeyStore",
    "Role",
    "ServiceHistory",
    "open_database",
    "start_event_stream",
]
