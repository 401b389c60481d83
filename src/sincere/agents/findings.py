"""Findings: what the analyst can say about a user's traffic, computed by code from the data
agent's figures, never by a model.

Each finding carries its numbers (each with its unit, for the number rule) and their
provenance: the query that produced them, its window, the requests they rest on (``n``),
the data's freshness and source. Its title is written from those numbers only, so a title
passes the number rule of its own finding. A finding that cannot be computed is left out;
where the absence itself is the news (no traffic, no cost known, no cheaper deployment
qualifies), a finding says so without inventing anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sincere.agents.numbers import Figure, Unit
from sincere.agents.usage import GroupFigures, Usage
from sincere.config import DeploymentConfig

TOP = 5  # groups per finding list: the narrator's prompt stays short


@dataclass(frozen=True, slots=True)
class FindingProvenance:
    query: str  # what was asked of the data source, in words
    window: str
    n: int  # requests the numbers rest on
    below_min_samples: bool
    min_samples: int
    source: str
    degraded: bool
    freshness: Mapping[str, Any]

    @classmethod
    def of(cls, usage: Usage, n: int) -> FindingProvenance:
        f = usage.freshness
        return cls(
            query=usage.query,
            window=usage.window.label,
            n=n,
            below_min_samples=n < usage.min_samples,
            min_samples=usage.min_samples,
            source=usage.source,
            degraded=usage.degraded,
            freshness={"verdict": str(f.verdict), "newest_at": f.newest_at, "age_s": f.age_s},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "window": self.window,
            "n": self.n,
            "below_min_samples": self.below_min_samples,
            "min_samples": self.min_samples,
            "source": self.source,
            "degraded": self.degraded,
            "freshness": dict(self.freshness),
        }


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    title: str
    numbers: Mapping[str, Figure]
    provenance: FindingProvenance | tuple[FindingProvenance, ...]
    names: tuple[str, ...] = field(default=())  # the groups it names (deployments, days…)

    def provenances(self) -> tuple[FindingProvenance, ...]:
        p = self.provenance
        return p if isinstance(p, tuple) else (p,)

    def to_dict(self) -> dict[str, Any]:
        p = self.provenance
        return {
            "kind": self.kind,
            "title": self.title,
            "numbers": {k: _plain(f.value) for k, f in self.numbers.items()},
            "units": {k: str(f.unit) for k, f in self.numbers.items()},
            "provenance": [x.to_dict() for x in p] if isinstance(p, tuple) else p.to_dict(),
        }


def _plain(value: float) -> float | int:
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else value


# How titles show numbers: any rounding is fine for the rule, never scientific notation.


def usd(value: float) -> str:
    if value == 0:
        return "$0"
    places = 2 if value >= 0.01 else min(10, 2 - math.floor(math.log10(value)))
    return f"${value:,.{places}f}"


def pct(ratio: float) -> str:
    return f"{ratio * 100:.1f}%"


def secs(value: float) -> str:
    return f"{value:.2f} s"


def count(n: int) -> str:
    return f"{n:,}"


def _requests(n: int) -> str:
    return f"{count(n)} request{'s' if n != 1 else ''}"


def traffic(usage: Usage) -> list[Finding]:
    """How many requests the window holds (a finding of its own when there are none)."""
    total = sum(g.requests for g in usage.groups)
    answered = sum(g.answered for g in usage.groups)
    prov = FindingProvenance.of(usage, total)
    if total == 0:
        return [
            Finding(
                "no_traffic",
                f"No request of yours is recorded in {usage.window.label}.",
                {"requests": Figure(0, Unit.COUNT)},
                prov,
            )
        ]
    numbers = {
        "requests": Figure(total, Unit.COUNT),
        "answered": Figure(answered, Unit.COUNT),
        "success_rate": Figure(answered / total, Unit.RATIO),
    }
    title = (
        f"{_requests(total)} in {usage.window.label}: {count(answered)} answered "
        f"({pct(answered / total)})."
    )
    return [Finding("traffic", title, numbers, prov)]


def spend(usage: Usage, what: str) -> list[Finding]:
    """Spend per group (``what``: "model" or "deployment"), largest first, with its share of
    the spend whose cost is known."""
    costed = [g for g in usage.groups if g.cost_usd is not None]
    if not costed:
        if not usage.groups:
            return []
        n = sum(g.requests for g in usage.groups)
        return [
            Finding(
                "spend_unknown",
                f"No cost is known for the {_requests(n)} by {what}: no prices are configured "
                "for their deployments, or the providers reported no usage.",
                {"requests": Figure(n, Unit.COUNT)},
                FindingProvenance.of(usage, n),
            )
        ]
    total = sum(g.cost_usd or 0.0 for g in costed)
    out = []
    for g in sorted(costed, key=lambda g: g.cost_usd or 0.0, reverse=True)[:TOP]:
        cost = g.cost_usd or 0.0
        numbers = {
            "cost_usd": Figure(cost, Unit.USD),
            "requests": Figure(g.requests, Unit.COUNT),
            "total_cost_usd": Figure(total, Unit.USD),
        }
        title = f"{what.capitalize()} {g.key!r}: {usd(cost)} over {_requests(g.requests)}"
        if total > 0:
            numbers["share_of_spend"] = Figure(cost / total, Unit.RATIO)
            title += f", {pct(cost / total)} of the known spend ({usd(total)})"
        for name in ("tokens_in", "tokens_out"):
            value = getattr(g, name)
            if value is not None:
                numbers[name] = Figure(value, Unit.COUNT)
        if g.cost_coverage is not None and g.cost_coverage < 1:
            numbers["cost_coverage"] = Figure(g.cost_coverage, Unit.RATIO)
            title += f"; cost known for {pct(g.cost_coverage)} of them"
        out.append(
            Finding(
                "spend", title + ".", numbers, FindingProvenance.of(usage, g.requests), (g.key,)
            )
        )
    return out


def failures(usage: Usage, what: str) -> list[Finding]:
    """Groups whose requests failed: an outlier when its failure rate is above the rate of
    all groups together (with more than one group)."""
    total = sum(g.requests for g in usage.groups)
    failed_total = sum(g.requests - g.answered for g in usage.groups)
    if total == 0 or failed_total == 0:
        return []
    overall = failed_total / total
    out = []
    ranked = sorted(usage.groups, key=lambda g: _failure_rate(g) or 0.0, reverse=True)
    for g in ranked[:TOP]:
        rate = _failure_rate(g)
        if not rate:
            continue
        failed = g.requests - g.answered
        outlier = len(usage.groups) > 1 and rate > overall
        numbers = {
            "failed": Figure(failed, Unit.COUNT),
            "requests": Figure(g.requests, Unit.COUNT),
            "failure_rate": Figure(rate, Unit.RATIO),
            "failure_rate_all": Figure(overall, Unit.RATIO),
        }
        title = (
            f"{what.capitalize()} {g.key!r}: {count(failed)} of {_requests(g.requests)} "
            f"failed ({pct(rate)})"
        )
        if outlier:
            title += f", above the {pct(overall)} of all {what}s"
        if g.failed:
            kind, n = max(g.failed.items(), key=lambda kv: kv[1])
            numbers[f"failed_{kind}"] = Figure(n, Unit.COUNT)
            title += f"; most often {kind} ({count(n)})"
        out.append(
            Finding(
                "failure_outlier" if outlier else "failures",
                title + ".",
                numbers,
                FindingProvenance.of(usage, g.requests),
                (g.key, *g.failed),
            )
        )
    return out


def _failure_rate(g: GroupFigures) -> float | None:
    return None if g.success_rate is None else 1.0 - g.success_rate


def latency(usage: Usage, what: str) -> list[Finding]:
    """The slowest group by median latency and, with more than one, the fastest beside it:
    an outlier when the slowest median is at least twice the fastest."""
    timed = [g for g in usage.groups if g.latency_p50_s is not None]
    if not timed:
        return []
    timed.sort(key=lambda g: g.latency_p50_s or 0.0, reverse=True)
    slow = timed[0]
    assert slow.latency_p50_s is not None
    numbers = {
        "latency_p50_s": Figure(slow.latency_p50_s, Unit.SECONDS),
        "requests": Figure(slow.requests, Unit.COUNT),
    }
    title = f"{what.capitalize()} {slow.key!r}: median latency {secs(slow.latency_p50_s)}"
    if slow.latency_p95_s is not None:
        numbers["latency_p95_s"] = Figure(slow.latency_p95_s, Unit.SECONDS)
        title += f", 95th percentile {secs(slow.latency_p95_s)}"
    title += f" over {_requests(slow.requests)}"
    provs = [FindingProvenance.of(usage, slow.requests)]
    names = [slow.key]
    kind = "latency"
    if len(timed) > 1:
        fast = timed[-1]
        assert fast.latency_p50_s is not None
        numbers["fastest_latency_p50_s"] = Figure(fast.latency_p50_s, Unit.SECONDS)
        numbers["fastest_requests"] = Figure(fast.requests, Unit.COUNT)
        title = f"The slowest {what}: " + title[0].lower() + title[1:]
        title += (
            f"; the fastest, {fast.key!r}, {secs(fast.latency_p50_s)} over "
            f"{_requests(fast.requests)}"
        )
        if fast.latency_p50_s > 0 and slow.latency_p50_s >= 2 * fast.latency_p50_s:
            kind = "latency_outlier"
        provs.append(FindingProvenance.of(usage, fast.requests))
        names.append(fast.key)
    return [Finding(kind, title + ".", numbers, tuple(provs), tuple(names))]


def savings(usage: Usage, deployments: Mapping[str, DeploymentConfig]) -> list[Finding]:
    """Cheaper deployments that did no worse on the same user's traffic.

    For each deployment A the user's requests went to, and each configured deployment B
    whose prices would have billed A's real tokens for less: B qualifies when both rest on
    at least ``min_samples`` requests and B's measured success rate is at least A's and its
    median latency at most A's. The saving is A's recorded tokens at A's prices minus the
    same tokens at B's. With none qualifying, one finding says so.
    """
    groups = {g.key: g for g in usage.groups}
    out = []
    for a in usage.groups:
        pa = _prices(deployments.get(a.key))
        if pa is None or a.tokens_in is None or a.tokens_out is None:
            continue
        for b in usage.groups:
            pb = _prices(deployments.get(b.key))
            if b.key == a.key or pb is None or not _no_worse(b, a, usage.min_samples):
                continue
            cost_a = (a.tokens_in * pa[0] + a.tokens_out * pa[1]) / 1e6
            cost_b = (a.tokens_in * pb[0] + a.tokens_out * pb[1]) / 1e6
            saving = cost_a - cost_b
            if saving <= 0:
                continue
            sa, sb, la, lb = a.success_rate, b.success_rate, a.latency_p50_s, b.latency_p50_s
            assert sa is not None
            assert sb is not None
            assert la is not None
            assert lb is not None
            numbers = {
                "saving_usd": Figure(saving, Unit.USD),
                "cost_usd": Figure(cost_a, Unit.USD),
                "cost_at_cheaper_usd": Figure(cost_b, Unit.USD),
                "tokens_in": Figure(a.tokens_in, Unit.COUNT),
                "tokens_out": Figure(a.tokens_out, Unit.COUNT),
                "requests": Figure(a.requests, Unit.COUNT),
                "cheaper_requests": Figure(b.requests, Unit.COUNT),
                "success_rate": Figure(sa, Unit.RATIO),
                "cheaper_success_rate": Figure(sb, Unit.RATIO),
                "latency_p50_s": Figure(la, Unit.SECONDS),
                "cheaper_latency_p50_s": Figure(lb, Unit.SECONDS),
            }
            if a.token_coverage is not None and a.token_coverage < 1:
                numbers["token_coverage"] = Figure(a.token_coverage, Unit.RATIO)
            title = (
                f"{b.key!r} would have served the {count(a.tokens_in)} input and "
                f"{count(a.tokens_out)} output tokens sent to {a.key!r} for {usd(cost_b)} "
                f"instead of {usd(cost_a)}, saving {usd(saving)}; on your traffic it "
                f"answered {pct(sb)} of {_requests(b.requests)} (median "
                f"{secs(lb)}) against {pct(sa)} of "
                f"{_requests(a.requests)} (median {secs(la)})."
            )
            provs = (
                FindingProvenance.of(usage, a.requests),
                FindingProvenance.of(usage, b.requests),
            )
            out.append(Finding("savings_candidate", title, numbers, provs, (a.key, b.key)))
    out.sort(key=lambda f: f.numbers["saving_usd"].value, reverse=True)
    if out or not groups:
        return out[:TOP]
    n = sum(g.requests for g in usage.groups)
    return [
        Finding(
            "no_savings_candidate",
            "No cheaper configured deployment answered at least as often and as fast on "
            f"your traffic, each on at least {count(usage.min_samples)} requests.",
            {"min_samples": Figure(usage.min_samples, Unit.COUNT)},
            FindingProvenance.of(usage, n),
        )
    ]


def _prices(d: DeploymentConfig | None) -> tuple[float, float] | None:
    if d is None or d.input_price_per_mtok is None or d.output_price_per_mtok is None:
        return None
    return d.input_price_per_mtok, d.output_price_per_mtok


def _no_worse(b: GroupFigures, a: GroupFigures, min_samples: int) -> bool:
    if b.requests < min_samples or a.requests < min_samples:
        return False
    if None in (a.success_rate, b.success_rate, a.latency_p50_s, b.latency_p50_s):
        return False
    return (b.success_rate or 0.0) >= (a.success_rate or 0.0) and (b.latency_p50_s or 0.0) <= (
        a.latency_p50_s or 0.0
    )


def by_day(usage: Usage) -> list[Finding]:
    """The day (or hour) with the slowest median latency, beside the median of the others."""
    timed = [g for g in usage.groups if g.latency_p50_s is not None]
    if len(timed) < 2:
        return []
    slow = max(timed, key=lambda g: g.latency_p50_s or 0.0)
    others = sorted(g.latency_p50_s or 0.0 for g in timed if g is not slow)
    typical = (
        others[len(others) // 2]
        if len(others) % 2
        else ((others[len(others) // 2 - 1] + others[len(others) // 2]) / 2)
    )
    assert slow.latency_p50_s is not None
    numbers = {
        "latency_p50_s": Figure(slow.latency_p50_s, Unit.SECONDS),
        "requests": Figure(slow.requests, Unit.COUNT),
        "other_days_median_p50_s": Figure(typical, Unit.SECONDS),
        "other_days": Figure(len(others), Unit.COUNT),
    }
    title = (
        f"{slow.key} was the slowest {usage.group_by}: median latency "
        f"{secs(slow.latency_p50_s)} over {_requests(slow.requests)}, against "
        f"{secs(typical)} on the median of the other {count(len(others))}."
    )
    n = sum(g.requests for g in timed)
    return [Finding("slowest_period", title, numbers, FindingProvenance.of(usage, n), (slow.key,))]


def figures_and_names(
    findings: Sequence[Finding], extra_names: Iterable[str] = ()
) -> tuple[tuple[Figure, ...], tuple[str, ...]]:
    """What a narrative about ``findings`` may state: their numbers, and the names (groups,
    windows) it may mention without their digits being read as numbers."""
    figures: list[Figure] = []
    names: list[str] = list(extra_names)
    for f in findings:
        figures.extend(f.numbers.values())
        names.extend(f.names)
        names.extend(p.window for p in f.provenances())
    return tuple(figures), tuple(dict.fromkeys(n for n in names if n))
