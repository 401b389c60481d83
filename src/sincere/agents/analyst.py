"""The analyst: answers a question about a user's own traffic in two layers.

Findings are computed by code (``agents/findings.py``) from a fixed set of data agent
queries, the same for every question (the question is never parsed by a model): usage by
deployment, by model, and by day (by hour for windows of two days or less). Each query is
a tool: ``tool_executing`` when it starts, ``tool_completed`` when it has answered, and
nothing else. Then a model writes a short narrative from the findings, through the one
chat pipeline (limits, guard, telemetry, events), under the number rule: a narrative that
states a number no finding holds is a failed attempt (``invented_numbers``) and the
cascade tries the next route.

When no route writes an acceptable narrative, the run still succeeds with the findings
alone (``narrative`` null, ``narrative_reason`` saying why, the attempts listed) and the
user's stream says so (``service_degraded``, service ``analyst:narrative``). When the data
agent cannot answer, the run fails with its error (``agent_failed``): no finding is ever
made up.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sincere.agents.data import DataAgent
from sincere.agents.findings import (
    Finding,
    by_day,
    failures,
    figures_and_names,
    latency,
    savings,
    spend,
    traffic,
)
from sincere.agents.numbers import Figure, NumberRule, Unit
from sincere.agents.usage import GroupBy, Usage, Window
from sincere.answer import Answer
from sincere.attempts import Attempt
from sincere.config import Settings
from sincere.context import ContextFactory, RequestContext, new_request_id
from sincere.errors import InternalError, ServiceError
from sincere.events import EventType
from sincere.identity import Caller
from sincere.llm.request import ChatRequest, Message
from sincere.pipeline import ChatPipeline

SERVICE = "analyst"
NARRATIVE_SERVICE = "analyst:narrative"
NARRATIVE_MAX_TOKENS = 200
SHORT_WINDOW_S = 2 * 86_400.0  # up to this long, the periods are hours rather than days

_SYSTEM = """You are the usage analyst of an LLM gateway. Answer the user's question about \
their own traffic in at most four sentences of plain prose, using only the findings below.
Rules: copy every number exactly as a finding writes it; write no other number at all (no \
numbered lists, no dates, no estimates, no totals of your own). If the findings do not \
answer the question, say so in words.

Findings ({window}):
{findings}"""


def new_run_id() -> str:
    return f"run_{os.urandom(12).hex()}"


@dataclass(frozen=True, slots=True)
class QueryRecord:
    """One data query the run made (a tool), as provenance."""

    tool: str
    query: str
    group_by: str
    duration_s: float
    rows_read: int
    source: str
    degraded: bool
    scope: str
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "query": self.query,
            "group_by": self.group_by,
            "duration_s": round(self.duration_s, 6),
            "rows_read": self.rows_read,
            "source": self.source,
            "degraded": self.degraded,
            "scope": self.scope,
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class Narrator:
    """Who was asked for the narrative, who wrote it (if anyone), and every attempt."""

    model: str
    request_id: str
    attempts: tuple[Attempt, ...]
    answer: Answer | None = None
    error_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "request_id": self.request_id,
            "attempts": [a.to_dict() for a in self.attempts],
        }
        if self.answer is not None:
            p = self.answer.provenance
            out.update(
                answered_by={"model": p.model, "deployment": p.deployment},
                latency_s=round(p.latency_s, 6),
                selection_reasoning=p.selection_reasoning,
            )
            if p.usage is not None:
                out["usage"] = {
                    "prompt_tokens": p.usage.prompt_tokens,
                    "completion_tokens": p.usage.completion_tokens,
                }
        if self.error_type is not None:
            out["error_type"] = self.error_type
        return out


@dataclass(frozen=True, slots=True)
class AnalystRun:
    id: str
    question: str
    window: Window
    findings: tuple[Finding, ...]
    narrative: str | None
    narrative_reason: str | None
    narrator: Narrator | None
    queries: tuple[QueryRecord, ...]
    duration_s: float
    as_of: float
    usages: tuple[Usage, ...] = field(default=(), repr=False)

    @property
    def path(self) -> str:
        """Which path served: findings with a narrative, or findings alone."""
        return "findings_only" if self.narrative is None else "findings_and_narrative"

    def attempts(self) -> tuple[Attempt, ...]:
        return self.narrator.attempts if self.narrator is not None else ()

    def cost_usd(self) -> float | None:
        """What the narrative's attempts cost (the data queries cost nothing billed); None
        when an attempt's cost is unknown."""
        costs = [a.cost_usd for a in self.attempts()]
        if any(c is None for c in costs):
            return None
        return sum(c or 0.0 for c in costs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": "analyst.run",
            "id": self.id,
            "question": self.question,
            "window": {
                "label": self.window.label,
                "start": self.window.start,
                "end": self.window.end,
            },
            "path": self.path,
            "findings": [f.to_dict() for f in self.findings],
            "narrative": self.narrative,
            "narrative_reason": self.narrative_reason,
            "narrator": None if self.narrator is None else self.narrator.to_dict(),
            "provenance": {
                "queries": [q.to_dict() for q in self.queries],
                "attempts": [a.to_dict() for a in self.attempts()],
                "cost_usd": self.cost_usd(),
                "duration_s": round(self.duration_s, 6),
            },
            "as_of": self.as_of,
        }


