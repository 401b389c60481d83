"""Recorded attempts into per-group figures, in one pass over the rows.

A request is counted once, by its deciding (``final``) row: its outcome, its latency, its
time to first token, the deployment that decided it. Its tokens are those of the answer
(the answering attempt's, as the provider reported them); its cost is the sum of what
each of its attempts was billed (``request_cost_usd``, summed when the request ended),
since a failed attempt can be billed too, and is unknown as soon as one attempt's cost
is unknown. A request that reached no deployment (refused by a tier limit, say) cost
nothing: no provider was asked.

Unknown stays unknown: a sum over a group is None when no request of the group has the
figure, and the coverage says which share of the requests it rests on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sincere.agents.usage import GroupBy, GroupFigures
from sincere.telemetry import AttemptRow, percentile

NO_DEPLOYMENT = "none"  # the deployment key of requests that reached no deployment
# Costs are given to 1e-12 USD: a sum's last binary digit depends on the order it is added
# in (the database's, or this module's), far below any price.
COST_DECIMALS = 12


@dataclass(slots=True)
class _Group:
    requests: int = 0
    answered: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_known: int = 0
    costs: list[float] = field(default_factory=list)  # each known request's cost


def _calendar(size: int, layout: str) -> Callable[[AttemptRow], str]:
    """The UTC day or hour of a request's start; formatted once per bucket, not per row."""
    names: dict[int, str] = {}

    def key(row: AttemptRow) -> str:
        bucket = int(row.at // size)
        name = names.get(bucket)
        if name is None:
            name = names[bucket] = datetime.fromtimestamp(bucket * size, UTC).strftime(layout)
        return name

    return key


def _key_of(group_by: GroupBy) -> Callable[[AttemptRow], str]:
    """The group key of a request, read from its final row."""
    if group_by is GroupBy.MODEL:
        return lambda r: r.requested_model
    if group_by is GroupBy.DEPLOYMENT:
        return lambda r: r.deployment or NO_DEPLOYMENT
    if group_by is GroupBy.USER:
        return lambda r: r.user_id
    if group_by is GroupBy.OUTCOME:
        return lambda r: r.request_outcome
    if group_by is GroupBy.DAY:
        return _calendar(86_400, "%Y-%m-%d")
    return _calendar(3600, "%Y-%m-%dT%H")


def aggregate(
    rows: Iterable[AttemptRow], group_by: GroupBy, min_samples: int
) -> tuple[GroupFigures, ...]:
    """The figures of every group, sorted by key. Rows may come in any order; a request is
    read from its deciding row, which carries what its attempts were billed in all."""
    key_of = _key_of(group_by)
    groups: dict[str, _Group] = {}
    # A request whose final row is not written yet (a batch cut in two) is left out rather
    # than guessed.
    for final in rows:
        if not final.final:
            continue
        key = key_of(final)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group()
        _add(group, final, final.request_cost_usd)
    return tuple(_figures(key, groups[key], min_samples) for key in sorted(groups))


def _add(group: _Group, final: AttemptRow, cost: float | None) -> None:
    group.requests += 1
    if final.request_outcome == "answered":
        group.answered += 1
    else:
        outcome = final.request_outcome
        group.failed[outcome] = group.failed.get(outcome, 0) + 1
    if final.request_latency_s is not None:
        group.latencies.append(final.request_latency_s)
    if final.ttft_s is not None:
        group.ttfts.append(final.ttft_s)
    if final.tokens_in is not None and final.tokens_out is not None:
        group.tokens_known += 1
        group.tokens_in += final.tokens_in
        group.tokens_out += final.tokens_out
    if cost is not None:
        group.costs.append(cost)


def _figures(key: str, g: _Group, min_samples: int) -> GroupFigures:
    g.latencies.sort()
    g.ttfts.sort()
    n = g.requests
    return GroupFigures(
        key=key,
        requests=n,
        answered=g.answered,
        failed=g.failed,
        success_rate=g.answered / n if n else None,
        latency_p50_s=percentile(g.latencies, 0.5),
        latency_p95_s=percentile(g.latencies, 0.95),
        ttft_p50_s=percentile(g.ttfts, 0.5),
        ttft_p95_s=percentile(g.ttfts, 0.95),
        tokens_in=g.tokens_in if g.tokens_known else None,
        tokens_out=g.tokens_out if g.tokens_known else None,
        cost_usd=round(math.fsum(g.costs), COST_DECIMALS) if g.costs else None,
        token_coverage=g.tokens_known / n if n else None,
        cost_coverage=len(g.costs) / n if n else None,
        below_min_samples=n < min_samples,
        latency_samples=len(g.latencies),
        ttft_samples=len(g.ttfts),
    )
