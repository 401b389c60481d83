"""Runtime flags in SQL: one row per flag ever set, and one row per change, who and when.

Every process keeps a copy of the values and reads them again every ``refresh_s`` (1 s) on
a worker thread, so ``enabled`` (on the request path) never waits on the store, and a
change made by any process or by ``sincere flags set`` is in force everywhere within 5 s.
An unreachable store leaves the last values read in force, and fails no request: the
flags only switch features off to roll back, so running on the values of a moment ago is
safer than refusing to serve.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress

from sqlalchemy import Connection, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from sincere.backends.sql.database import Database
from sincere.backends.sql.schema import flag_changes, flags
from sincere.ports import FlagState
from sincere.tiers.flags import Flag

log = logging.getLogger("sincere.flags")

REFRESH_S = 1.0  # a change is read within this (plus one statement) by every process


class SqlFlagStore:
    """``ports.FlagStore`` on the store (SQLite or PostgreSQL), cached per process."""

    def __init__(self, db: Database, refresh_s: float = REFRESH_S) -> None:
        self._db = db
        self._refresh_s = refresh_s
        self._states = {flag: FlagState(flag, True) for flag in Flag}
        self._sets = 0  # a read that a local change overtook must not undo it
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # log an outage once, and its end once

    def enabled(self, flag: Flag) -> bool:
        return self._states[flag].enabled

    def load(self) -> None:
        """Read the values now, synchronously: once, while the process is built."""
        self._states = self._select()

    async def refresh(self) -> None:
        """Read the values again (on a worker thread); a failure leaves the last ones."""
        sets = self._sets
        try:
            states = await self._db.run(self._select)
        except Exception:  # any failure: the last values stay in force (see the module)
            if not self._failing:
                log.warning("reading the flags failed; the last values stay", exc_info=True)
            self._failing = True
            return
        if self._failing:
            log.warning("the flags are read again")
            self._failing = False
        if sets == self._sets:
            self._states = states

    async def set(self, flag: Flag, enabled: bool, by: str) -> FlagState:
        state = FlagState(Flag(flag), enabled, by, time.time())
        await self._db.run(self._write, state)
        self._sets += 1
        self._states = {**self._states, state.flag: state}
        return state

    async def states(self) -> list[FlagState]:
        sets = self._sets
        states = await self._db.run(self._select)
        if sets == self._sets:
            self._states = states
        return list(states.values())

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._keep_fresh(), name="sincere-flags")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def _keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            await self.refresh()

    # The statements, each run on a worker thread (``load`` aside).

    def _select(self) -> dict[Flag, FlagState]:
        with self._db.engine.connect() as conn:
            rows = conn.execute(select(flags)).all()
        states = {flag: FlagState(flag, True) for flag in Flag}
        known = {str(flag): flag for flag in Flag}
        for row in rows:
            r = row._mapping
            flag = known.get(r["name"])
            if flag is not None:  # a flag of another version of sincere is not ours to read
                states[flag] = FlagState(flag, bool(r["enabled"]), r["changed_by"], r["changed_at"])
        return states

    def _write(self, state: FlagState) -> None:
        """The flag's row and its change's row, in one transaction."""
        with self._db.engine.begin() as conn:
            _upsert(conn, state)
            conn.execute(
                insert(flag_changes).values(
                    name=str(state.flag),
                    enabled=state.enabled,
                    at=state.changed_at,
                    changed_by=state.changed_by,
                )
            )


def _upsert(conn: Connection, state: FlagState) -> None:
    """Insert the flag's row or replace its value: one statement, so two processes setting
    a flag for the first time at once do not collide on its key."""
    values = {
        "name": str(state.flag),
        "enabled": state.enabled,
        "changed_at": state.changed_at,
        "changed_by": state.changed_by,
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(flags).values(**values)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[flags.c.name],
            set_={k: statement.excluded[k] for k in ("enabled", "changed_at", "changed_by")},
        )
    )
