"""The number rule: a narrative may state only its findings' numbers, as a writer shows them."""

from __future__ import annotations

import pytest

from sincere.agents.numbers import Figure, NumberRule, Unit, invented, stated_numbers
from sincere.errors import NumbersRejected, QualityRejected

COST = Figure(12.3456, Unit.USD)
SHARE = Figure(0.25, Unit.RATIO)
P50 = Figure(0.4215, Unit.SECONDS)
REQUESTS = Figure(1204, Unit.COUNT)
FIGURES = (COST, SHARE, P50, REQUESTS)


@pytest.mark.parametrize(
    "text",
    [
        "It cost $12.3456.",
        "It cost $12.35.",
        "It cost $12.3.",
        "It cost $12.",
        "It cost 12.3 dollars.",
        "A share of 25% of the spend.",
        "A share of 25.0 % of the spend.",
        "A share of 25 percent.",
        "A share of 0.25.",
        "Median latency 0.42 s.",
        "Median latency 422 ms.",
        "Median latency 0.4 seconds.",
        "1,204 requests.",
        "1204 requests.",
        "1.2k requests.",
        "No numbers at all.",
    ],
)
def test_a_writers_rounding_and_units_pass(text: str) -> None:
    assert invented(text, FIGURES) == []


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("It cost $12.4.", ["$12.4"]),  # 12.3456 rounds to 12.3, never 12.4
        ("It cost $12.30.", ["$12.30"]),  # claims a precision the value does not have
        ("Your spend went up 30%.", ["30%"]),  # invented
        ("Your spend went up 37% this week.", ["37%"]),
        ("A share of 25 s.", ["25 s"]),  # a ratio is not a duration
        ("It cost $25.", ["$25"]),  # a share is not a price
        ("Median latency 420 ms.", ["420 ms"]),  # 421.5 ms rounds to 421 or 422
        ("Median latency 0.4215 ms.", ["0.4215 ms"]),  # seconds are not milliseconds
        ("1,205 requests.", ["1,205"]),
        ("1.3k requests.", ["1.3k"]),
        ("1. Spend\n2. Latency", ["1", "2"]),  # list markers count like any number
        ("About 3 times the cost.", ["3"]),
        ("Cost fell by -5%.", ["5%"]),
    ],
)
def test_any_other_number_is_invented(text: str, bad: list[str]) -> None:
    assert invented(text, FIGURES) == bad


def test_names_and_words_with_digits_are_not_numbers() -> None:
    # Digits glued to letters are names (p95, gpt4o); names the findings carry are taken
    # out before reading, even when they hold digits of their own.
    text = "The p95 of gpt4o on SmolLM2-135M-Instruct over 7d was 0.42 s."
    assert invented(text, FIGURES, names=("SmolLM2-135M-Instruct", "7d")) == []
    assert invented("SmolLM2-135M-Instruct answered.", FIGURES) == ["135M"]


def test_what_is_read_from_a_text() -> None:
    found = stated_numbers("$0.42, 25%, 1,204 and 422 ms")
    assert [(s.text, s.value, s.decimals, s.kind) for s in found] == [
        ("$0.42", 0.42, 2, "usd"),
        ("25%", 25.0, 0, "percent"),
        ("1,204", 1204.0, 0, ""),
        ("422 ms", 422.0, 0, "ms"),
    ]


def test_the_rule_rejects_as_a_quality_failure_naming_the_numbers() -> None:
    rule = NumberRule(FIGURES, ())
    assert rule("Most of it is 25% of $12.3.") is None
    rejected = rule("Your spend went up 37% and 30%.")
    assert isinstance(rejected, NumbersRejected)
    assert isinstance(rejected, QualityRejected)  # a failed attempt, not the breaker's
    assert rejected.error_type == "invented_numbers"
    assert "'37%'" in rejected.message
    assert "'30%'" in rejected.message


def test_zero_and_tiny_values() -> None:
    tiny = Figure(0.000042, Unit.USD)
    assert invented("It cost $0.000042.", [tiny]) == []
    assert invented("It cost $0.00004.", [tiny]) == []
    assert invented("It cost $0.00005.", [tiny]) == ["$0.00005"]
    assert invented("0 requests failed.", [Figure(0, Unit.COUNT)]) == []