class Analyst:
    """Runs analyst questions for callers over their own recorded traffic."""

    def __init__(
        self,
        data: DataAgent,
        pipeline: ChatPipeline,
        contexts: ContextFactory,
        settings: Settings,
    ) -> None:
        self._data = data
        self._pipeline = pipeline
        self._contexts = contexts
        self._settings = settings

    @property
    def model(self) -> str:
        """The model that writes narratives: ``[agents.analyst] model``, else the first."""
        return self._settings.agents.analyst.model or self._settings.models[0].name

    async def run(
        self, caller: Caller, question: str, window: Window, *, run_id: str | None = None
    ) -> AnalystRun:
        """Findings (or the data agent's error), then a narrative if a model writes an
        honest one. Events go to the caller's stream under the run's id."""
        run_id = run_id or new_run_id()
        ctx = self._contexts.create(caller.user_id, caller.tier, request_id=run_id)
        started = time.monotonic()
        await ctx.emit(
            EventType.AGENT_STARTED,
            "the analyst started: it queries your recorded usage, then asks "
            f"{self.model!r} to write a narrative from the findings",
            service=SERVICE,
            run_id=run_id,
            window=window.label,
        )
        queries: list[QueryRecord] = []
        try:
            usages = await self._query(ctx, caller, window, queries)
            findings = compute_findings(usages, self._settings)
            narrative, reason, narrator = await self._narrate(
                ctx, caller, question, window, findings
            )
        except BaseException as exc:
            await self._failed(ctx, exc, queries)
            raise
        run = AnalystRun(
            id=run_id,
            question=question,
            window=window,
            findings=tuple(findings),
            narrative=narrative,
            narrative_reason=reason,
            narrator=narrator,
            queries=tuple(queries),
            duration_s=time.monotonic() - started,
            as_of=max(u.as_of for u in usages),
            usages=tuple(usages),
        )
        await ctx.emit(
            EventType.AGENT_COMPLETED,
            f"the analyst answered with {len(findings)} finding"
            f"{'s' if len(findings) != 1 else ''}"
            + (" and a narrative" if narrative is not None else " and no narrative"),
            service=SERVICE,
            run_id=run_id,
            path=run.path,
            findings=len(findings),
            queries=len(queries),
        )
        return run

    async def _query(
        self, ctx: RequestContext, caller: Caller, window: Window, queries: list[QueryRecord]
    ) -> list[Usage]:
        """The fixed queries, one tool each, announced only while each really runs."""
        period = GroupBy.HOUR if window.end - window.start <= SHORT_WINDOW_S else GroupBy.DAY
        usages = []
        for group_by in (GroupBy.DEPLOYMENT, GroupBy.MODEL, period):
            tool = f"usage_by_{group_by}"
            await ctx.emit(
                EventType.TOOL_EXECUTING,
                f"querying your usage by {group_by} over {window.label}",
                service=SERVICE,
                tool=tool,
                group_by=str(group_by),
            )
            began = time.monotonic()
            usage = await self._data.usage(ctx, window, group_by, caller.user_id)
            took = time.monotonic() - began
            record = QueryRecord(
                tool=tool,
                query=usage.query,
                group_by=str(group_by),
                duration_s=took,
                rows_read=usage.rows_read,
                source=usage.source,
                degraded=usage.degraded,
                scope=usage.scope,
                notes=usage.notes,
            )
            queries.append(record)
            await ctx.emit(
                EventType.TOOL_COMPLETED,
                f"{usage.rows_read} rows read from {usage.source} in {took:.3f} s",
                service=SERVICE,
                tool=tool,
                duration_s=round(took, 6),
                rows_read=usage.rows_read,
                source=usage.source,
                degraded=usage.degraded,
                groups=len(usage.groups),
            )
            usages.append(usage)
        return usages

    async def _narrate(
        self,
        ctx: RequestContext,
        caller: Caller,
        question: str,
        window: Window,
        findings: Sequence[Finding],
    ) -> tuple[str | None, str | None, Narrator]:
        """The narrative (or None and why), through the pipeline under the number rule."""
        model = self.model
        chat = narrative_request(model, question, window, findings)
        request_id = new_request_id()
        try:
            answer = await self._pipeline.complete(
                caller, chat, request_id=request_id, surface="agent"
            )
        except ServiceError as exc:
            attempts = exc.attempts
            tried = "; ".join(f"{a.deployment}: {a.outcome}" for a in attempts) or "none"
            rejected = sum(a.outcome == "invented_numbers" for a in attempts)
            reason = (
                f"no model wrote an acceptable narrative ({exc.error_type}: {exc.message}); "
                f"attempts: {tried}"
            )
            if rejected:
                reason += (
                    f"; {rejected} narrative{'s' if rejected != 1 else ''} stated numbers "
                    "that no finding holds and were rejected"
                )
            await ctx.emit(
                EventType.SERVICE_DEGRADED,
                "the findings are served without a narrative: " + reason,
                service=NARRATIVE_SERVICE,
                path="findings_only",
                error_type=exc.error_type,
                attempts=len(attempts),
            )
            return None, reason, Narrator(model, request_id, attempts, error_type=exc.error_type)
        narrator = Narrator(model, request_id, answer.provenance.attempts, answer=answer)
        return answer.text.strip(), None, narrator

    async def _failed(
        self, ctx: RequestContext, exc: BaseException, queries: Sequence[QueryRecord]
    ) -> None:
        if isinstance(exc, ServiceError):
            error_type, message = exc.error_type, exc.message
        elif isinstance(exc, asyncio.CancelledError):
            ctx.post(  # no await: the task is being cancelled
                EventType.AGENT_FAILED,
                "the analyst run was stopped",
                service=SERVICE,
                error_type="cancelled",
                queries=len(queries),
            )
            return
        else:
            defect = InternalError.of(ctx.error_context(SERVICE))
            error_type, message = defect.error_type, defect.message
        await ctx.emit(
            EventType.AGENT_FAILED,
            f"the analyst could not answer: {message}",
            service=SERVICE,
            error_type=error_type,
            queries=len(queries),
        )


