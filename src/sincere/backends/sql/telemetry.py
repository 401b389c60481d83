"""Telemetry in SQL: attempts written in batches, read back for the data agent.

A batch is one transaction; a row already written (its ``(request_id, attempt)``) is
skipped, so a batch written again after an interrupted write counts nothing twice. Every
statement runs on a worker thread (``Database.run``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite

from sincere.agents.figures import COST_DECIMALS, NO_DEPLOYMENT
from sincere.agents.usage import GroupBy, GroupFigures
from sincere.backends.sql.database import Database
from sincere.backends.sql.schema import telemetry_attempts as t
from sincere.telemetry import AttemptRow

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
# The same figures as sincere.agents.figures.aggregate computes from rows, without moving
# the rows: one scan makes one line per request (its final row's key, outcome, latency,
# time to first token and tokens; the sum of its attempts' costs, unknown when one is),
# then per group and outcome the counts and sums, and per group the nearest-rank p50/p95
# (ROW_NUMBER over the group: ceil(q * n) as (100 q n + 99) / 100 in integers).

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

_REQUESTS = """
SELECT MAX(CASE WHEN final THEN {key} END) AS k,
       MAX(CASE WHEN final THEN request_outcome END) AS outcome,
       MAX(CASE WHEN final THEN request_latency_s END) AS latency,
       MAX(CASE WHEN final THEN ttft_s END) AS ttft,
       MAX(CASE WHEN final THEN tokens_in END) AS tin,
       MAX(CASE WHEN final THEN tokens_out END) AS tout,
       SUM(CASE WHEN deployment IS NULL THEN 0 ELSE cost_usd END) AS cost,
       SUM(CASE WHEN deployment IS NOT NULL AND cost_usd IS NULL THEN 1 ELSE 0 END) AS unknown,
       SUM(CASE WHEN final THEN 1 ELSE 0 END) AS finals,
       COUNT(*) AS attempts
FROM telemetry_attempts
WHERE at >= :start AND at < :end {user}
GROUP BY request_id
"""

_GROUPS = """
WITH req AS ({requests})
SELECT k, outcome, COUNT(*),
       SUM(CASE WHEN tin IS NOT NULL AND tout IS NOT NULL THEN tin END),
       SUM(CASE WHEN tin IS NOT NULL AND tout IS NOT NULL THEN tout END),
       SUM(CASE WHEN tin IS NOT NULL AND tout IS NOT NULL THEN 1 ELSE 0 END),
       SUM(CASE WHEN unknown = 0 THEN cost END),
       SUM(CASE WHEN unknown = 0 THEN 1 ELSE 0 END),
       COUNT(latency), COUNT(ttft), SUM(attempts)
FROM req WHERE finals = 1
GROUP BY k, outcome
"""

_PERCENTILES = """
WITH req AS ({requests}),
ranked AS (
  SELECT k, 'latency' AS what, latency AS v,
         ROW_NUMBER() OVER (PARTITION BY k ORDER BY latency) AS rn,
         COUNT(*) OVER (PARTITION BY k) AS n
  FROM req WHERE finals = 1 AND latency IS NOT NULL
  UNION ALL
  SELECT k, 'ttft', ttft,
         ROW_NUMBER() OVER (PARTITION BY k ORDER BY ttft),
         COUNT(*) OVER (PARTITION BY k)
  FROM req WHERE finals = 1 AND ttft IS NOT NULL
)
SELECT k, what, v, rn, n FROM ranked
WHERE rn = (50 * n + 99) / 100 OR rn = (95 * n + 99) / 100
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
    latencies: int = 0
    ttfts: int = 0


def figures_sql(
    conn: Connection,
    start: float,
    end: float,
    user_id: str | None,
    group_by: GroupBy,
    min_samples: int,
) -> tuple[tuple[GroupFigures, ...], int]:
    """The figures of every group, sorted by key, and the attempt rows they rest on."""
    key = _KEYS.get(group_by) or _CALENDAR[(conn.dialect.name, group_by)]
    requests = _REQUESTS.format(key=key, user="AND user_id = :user" if user_id else "")
    params: dict[str, Any] = {"start": start, "end": end}
    if user_id:
        params["user"] = user_id
    sums: dict[str, _Sums] = {}
    read = 0
    for k, outcome, n, tin, tout, tk, cost, ck, lat, ttft, attempts in conn.execute(
        text(_GROUPS.format(requests=requests)), params
    ):
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
        s.latencies += lat
        s.ttfts += ttft
        read += attempts
    marks: dict[tuple[str, str, int], float] = {}
    for k, what, v, rank, _n in conn.execute(text(_PERCENTILES.format(requests=requests)), params):
        marks[(k, what, rank)] = v
    out = []
    for k in sorted(sums):
        s = sums[k]

        def mark(what: str, q: int, count: int, k: str = k) -> float | None:
            return marks.get((k, what, (q * count + 99) // 100)) if count else None

        out.append(
            GroupFigures(
                key=k,
                requests=s.requests,
                answered=s.answered,
                failed=s.failed,
                success_rate=s.answered / s.requests,
                latency_p50_s=mark("latency", 50, s.latencies),
                latency_p95_s=mark("latency", 95, s.latencies),
                ttft_p50_s=mark("ttft", 50, s.ttfts),
                ttft_p95_s=mark("ttft", 95, s.ttfts),
                tokens_in=s.tokens_in if s.tokens_known else None,
                tokens_out=s.tokens_out if s.tokens_known else None,
                cost_usd=round(s.cost, COST_DECIMALS) if s.costs_known else None,
                token_coverage=s.tokens_known / s.requests,
                cost_coverage=s.costs_known / s.requests,
                below_min_samples=s.requests < min_samples,
                latency_samples=s.latencies,
                ttft_samples=s.ttfts,
            )
        )
    return tuple(out), read
