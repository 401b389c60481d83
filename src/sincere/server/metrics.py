"""Prometheus metrics of one gateway process, on its own registry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sincere.attempts import BLOCKED, Attempt
from sincere.llm.breaker import BreakerState
from sincere.ports import AdmissionQueue, Breakers, ProbeRecord, RequestRecord

_BREAKER_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class _Breakers(Collector):
    """Breaker states read at scrape time, so the gauge is never stale."""

    def __init__(self, breakers: Breakers) -> None:
        self._breakers = breakers

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "sincere_breaker_state",
            "Circuit breaker state per deployment: 0 closed, 1 half-open, 2 open.",
            labels=["deployment"],
        )
        breakers = self._breakers
        for name in breakers.names():
            family.add_metric([name], _BREAKER_VALUE[breakers.view(name).state])
        yield family


class _Queues(Collector):
    """Each admission queue's depth, busy slots and capacity, read at scrape time."""

    def __init__(self, queues: AdmissionQueue) -> None:
        self._queues = queues

    def collect(self) -> Iterable[GaugeMetricFamily]:
        labels = ["deployment"]
        waiting = GaugeMetricFamily(
            "sincere_queue_waiting", "Requests waiting for a deployment at capacity.", labels=labels
        )
        serving = GaugeMetricFamily(
            "sincere_queue_serving", "Requests holding one of a deployment's slots.", labels=labels
        )
        capacity = GaugeMetricFamily(
            "sincere_queue_capacity", "A deployment's max_concurrency.", labels=labels
        )
        for name, queue in self._queues.queues.items():
            waiting.add_metric([name], queue.queued)
            serving.add_metric([name], queue.serving)
            capacity.add_metric([name], queue.capacity)
        yield from (waiting, serving, capacity)


class Metrics:
    def __init__(self, breakers: Breakers, queues: AdmissionQueue | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sincere_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "sincere_request_duration_seconds",
            "Time to the complete response, by route.",
            ["route"],
            registry=r,
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
            ),
        )
        self.attempts = Counter(
            "sincere_attempts",
            "Attempts on deployments by outcome.",
            ["deployment", "outcome"],
            registry=r,
        )
        self.failovers = Counter(
            "sincere_failovers",
            "Answers served by a route other than the first.",
            ["model"],
            registry=r,
        )
        self.probes = Counter(
            "sincere_probes",
            "Shadow probes of open circuits by outcome (one-token requests, no user's).",
            ["deployment", "outcome"],
            registry=r,
        )
        self.probe_tokens = Counter(
            "sincere_probe_tokens",
            "Tokens the shadow probes used, as the providers reported them.",
            ["deployment"],
            registry=r,
        )
        self.probe_cost = Counter(
            "sincere_probe_cost_usd",
            "What the shadow probes cost, where the deployment's prices are known.",
            ["deployment"],
            registry=r,
        )
        self.event_deliveries = Counter(
            "sincere_event_deliveries", "Events sent to WebSocket clients.", registry=r
        )
        self.mock_blocked = Counter(
            "sincere_mock_responses_blocked",
            "Answers withheld by the response guard.",
            registry=r,
        )
        r.register(_Breakers(breakers))
        if queues is not None:
            r.register(_Queues(queues))
        self._children: dict[tuple[Any, ...], Any] = {}

    def record_attempts(self, attempts: Iterable[Attempt]) -> None:
        for attempt in attempts:
            self._child(self.attempts, attempt.deployment, attempt.outcome).inc()

    def record_probe(self, record: ProbeRecord) -> None:
        attempt = record.attempt
        self._child(self.probes, attempt.deployment, attempt.outcome).inc()
        if record.usage is not None:
            self._child(self.probe_tokens, attempt.deployment).inc(record.usage.total_tokens)
        if attempt.cost_usd:
            self._child(self.probe_cost, attempt.deployment).inc(attempt.cost_usd)

    def count_request(self, route: str, status: int) -> None:
        self._child(self.requests, route, str(status)).inc()

    def observe_latency(self, route: str, seconds: float) -> None:
        self._child(self.latency, route).observe(seconds)

    def _child(self, metric: Any, *labels: str) -> Any:
        # labels() locks and hashes on every call; on the request path it pays to keep the
        # children (label values are route names, statuses and configured deployments).
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


# The latency histogram's route label for each surface (the names /metrics has always used).
_ROUTE_OF_SURFACE = {"http": "chat", "sse": "chat_stream"}


class MetricsRecorder:
    """The pipeline's observer that counts every finished request on the Prometheus
    metrics, and the cascade's that counts every shadow probe."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def finished(self, record: RequestRecord) -> None:
        m = self._metrics
        m.record_attempts(record.attempts)
        blocked = sum(1 for a in record.attempts if a.outcome == BLOCKED)
        if blocked:
            m.mock_blocked.inc(blocked)
        if record.failed_over:
            m.failovers.labels(record.requested_model).inc()
        route = _ROUTE_OF_SURFACE.get(record.surface, record.surface)
        m.observe_latency(route, record.duration_s)

    async def probed(self, record: ProbeRecord) -> None:
        self._metrics.record_probe(record)
