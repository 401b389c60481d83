"""The words the rules look for in names and keys, and the predicates built on them.

Names are split into lower-case words (``_generateFallbackData`` -> generate, fallback,
data) and compared word by word, so ``count`` matches ``row_count`` but not ``account``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z0-9])|[A-Z]?[a-z0-9]+|[A-Z]+")

# Words that say output is invented...
INVENTED_WORDS = frozenset(
    {
        "mock",
        "mocked",
        "mocks",
        "fake",
        "faked",
        "fakes",
        "dummy",
        "dummies",
        "placeholder",
        "placeholders",
        "synthetic",
        "canned",
    }
)
# ...when the name also says what is output: ``_DummyThread`` and ``_fake_init`` (a stand-in
# thread, a stat for a virtual file) are system stand-ins, not answers. "fallback" alone
# usually names a failover to another real model or source (``call_fallback_model``).
OUTPUT_WORDS = frozenset(
    {
        "response",
        "responses",
        "reply",
        "replies",
        "answer",
        "answers",
        "text",
        "message",
        "messages",
        "content",
        "data",
        "dataset",
        "result",
        "results",
        "output",
        "outputs",
        "metrics",
        "stats",
        "payload",
        "body",
        "completion",
        "completions",
        "chunk",
        "chunks",
        "report",
        "records",
        "rows",
        "prediction",
        "predictions",
        "summary",
        "json",
    }
)
# A name made only of an invented word and these (``mock()``, ``get_fake()``) is output too.
_GENERIC_VERBS = frozenset({"get", "make", "build", "create", "generate", "return", "produce"})
# unittest.mock's factories: a mock returned from production code is never an answer.
MOCK_FACTORIES = frozenset(
    {
        "Mock",
        "MagicMock",
        "AsyncMock",
        "NonCallableMock",
        "NonCallableMagicMock",
        "PropertyMock",
        "create_autospec",
    }
)
ANSWER_FIELDS = frozenset(
    {
        "response",
        "answer",
        "content",
        "message",
        "text",
        "data",
        "result",
        "choices",
        "reply",
        "output",
    }
)
METRIC_WORDS = frozenset(
    {
        "latency",
        "duration",
        "elapsed",
        "cost",
        "costs",
        "price",
        "tokens",
        "throughput",
        "count",
        "rows",
        "usage",
        "rate",
        "ratio",
        "uptime",
        "availability",
        "cpu",
        "memory",
        "qps",
        "rps",
        "tps",
        "p50",
        "p90",
        "p95",
        "p99",
        "accuracy",
        "precision",
        "recall",
        "percent",
        "percentage",
        "revenue",
    }
)
# A key with one of these words is a setting or a bound, not a measurement.
SETTING_WORDS = frozenset(
    {"max", "min", "limit", "timeout", "default", "threshold", "target", "budget", "initial"}
)
ESTIMATE_WORDS = frozenset(
    {
        "estimate",
        "estimated",
        "estimates",
        "eta",
        "recovery",
        "quality",
        "confidence",
        "reliability",
        "relevance",
        "certainty",
        "freshness",
    }
)
# Keys that make a dict (or keywords that make an object) an honest error report.
ERROR_KEYS = frozenset(
    {
        "error",
        "errors",
        "error_code",
        "error_message",
        "error_type",
        "exception",
        "detail",
        "details",
        "problem",
        "failure",
        "failed",
        "status",
        "status_code",
        "is_error",
    }
)
# Flags whose value ``False`` says the object reports a failure (``{"healthy": False}``).
SUCCESS_FLAGS = frozenset(
    {"success", "ok", "healthy", "available", "alive", "up", "passed", "succeeded"}
)
SUCCESS_STATUSES = frozenset(
    {"ok", "success", "succeeded", "successful", "completed", "complete", "done", "healthy"}
)
# Words in a class name that make its instances honest error reports.
ERROR_CLASS_WORDS = frozenset(
    {"error", "exception", "problem", "failure", "fault", "failed", "fail", "err", "invalid"}
)
# Words in a function name that make text its ordinary output (a message builder, a
# formatter, a redactor): text it returns from a handler is what it is for.
MESSAGE_WORDS = frozenset(
    {
        "message",
        "messages",
        "msg",
        "error",
        "errors",
        "err",
        "reason",
        "description",
        "describe",
        "summary",
        "summarize",
        "repr",
        "str",
        "label",
        "title",
        "explain",
        "explanation",
        "hint",
        "warning",
        "help",
        "detail",
        "details",
        "banner",
        "usage",
        "prompt",
        "redact",
        "redacted",
        "mask",
        "masked",
    }
)
# Words that make a "fake"/"mock" name a transport adapter around real output
# (``fake_stream`` replays a real, complete response as a stream), not invented output.
ADAPTER_WORDS = frozenset({"stream", "streaming", "wrap", "wrapper", "iterator", "iter"})
# Words in a class name that make its instances answers (SIN002 positional text, SIN005).
ANSWER_CLASS_WORDS = frozenset(
    {"response", "answer", "reply", "result", "message", "completion", "output"}
)


def words(name: str) -> tuple[str, ...]:
    """The lower-case words of an identifier or key, split at ``_``, ``-`` and camelCase."""
    parts: list[str] = []
    for chunk in re.split(r"[_\-\s.]+", name):
        parts.extend(match.lower() for match in _CAMEL.findall(chunk))
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """The word lists in force for one file: the defaults plus a project's extra names."""

    invented_words: frozenset[str] = INVENTED_WORDS
    answer_fields: frozenset[str] = ANSWER_FIELDS
    metric_words: frozenset[str] = METRIC_WORDS
    estimate_words: frozenset[str] = ESTIMATE_WORDS
    # A project's own names: whole names (or, for fallback names, single words too).
    extra_fallback_names: frozenset[str] = field(default_factory=frozenset)
    extra_metric_fields: frozenset[str] = field(default_factory=frozenset)
    extra_estimate_fields: frozenset[str] = field(default_factory=frozenset)

    def extended(
        self,
        *,
        fallback_names: Iterable[str] = (),
        answer_fields: Iterable[str] = (),
        metric_fields: Iterable[str] = (),
        estimate_fields: Iterable[str] = (),
    ) -> Vocabulary:
        """This vocabulary with a project's extra names added."""
        return replace(
            self,
            extra_fallback_names=self.extra_fallback_names
            | {name.lower().strip("_") for name in fallback_names},
            answer_fields=self.answer_fields | {name.lower() for name in answer_fields},
            extra_metric_fields=self.extra_metric_fields | {n.lower() for n in metric_fields},
            extra_estimate_fields=self.extra_estimate_fields | {n.lower() for n in estimate_fields},
        )

    def is_fallback_name(self, name: str) -> bool:
        """Does this function name say that it produces invented output?"""
        ws = set(words(name))
        if not ws:
            return False
        extra = self.extra_fallback_names
        if name.lower().strip("_") in extra or ws & extra or name in MOCK_FACTORIES:
            return True
        invented = ws & self.invented_words
        if invented and (ws & OUTPUT_WORDS or ws - invented <= _GENERIC_VERBS):
            return True
        if ws & {"fallback", "fallbacks"} and ws & OUTPUT_WORDS:
            return True
        # generate_*_data: a generator of data, with or without a word in between.
        ordered = words(name)
        return (
            "generate" in ws
            and ordered[-1] == "data"
            and ordered.index("generate") < len(ordered) - 1
        )

    def is_answer_field(self, key: str) -> bool:
        return key.lower() in self.answer_fields

    def is_metric_field(self, key: str) -> bool:
        if key.lower() in self.extra_metric_fields:
            return True
        ws = set(words(key))
        return bool(ws & self.metric_words) and not ws & SETTING_WORDS

    def is_estimate_field(self, key: str) -> bool:
        if key.lower() in self.extra_estimate_fields:
            return True
        ws = set(words(key))
        return bool(ws & self.estimate_words) and not ws & SETTING_WORDS


def is_error_class(name: str) -> bool:
    """Does a class name say its instances report a failure (``ErrorResponse``)?"""
    return bool(set(words(name)) & ERROR_CLASS_WORDS)


def is_adapter_name(name: str) -> bool:
    """Does a name say it adapts a value (``_maybe_wrap_in_fake_stream``)?"""
    return bool(set(words(name)) & ADAPTER_WORDS)


def is_message_function(name: str) -> bool:
    """Does a function name say that text is what it produces (``format_error``)?"""
    return bool(set(words(name)) & MESSAGE_WORDS)


def is_answer_class(name: str) -> bool:
    """Does a class name say its instances are answers (``ChatResponse``, ``AIMessage``)?"""
    return bool(set(words(name)) & ANSWER_CLASS_WORDS)
