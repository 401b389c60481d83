"""What the data agent answers: usage figures with their source, freshness and reliability.

Every figure is computed from recorded attempts (``sincere.telemetry.AttemptRow``): a
request's figures from its deciding (``final``) row, a deployment's success rate from its
attempts. A figure that cannot be computed is None, never 0; a figure resting on fewer
requests than the configured minimum says so (``below_min_samples``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class GroupBy(StrEnum):
    MODEL = "model"  # the requested model
    DEPLOYMENT = "deployment"  # the deployment that decided the request
    USER = "user"
    OUTCOME = "outcome"  # "answered" or the error type the caller received
    DAY = "day"  # UTC day of the request's start, YYYY-MM-DD
    HOUR = "hour"  # UTC hour, YYYY-MM-DDTHH


class Verdict(StrEnum):
    PASS = "pass"
    WARN = "warn"
    ERROR = "error"
    UNKNOWN = "unknown"  # nothing recorded: no age to judge


@dataclass(frozen=True, slots=True)
class Window:
    start: float  # unix time, inclusive
    end: float  # unix time, exclusive
    label: str  # "24h", or "from … to …"

    def to_dict(self) -> dict[str, Any]:
        return {"start": iso(self.start), "end": iso(self.end), "label": self.label}


@dataclass(frozen=True, slots=True)
class Freshness:
    """The age of the newest record, judged as dbt judges a source (warn_after/error_after)."""

    newest_at: float | None
    age_s: float | None
    verdict: Verdict
    warn_after_s: float
    error_after_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "newest_at": None if self.newest_at is None else iso(self.newest_at),
            "age_s": None if self.age_s is None else round(self.age_s, 3),
            "verdict": str(self.verdict),
            "warn_after_s": self.warn_after_s,
            "error_after_s": self.error_after_s,
        }


@dataclass(frozen=True, slots=True)
class GroupFigures:
    """One group's figures over the window."""

    key: str
    requests: int
    answered: int
    failed: dict[str, int]  # error type -> requests
    success_rate: float | None  # answered / requests (None: no request)
    latency_p50_s: float | None
    latency_p95_s: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    tokens_in: int | None  # None when no request's tokens are known
    tokens_out: int | None
    cost_usd: float | None  # None when no request's cost is known
    token_coverage: float | None  # share of the requests whose tokens are known
    cost_coverage: float | None  # share of the requests whose cost is known
    below_min_samples: bool  # fewer requests than [usage] min_samples
    # How many requests each percentile rests on (a failed request has no time to first
    # token), so a reader can judge each one, not only the group.
    latency_samples: int = 0
    ttft_samples: int = 0

    def to_dict(self, min_samples: int) -> dict[str, Any]:
        return {
            "key": self.key,
            "requests": self.requests,
            "answered": self.answered,
            "failed": dict(sorted(self.failed.items())),
            "success_rate": self.success_rate,
            "latency_s": {"p50": self.latency_p50_s, "p95": self.latency_p95_s},
            "ttft_s": {"p50": self.ttft_p50_s, "p95": self.ttft_p95_s},
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": self.cost_usd,
            "reliability": {
                "samples": self.requests,
                "below_min_samples": self.below_min_samples,
                "latency_samples": self.latency_samples,
                "latency_below_min_samples": self.latency_samples < min_samples,
                "ttft_samples": self.ttft_samples,
                "ttft_below_min_samples": self.ttft_samples < min_samples,
                "token_coverage": self.token_coverage,
                "cost_coverage": self.cost_coverage,
            },
        }


@dataclass(frozen=True, slots=True)
class Usage:
    """The data agent's answer: figures, and everything needed to judge them."""

    as_of: float  # unix time the figures were computed
    source: str  # "sql:sqlite", "sql:postgresql", or "memory:this-process"
    degraded: bool  # True when not from the store (the process's own recent window)
    scope: str  # what the source covers: "all processes", "this process, last 15 minutes"
    window: Window
    group_by: GroupBy
    user_id: str | None  # None: every user (an admin's question)
    groups: tuple[GroupFigures, ...]
    freshness: Freshness
    min_samples: int
    query: str  # what was asked of the source, in words (provenance)
    rows_read: int
    notes: tuple[str, ...] = field(default=())  # what a reader must know (freshness errors)

    @property
    def current(self) -> bool:
        """Whether these figures may be presented as current: the newest record is within
        ``error_after_s`` (past it, or with nothing recorded, they are not)."""
        return self.freshness.verdict in (Verdict.PASS, Verdict.WARN)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``GET /v1/usage`` and ``sincere usage --json``."""
        return {
            "object": "usage",
            "as_of": iso(self.as_of),
            "source": self.source,
            "degraded": self.degraded,
            "scope": self.scope,
            "current": self.current,
            "window": self.window.to_dict(),
            "group_by": str(self.group_by),
            "user": self.user_id,
            "freshness": self.freshness.to_dict(),
            "reliability": {
                "min_samples": self.min_samples,
                "rows_read": self.rows_read,
                "requests": sum(g.requests for g in self.groups),
                "groups_below_min_samples": sum(g.below_min_samples for g in self.groups),
            },
            "query": self.query,
            "groups": [g.to_dict(self.min_samples) for g in self.groups],
            "notes": list(self.notes),
        }


def iso(at: float) -> str:
    """Unix time as ISO 8601 in UTC, to the millisecond."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
