"""What the data agent answers: usage figures with their source, freshness and reliability.

Every figure is computed from recorded attempts (``sincere.telemetry.AttemptRow``): a
request's figures from its deciding (``final``) row, a deployment's success rate from its
attempts. A figure that cannot be computed is None, never 0; a figure resting on fewer
requests than the configured minimum says so (``below_min_samples``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


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


@dataclass(frozen=True, slots=True)
class Freshness:
    """The age of the newest record, judged as dbt judges a source (warn_after/error_after)."""

    newest_at: float | None
    age_s: float | None
    verdict: Verdict
    warn_after_s: float
    error_after_s: float


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
