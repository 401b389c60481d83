"""Event stream epochs: a new one per process, so its event ids never repeat an earlier one's."""

from __future__ import annotations

import time

from sqlalchemy import insert

from sincere.backends.sql.database import Database
from sincere.backends.sql.schema import event_streams


def start_event_stream(db: Database) -> int:
    """A new epoch, larger than every epoch handed out before on this database.

    Synchronous on purpose: it runs once, while the process is built and before any request
    is served (as the migrations do), so there is no event loop for it to hold up.
    """
    with db.engine.begin() as conn:
        result = conn.execute(insert(event_streams).values(started_at=time.time()))
        (epoch,) = result.inserted_primary_key or (None,)
    if not isinstance(epoch, int):  # pragma: no cover - every supported backend returns it
        raise RuntimeError("the store did not return the new event stream's epoch")
    return epoch
