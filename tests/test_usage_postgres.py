"""The data agent on PostgreSQL: the same exact figures from the fleet's store, named as
its source, and a user's question answered from that user's rows only."""

from __future__ import annotations

import math

from sincere.agents.data import DataAgent, window_of
from sincere.agents.usage import GroupBy, Verdict
from sincere.backends.memory.events import InProcessEventBus
from sincere.backends.sql.database import open_database
from sincere.backends.sql.telemetry import SqlTelemetryStore
from sincere.config import UsageConfig
from sincere.context import ContextFactory
from sincere.telemetry import RecentWindow
from tests.clocks import ManualClock
from tests.test_usage import _row

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


async def test_figures_from_postgresql_are_exact(fresh_schema: str) -> None:
    clock = ManualClock()
    db = open_database(fresh_schema)
    try:
        store = SqlTelemetryStore(db)
        now = clock.time()
        rows = [_row(f"a{i}", now - 10 * i, cost_usd=0.1) for i in range(1, 6)]
        rows += [
            _row("f1", now - 5, index=0, final=False, outcome="timeout", cost_usd=0.0),
            _row(
                "f1",
                now - 5,
                index=1,
                request_outcome="timeout",
                cost_usd=0.2,
                tokens_in=None,
                request_cost_usd=0.2,  # 0.0 + 0.2
                request_rows=2,
            ),
            _row("b1", now - 3, user_id="bob", tokens_in=7, tokens_out=1),
        ]
        await store.write(rows)
        agent = DataAgent(store, RecentWindow(900, clock.time), UsageConfig(), clock.time)
        ctx = ContextFactory(InProcessEventBus(), 60).create("admin")
        usage = await agent.usage(ctx, window_of("1h", None, None, now), GroupBy.MODEL, "alice")
        assert (usage.source, usage.degraded, usage.scope) == (
            "sql:postgresql",
            False,
            "all processes",
        )
        assert usage.freshness.verdict is Verdict.PASS
        assert usage.freshness.age_s == 3  # bob's is the store's newest record
        (gpt,) = usage.groups
        assert (gpt.requests, gpt.answered, gpt.failed) == (6, 5, {"timeout": 1})
        assert (gpt.tokens_in, gpt.tokens_out) == (50, 25)  # the answers' tokens only
        assert gpt.cost_usd == round(math.fsum([0.1] * 5 + [0.0, 0.2]), 12)
        assert gpt.token_coverage == 5 / 6
        assert usage.rows_read == 7
        everyone = await agent.usage(ctx, window_of("1h", None, None, now), GroupBy.USER, None)
        assert [(g.key, g.requests, g.tokens_in) for g in everyone.groups] == [
            ("alice", 6, 50),
            ("bob", 1, 7),
        ]
    finally:
        db.engine.dispose()
