"""The rule table: stable codes, a one-line summary each, and the ``--explain`` text."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# A file that cannot be parsed is always reported: it was not checked, so it is not clean.
SYNTAX_ERROR = "SIN000"


@dataclass(frozen=True, slots=True)
class Rule:
    """One kind of fabrication the checker finds."""

    code: str
    name: str
    summary: str
    explanation: str

    def explain(self) -> str:
        """The text ``sincere lint --explain CODE`` prints."""
        return f"{self.code} ({self.name}): {self.summary}\n\n{self.explanation.strip()}\n"


_FAILURE_PATHS = """
A failure path is an `except` handler; a private function whose every call is returned or
yielded from a failure path; or the code after a `try` (or a retry loop around one) whose
body returns, reached only when every attempt failed.
"""

RULES: dict[str, Rule] = {
    rule.code: rule
    for rule in (
        Rule(
            SYNTAX_ERROR,
            "syntax-error",
            "the file could not be parsed, so it was not checked",
            """
The file is not valid Python for the interpreter running `sincere lint`. It is reported
(and cannot be ignored) because an unchecked file is not a clean file.
""",
        ),
        Rule(
            "SIN001",
            "fallback-text",
            "a failure path returns or yields canned text instead of failing",
            f"""
When the real work fails, the code answers with text it wrote itself: a string, an f-string
or a formatted literal of three or more words. The user cannot tell it from a real answer.
{_FAILURE_PATHS}
Bad:

    except Exception as exc:
        logger.error("LLM failed: %s", exc)
        return f"Processing completed with fallback response for: {{prompt}}"

Good: raise an error the caller can render honestly.

    except Exception as exc:
        raise ServiceUnavailable("the language model did not answer") from exc
""",
        ),
        Rule(
            "SIN002",
            "canned-answer",
            "a failure path returns an answer whose content fields hold literals",
            f"""
The failure path builds a dict, list or object whose answer-like fields (response, answer,
content, message, text, data, result, choices, reply, output) hold literal text or literal
data. An object that says it failed (an `error`, `detail` or `status` field, `success` or
`ok` false, an HTTP status of 400 or more, or a class named for an error) is an honest
error and is not flagged.
{_FAILURE_PATHS}
Bad:

    except Exception:
        return {{
            "response": "I apologize, but I encountered an error processing your request.",
            "model_selected": "fallback",
        }}

Good:

    except Exception as exc:
        return {{"error": {{"type": "service_unavailable", "detail": str(exc)}}}}
""",
        ),
        Rule(
            "SIN003",
            "fallback-call",
            "a failure path returns the result of a fallback, mock or fake generator",
            f"""
The failure path returns what a function named for invented output produced: mock, fake,
dummy, placeholder, synthetic, canned or fallback together with a word for output
(`_mock_response`, `get_dummy_answer`, `fallback_data`), `generate_*_data`, or a
`unittest.mock` factory (`MagicMock`). Failing over to another real model or source is
honest and is not flagged: `call_fallback_model()` does not name invented output, and
neither do stand-ins such as `_DummyThread()`.
{_FAILURE_PATHS}
Bad:

    except Exception as exc:
        self.logger.warning(f"Data fetch failed, using fallback: {{exc}}")
        return self._generate_fallback_data(metrics, 100)

Good: try the real alternatives, then fail with the reason.

    except Exception as exc:
        for source in self.alternative_sources:
            ...
        raise DataUnavailable("no data source answered") from exc
""",
        ),
        Rule(
            "SIN004",
            "fabricated-metric",
            "a failure path returns invented numbers: random values or literal metrics",
            f"""
The failure path returns numbers nobody measured: values from `random` (or
`numpy.random`), or non-zero literals in metric fields (latency, duration, cost, tokens,
count, rows, rate, throughput, uptime, usage, accuracy, ...). Zero is not flagged.
{_FAILURE_PATHS}
Bad:

    except DatabaseError:
        return {{"latency_ms": 120, "throughput": random.uniform(900, 1100)}}

Good: report what was measured, or fail.

    except DatabaseError as exc:
        raise DataUnavailable("the metrics store is down") from exc
""",
        ),
        Rule(
            "SIN005",
            "hardcoded-estimate",
            "a hard-coded estimate or score is attached to an error or an answer",
            """
An error or answer carries a literal estimate or judgement: a field named for an estimate,
ETA or recovery time, or a quality, confidence, reliability, relevance or freshness score,
holding a non-zero number. Checked in every `raise`, in every call to a class named for an
error or an answer (…Error, …Exception, …Response, …Answer, …Result), and in what failure
paths return. A recovery estimate must come from a real schedule (a circuit breaker's
next probe) or recorded history; a score must be computed; otherwise leave it out.

Bad:

    raise UnifiedServiceException(
        message="LLM services temporarily unavailable",
        estimated_recovery_time_seconds=30,
    )

Good:

    raise ServiceUnavailable(
        "LLM services temporarily unavailable", retry_after=breaker.seconds_until_probe()
    )
""",
        ),
    )
}

# The codes that --select and --ignore act on.
SELECTABLE: tuple[str, ...] = tuple(code for code in RULES if code != SYNTAX_ERROR)


def resolve_codes(specs: Iterable[str]) -> frozenset[str]:
    """Codes named by ``specs``: exact codes, or prefixes such as ``SIN`` or ``SIN00``.

    Raises ValueError naming the first spec that matches no rule.
    """
    codes: set[str] = set()
    for raw in specs:
        spec = raw.strip().upper()
        if not spec:
            continue
        matched = {code for code in SELECTABLE if code.startswith(spec)}
        if not matched:
            known = ", ".join(SELECTABLE)
            raise ValueError(f"unknown rule code {raw.strip()!r} (known: {known})")
        codes |= matched
    return frozenset(codes)


def split_codes(text: str | None) -> list[str]:
    """``"SIN001, SIN002"`` or ``"SIN001 SIN002"`` as a list of codes."""
    if not text:
        return []
    return [part for part in text.replace(",", " ").split() if part]
