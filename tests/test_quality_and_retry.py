from __future__ import annotations

import pytest

from sincere.errors import (
    BadRequest,
    ContextTooLong,
    RateLimited,
    ServiceTimeout,
    ServiceUnavailable,
    UpstreamError,
)
from sincere.llm.quality import rejection
from sincere.llm.retry import RetryPolicy, backoff_s, is_retryable


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("  \n\t ", "only whitespace"),
        ("the cat sat on the mat " * 10, "loop ('the cat sat on the mat' × 10)"),
        ("Sure. " + "I am here. " * 12, "loop ('i am here.' × 12)"),
        ("la femme au martyre, " * 8 + "la femme", "loop"),  # cut mid-phrase at the limit
    ],
)
def test_the_gate_rejects_empty_and_looping_text(text: str, reason: str) -> None:
    found = rejection(text)
    assert found is not None
    assert reason in found.reason


@pytest.mark.parametrize(
    "text",
    [
        "Paris.",
        "1. red\n2. green\n3. blue",
        "no, no, no, no.",  # short emphasis is not a loop
        "The rain in Spain stays mainly in the plain. " * 2,
    ],
)
def test_the_gate_passes_real_answers(text: str) -> None:
    assert rejection(text) is None


def test_retryable_failures_are_transient_ones_before_any_text() -> None:
    assert is_retryable(RateLimited("x", status_code=429), text_received=False)
    assert is_retryable(ServiceUnavailable("refused"), text_received=False)
    assert is_retryable(UpstreamError("x", status_code=502), text_received=False)
    assert not is_retryable(UpstreamError("x", status_code=502), text_received=True)
    assert not is_retryable(ServiceTimeout("silent"), text_received=False)
    assert not is_retryable(ContextTooLong("x", status_code=400), text_received=False)
    assert not is_retryable(BadRequest("x", status_code=400), text_received=False)


def test_backoff_is_capped_exponential_with_jitter_and_never_zero() -> None:
    policy = RetryPolicy(max_retries=5, base_s=1.0, max_s=4.0)
    for retry, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 4.0)):
        waits = [backoff_s(policy, retry, None, budget_s=100) for _ in range(50)]
        assert all(w is not None and ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1  # jittered
    assert backoff_s(policy, 6, None, budget_s=100) is None  # out of retries


def test_retry_after_is_honoured_when_it_fits_the_budget_else_fail_over() -> None:
    policy = RetryPolicy(max_retries=2, base_s=0.5, max_s=8)
    assert backoff_s(policy, 1, 3.0, budget_s=8) == 3.0
    assert backoff_s(policy, 1, 30.0, budget_s=8) is None
    assert backoff_s(policy, 1, None, budget_s=0.1) is None  # not even a backoff fits
