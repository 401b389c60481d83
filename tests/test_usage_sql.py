"""The figures the database computes are the figures the rows make: for every grouping, a
user or all, on SQLite and PostgreSQL, the same as ``agents.figures.aggregate``."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from sincere.agents.figures import aggregate
from sincere.agents.usage import GroupBy
from sincere.backends.sql.database import open_database
from sincere.backends.sql.telemetry import SqlTelemetryStore
from sincere.telemetry import AttemptRow

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NOW = 1_750_000_000.0


def _traffic(count: int) -> list[AttemptRow]:
    """Requests of a few users over three days: answered, failed, failed over, refused,
    with tokens, costs and times known or not."""
    rng = random.Random(7)
    rows: list[AttemptRow] = []
    for n in range(count):
        at = NOW - rng.random() * 3 * 86_400
        rid = f"req_{n}"
        user = rng.choice(["alice", "bob", "carol|x"])
        model = rng.choice(["gpt", "mini"])
        refused = rng.random() < 0.05
        tries = 0 if refused else rng.choice([1, 1, 1, 2])
        answered = not refused and rng.random() < 0.85
        outcome = "answered" if answered else rng.choice(["timeout", "upstream_error"])
        if refused:
            outcome = "rate_limited"
        common = {
            "at": at,
            "request_id": rid,
            "user_id": user,
            "tier": "standard",
            "surface": "http",
            "requested_model": model,
            "request_outcome": outcome,
        }
        request_rows: list[AttemptRow] = []
        for index in range(max(1, tries)):
            final = index == max(1, tries) - 1
            won = answered and final
            known = rng.random() < 0.9
            request_rows.append(
                AttemptRow(
                    **common,  # type: ignore[arg-type]
                    index=index,
                    model=None if refused else model,
                    deployment=None if refused else f"{model}-{index}",
                    outcome="ok" if won else ("rate_limited" if refused else "timeout"),
                    final=final,
                    status_code=None,
                    latency_s=round(rng.uniform(0.1, 3), 3),
                    tokens_in=rng.randint(1, 900) if won and known else None,
                    tokens_out=rng.randint(1, 300) if won and known else None,
                    cost_usd=None if refused or not known else round(rng.uniform(0, 0.01), 6),
                    ttft_s=round(rng.uniform(0.01, 0.5), 3) if won and known else None,
                    queue_wait_s=0.0 if final else None,
                    request_latency_s=round(rng.uniform(0.1, 5), 3) if final else None,
                )
            )
        costs = [r.cost_usd for r in request_rows]
        cost = 0.0 if refused else (None if None in costs else sum(c or 0.0 for c in costs))
        request_rows[-1] = replace(
            request_rows[-1], request_cost_usd=cost, request_rows=len(request_rows)
        )
        rows += request_rows
    return rows


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlTelemetryStore]:
    if request.param == "sqlite":
        yield SqlTelemetryStore(open_database(f"sqlite:///{tmp_path / 't.db'}"))
        return
    schema = f"usage_{uuid.uuid4().hex[:12]}"
    with create_engine(POSTGRES).begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    database = open_database(f"{POSTGRES}?options=-csearch_path%3D{schema}")
    try:
        yield SqlTelemetryStore(database)
    finally:
        database.engine.dispose()
        with create_engine(POSTGRES).begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.mark.parametrize("group_by", list(GroupBy))
@pytest.mark.parametrize("user", [None, "alice", "carol|x"])
async def test_the_database_s_figures_are_the_rows_figures(
    store: SqlTelemetryStore, group_by: GroupBy, user: str | None
) -> None:
    rows = _traffic(600)
    await store.write(rows)
    start, end = NOW - 2 * 86_400, NOW  # a window that cuts the traffic
    inside = [r for r in rows if start <= r.at < end and (user is None or r.user_id == user)]
    computed, read = await store.figures(start, end, user, group_by, min_samples=20)
    assert computed == aggregate(inside, group_by, 20)
    assert read == len(inside)