def compute_findings(usages: Sequence[Usage], settings: Settings) -> list[Finding]:
    """Every finding the queries support, in reading order."""
    by = {u.group_by: u for u in usages}
    deployments = {d.name: d for d in settings.deployments}
    out: list[Finding] = []
    first = by.get(GroupBy.DEPLOYMENT) or usages[0]
    out += traffic(first)
    if not any(g.requests for g in first.groups):
        return out
    if GroupBy.DEPLOYMENT in by:
        d = by[GroupBy.DEPLOYMENT]
        out += spend(d, "deployment")
    if GroupBy.MODEL in by:
        out += spend(by[GroupBy.MODEL], "model")
    if GroupBy.DEPLOYMENT in by:
        d = by[GroupBy.DEPLOYMENT]
        out += failures(d, "deployment")
        out += latency(d, "deployment")
        out += savings(d, deployments)
    for period in (GroupBy.DAY, GroupBy.HOUR):
        if period in by:
            out += by_day(by[period])
    return out


_NAMED_WINDOW = re.compile(r"(\d+)[a-z]+")


def narrative_request(
    model: str, question: str, window: Window, findings: Sequence[Finding]
) -> ChatRequest:
    """The narrator's request: the findings as its only material, the number rule its
    check. The window's own number ("7" of "7d") may be said as well."""
    figures, names = figures_and_names(findings, (window.label,))
    named = _NAMED_WINDOW.fullmatch(window.label)
    label_figures = (Figure(float(named.group(1)), Unit.COUNT),) if named else ()
    rule = NumberRule(figures + label_figures, names)
    text = "\n".join(f"- {f.title}" for f in findings)
    system = _SYSTEM.format(window=window.label, findings=text)
    return ChatRequest(
        model=model,
        messages=(Message("system", system), Message("user", question)),
        max_tokens=NARRATIVE_MAX_TOKENS,
        temperature=0.2,
        answer_check=rule,
    )
