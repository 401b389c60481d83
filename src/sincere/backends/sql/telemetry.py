"""Telemetry in SQL: attempts written in batches, read back for the data agent.

A batch is one transaction; a row already written (its ``(request_id, attempt)``) is
skipped, so a batch written again after an interrupted write counts nothing twice. Every
statement runs on a worker thread (``Database.run``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite

from sincere.agents.figures import COST_DECIMALS, NO_DEPLOYMENT
from sincere.agents.usage import GroupBy, GroupFigures
from sincere.availability import DEPLOYMENT_FAILURES, NOT_SENT, AttemptCounts
from sincere.backends.sql.database import Database
from sincere.backends.sql.schema import telemetry_attempts as t
from sincere.telemetry import AttemptRow, percentile

PRUNE_BATCH = 10_000  # rows deleted per statement, so a prune never holds the table long


class SqlTelemetryStore:
    """``ports.TelemetryStore`` on the store (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.source = "sql:" + db.engine.dialect.name

    async def write(self, rows: Sequence[AttemptRow]) -> None:
        if rows:
            await self._db.run(self._write, list(rows))

    async def prune(self, before: float) -> int:
        """Delete the rows older than ``before``; how many."""
        return await self._db.run(self._prune, before)

    async def newest(self) -> float | None:
        """The start time of the newest recorded request (None: nothing recorded)."""
        return await self._db.run(self._newest)

    async def figures(
        self, start: float, end: float, user_id: str | None, group_by: GroupBy, min_samples: int
    ) -> tuple[tuple[GroupFigures, ...], int]:
        """The figures of every group, computed by the database (the rows stay there), and
        how many attempt rows they rest on."""
        return await self._db.run(self._figures, start, end, user_id, group_by, min_samples)

    def _figures(
        self, start: float, end: float, user_id: str | None, group_by: GroupBy, min_samples: int
    ) -> tuple[tuple[GroupFigures, ...], int]:
        with self._db.engine.connect() as conn:
            return figures_sql(conn, start, end, user_id, group_by, min_samples)

    async def attempt_counts(
        self, start: float, end: float, *, by_day: bool
    ) -> list[AttemptCounts]:
        """Per deployment (and UTC day, ``by_day``): the attempts of requests started in
        ``[start, end)`` sent to it, those that failed by its fault and those answered."""
        return await self._db.run(self._attempt_counts, start, end, by_day)

    def _attempt_counts(self, start: float, end: float, by_day: bool) -> list[AttemptCounts]:
        with self._db.engine.connect() as conn:
            return attempt_counts_sql(conn, start, end, by_day)

    async def rows(self, start: float, end: float, user_id: str | None = None) -> list[AttemptRow]:
        """The rows of requests started in ``[start, end)``, of one user or all."""
        return await self._db.run(self._rows, start, end, user_id)

    def _write(self, rows: list[AttemptRow]) -> None:
        values = [_values(r) for r in rows]
        with self._db.engine.begin() as conn:
            conn.execute(_insert_new(conn), values)

    def _prune(self, before: float) -> int:
        removed = 0
        while True:
            with self._db.engine.begin() as conn:
                oldest = select(t.c.id).where(t.c.at < before).limit(PRUNE_BATCH)
                count = conn.execute(delete(t).where(t.c.id.in_(oldest))).rowcount
            removed += count
            if count < PRUNE_BATCH:
                return removed

    def _newest(self) -> float | None:
        with self._db.engine.connect() as conn:
            value = conn.execute(select(func.max(t.c.at))).scalar()
        return None if value is None else float(value)

    def _rows(self, start: float, end: float, user_id: str | None) -> list[AttemptRow]:
        query = select(*_COLUMNS).where(t.c.at >= start, t.c.at < end)
        if user_id is not None:
            query = query.where(t.c.user_id == user_id)
        with self._db.engine.connect() as conn:
            return [AttemptRow(*row) for row in conn.execute(query)]


_FIELDS = AttemptRow.__dataclass_fields__
# AttemptRow's fields, in order, as columns ("index" is the column "attempt").
_COLUMNS = [t.c["attempt" if name == "index" else name] for name in _FIELDS]


def _values(row: AttemptRow) -> dict[str, Any]:
    return {("attempt" if name == "index" else name): getattr(row, name) for name in _FIELDS}


def _insert_new(conn: Connection) -> Any:
    """INSERT that skips rows already written (the same request and attempt)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(t).on_conflict_do_nothing(index_elements=["request_id", "attempt"])
    if conn.dialect.name == "sqlite":
        return sqlite.insert(t).on_conflict_do_nothing(index_elements=["request_id", "attempt"])
    return insert(t)  # pragma: no cover - the two stores sincere supports are above


# ─── figures, aggregated by the database ───────────────────────────────────────────────
#
# The same figures as sincere.agents.figures.aggregate makes of the rows, read from the
# deciding rows only (each carries its request's cost and row count): the counts and sums
# per group and outcome are the database's; the percentiles come from one narrow read of
# the latencies, sorted here. On SQLite a window that spans most of the table is read by
# a scan, not through the index on ``at`` (reading most rows through an index costs a
# random access each: 2.1 s against 0.4 s at a million rows).

_KEYS = {
    GroupBy.MODEL: "requested_model",
    GroupBy.DEPLOYMENT: f"COALESCE(deployment, '{NO_DEPLOYMENT}')",
    GroupBy.USER: "user_id",
    GroupBy.OUTCOME: "request_outcome",
}
_CALENDAR = {
    ("sqlite", GroupBy.DAY): "strftime('%Y-%m-%d', at, 'unixepoch')",
    ("sqlite", GroupBy.HOUR): "strftime('%Y-%m-%dT%H', at, 'unixepoch')",
    ("postgresql", GroupBy.DAY): "to_char(to_timestamp(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    ("postgresql", GroupBy.HOUR): (
        "to_char(to_timestamp(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24')"
    ),
}
_SCAN_SHARE = 0.3  # a window over more of the table than this is read by a scan (SQLite)

_GROUPS = """
SELECT {key} AS k, request_outcome, COUNT(*),
       SUM(CASE WHEN tokens_in IS NOT NULL AND tokens_out IS NOT NULL THEN tokens_in END),
       SUM(CASE WHEN tokens_in IS NOT NULL AND tokens_out IS NOT NULL THEN tokens_out END),
       SUM(CASE WHEN tokens_in IS NOT NULL AND tokens_out IS NOT NULL THEN 1 ELSE 0 END),
       SUM(request_cost_usd), COUNT(request_cost_usd), SUM(request_rows)
FROM telemetry_attempts {hint}
WHERE final AND at >= :start AND at < :end {user}
GROUP BY k, request_outcome
"""

_TIMES = """
SELECT {key} AS k, request_latency_s, ttft_s
FROM telemetry_attempts {hint}
WHERE final AND at >= :start AND at < :end {user}
  AND (request_latency_s IS NOT NULL OR ttft_s IS NOT NULL)
"""


@dataclass(slots=True)
class _Sums:
    requests: int = 0
    answered: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_known: int = 0
    cost: float = 0.0
    costs_known: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)


def figures_sql(
    conn: Connection,
    start: float,
    end: float,
    user_id: str | None,
    group_by: GroupBy,
    min_samples: int,
) -> tuple[tuple[GroupFigures, ...], int]:
    """The figures of every group, sorted by key, and the rows they rest on."""
    key = _KEYS.get(group_by) or _CALENDAR[(conn.dialect.name, group_by)]
    hint = "NOT INDEXED" if user_id is None and _mostly(conn, start, end) else ""
    user = "AND user_id = :user" if user_id is not None else ""
    params: dict[str, Any] = {"start": start, "end": end, "user": user_id}
    sums: dict[str, _Sums] = {}
    read = 0
    groups = text(_GROUPS.format(key=key, hint=hint, user=user))
    for k, outcome, n, tin, tout, tk, cost, ck, rows in conn.execute(groups, params):
        s = sums.setdefault(k, _Sums())
        s.requests += n
        if outcome == "answered":
            s.answered += n
        else:
            s.failed[outcome] = s.failed.get(outcome, 0) + n
        s.tokens_in += tin or 0
        s.tokens_out += tout or 0
        s.tokens_known += tk
        s.cost += cost or 0.0
        s.costs_known += ck
        read += rows or 0
    for k, latency, ttft in conn.execute(
        text(_TIMES.format(key=key, hint=hint, user=user)), params
    ):
        s = sums[k]
        if latency is not None:
            s.latencies.append(latency)
        if ttft is not None:
            s.ttfts.append(ttft)
    out = []
    for k in sorted(sums):
        s = sums[k]
        s.latencies.sort()
        s.ttfts.sort()
        out.append(
            GroupFigures(
                key=k,
                requests=s.requests,
                answered=s.answered,
                failed=s.failed,
                success_rate=s.answered / s.requests,
                latency_p50_s=percentile(s.latencies, 0.5),
                latency_p95_s=percentile(s.latencies, 0.95),
                ttft_p50_s=percentile(s.ttfts, 0.5),
                ttft_p95_s=percentile(s.ttfts, 0.95),
                tokens_in=s.tokens_in if s.tokens_known else None,
                tokens_out=s.tokens_out if s.tokens_known else None,
                cost_usd=round(s.cost, COST_DECIMALS) if s.costs_known else None,
                token_coverage=s.tokens_known / s.requests,
                cost_coverage=s.costs_known / s.requests,
                below_min_samples=s.requests < min_samples,
                latency_samples=len(s.latencies),
                ttft_samples=len(s.ttfts),
            )
        )
    return tuple(out), read


def _mostly(conn: Connection, start: float, end: float) -> bool:
    """SQLite: the window spans most of what is recorded (read it by a scan)."""
    if conn.dialect.name != "sqlite":
        return False  # PostgreSQL's planner weighs that itself, from its statistics
    oldest, newest = conn.execute(select(func.min(t.c.at), func.max(t.c.at))).one()
    if oldest is None or newest <= oldest:
        return True
    covered = min(end, float(newest)) - max(start, float(oldest))
    return bool(covered / (float(newest) - float(oldest)) > _SCAN_SHARE)


# ─── attempt counts, for the status page ──────────────────────────────────────────────
#
# One aggregation over every attempt row of the range, grouped by deployment (and UTC
# day); which outcomes are sent, failed or answered is sincere.availability's vocabulary.

_COUNTS = """
SELECT deployment, {day} AS day, COUNT(*),
       SUM(CASE WHEN outcome IN :failures THEN 1 ELSE 0 END),
       SUM(CASE WHEN outcome = 'ok' THEN 1 ELSE 0 END)
FROM telemetry_attempts {hint}
WHERE at >= :start AND at < :end AND deployment IS NOT NULL AND outcome NOT IN :not_sent
GROUP BY deployment{by_day}
"""


def attempt_counts_sql(
    conn: Connection, start: float, end: float, by_day: bool
) -> list[AttemptCounts]:
    day = _CALENDAR[(conn.dialect.name, GroupBy.DAY)] if by_day else "NULL"
    hint = "NOT INDEXED" if _mostly(conn, start, end) else ""
    query = text(_COUNTS.format(day=day, hint=hint, by_day=", day" if by_day else "")).bindparams(
        bindparam("failures", expanding=True), bindparam("not_sent", expanding=True)
    )
    params = {
        "start": start,
        "end": end,
        "failures": sorted(DEPLOYMENT_FAILURES),
        "not_sent": sorted(NOT_SENT),
    }
    return [
        AttemptCounts(deployment, day, int(n), int(failed or 0), int(answered or 0))
        for deployment, day, n, failed, answered in conn.execute(query, params)
    ]
