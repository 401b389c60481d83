from __future__ import annotations

import pytest

from sincere.answer import Answer, Completion, Provenance, Usage
from sincere.attempts import Attempt


def _completion(**overrides: object) -> Completion:
    fields: dict[str, object] = {
        "text": "Paris.",
        "finish_reason": "stop",
        "deployment": "embedded",
        "provider": "embedded",
        "upstream_model": "SmolLM2-135M-Instruct",
        "usage": Usage(10, 2),
        "latency_s": 0.2,
    }
    fields.update(overrides)
    return Completion(**fields)  # type: ignore[arg-type]


def _provenance(**overrides: object) -> Provenance:
    fields: dict[str, object] = {
        "model": "smollm2",
        "requested_model": "smollm2",
        "deployment": "embedded",
        "provider": "embedded",
        "upstream_model": "SmolLM2-135M-Instruct",
        "usage": Usage(10, 2),
        "cost_usd": 0.0,
        "latency_s": 0.2,
        "time_to_first_token_s": 0.05,
        "finish_reason": "stop",
        "attempts": (Attempt("smollm2", "embedded", "embedded", "ok", 0.2),),
        "selection_reasoning": "Answered by 'embedded' at the first attempt.",
    }
    fields.update(overrides)
    return Provenance(**fields)  # type: ignore[arg-type]


def test_an_answer_takes_its_text_from_the_completion() -> None:
    answer = Answer(_completion(), _provenance())
    assert answer.text == "Paris."
    assert answer.to_dict()["provenance"]["usage"]["total_tokens"] == 12


def test_an_answer_cannot_be_built_from_text_alone() -> None:
    with pytest.raises(TypeError):
        Answer(text="I apologize, but I encountered an error.")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Answer("I apologize", _provenance())  # type: ignore[arg-type]


def test_an_answer_cannot_be_built_without_provenance() -> None:
    with pytest.raises(TypeError):
        Answer(_completion())  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Answer(_completion(), None)  # type: ignore[arg-type]


def test_provenance_must_describe_the_completion_it_is_attached_to() -> None:
    with pytest.raises(ValueError, match="does not describe"):
        Answer(_completion(deployment="other"), _provenance())
    with pytest.raises(ValueError, match="does not describe"):
        Answer(_completion(usage=Usage(1, 1)), _provenance())


def test_provenance_needs_the_successful_attempt_last() -> None:
    with pytest.raises(ValueError, match="attempt"):
        _provenance(attempts=())
    with pytest.raises(ValueError, match="attempt"):
        _provenance(attempts=(Attempt("smollm2", "embedded", "embedded", "timeout", 1.0),))


def test_a_completion_must_name_who_made_it() -> None:
    with pytest.raises(ValueError, match="deployment"):
        _completion(deployment="")


def test_unknown_cost_and_usage_are_absent_not_zero() -> None:
    p = _provenance(usage=None, cost_usd=None)
    out = p.to_dict()
    assert "usage" not in out
    assert "cost_usd" not in out
