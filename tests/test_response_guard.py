"""The response guard's stream holdback on its own: what goes out, what waits, what is cut."""

from __future__ import annotations

import random

import pytest

from sincere.config import DEFAULT_FORBIDDEN_PHRASES
from sincere.errors import ErrorContext, GuardViolation
from sincere.guard.response_guard import ResponseGuard, StreamHoldback

GUARD = ResponseGuard(DEFAULT_FORBIDDEN_PHRASES)
CONTEXT = ErrorContext(request_id="r1", service="response_guard")


def _holdback(sent: str = "") -> StreamHoldback[str]:
    return StreamHoldback(GUARD, CONTEXT, sent)


def _push(holdback: StreamHoldback[str], *pieces: str) -> list[str]:
    """Every piece released while ``pieces`` were pushed (a piece is its own text)."""
    return [out for piece in pieces for out in holdback.push(piece, piece)]


def test_text_that_cannot_begin_a_phrase_goes_out_at_once() -> None:
    holdback = _holdback()
    assert holdback.push("Water", "Water") == ["Water"]
    assert holdback.push(" boils.", " boils.") == [" boils."]
    assert holdback.release_rest() == []


def test_a_piece_that_could_begin_a_phrase_waits_until_the_text_rules_it_out() -> None:
    holdback = _holdback()
    assert _push(holdback, "Well,", " I") == ["Well,"]  # "i" may begin the apology
    assert _push(holdback, " apologize,") == []
    assert _push(holdback, " but", " I", " cannot") == [
        " I",
        " apologize,",
        " but",
        " I",
        " cannot",
    ]


def test_matching_ignores_case_as_the_guard_does() -> None:
    holdback = _holdback()
    assert _push(holdback, "i APOLOGIZE, BUT i") == []
    with pytest.raises(GuardViolation):
        _push(holdback, " ENCOUNTERED an error PROCESSING your Request")


def test_a_completed_phrase_is_cut_before_any_of_it_went_out_and_is_not_quoted() -> None:
    holdback = _holdback()
    released = _push(holdback, "Sure.", " I", " apologize,", " but", " I", " encountered")
    with pytest.raises(GuardViolation) as info:
        _push(holdback, " an", " error", " processing", " your", " request.")
    assert released == ["Sure."]
    assert "forbidden fallback phrase #1" in info.value.message
    assert "apolog" not in info.value.message.lower()
    assert info.value.context == CONTEXT
    assert holdback.release_rest() == []  # what was held is dropped with the answer


def test_pieces_without_text_keep_their_place_behind_held_text() -> None:
    holdback = _holdback()
    assert holdback.push("Fetching", "Fetching") == ["Fetching"]
    assert holdback.push("call-1", "") == ["call-1"]  # a tool-call fragment: nothing held
    assert holdback.push(" data u", " data u") == []  # "u" may begin "using fallback data"
    assert holdback.push("call-2", "") == []  # behind the held text, in order
    assert holdback.push("p.", "p.") == [" data u", "call-2", "p."]


def test_the_rest_goes_out_when_the_finished_answer_passed() -> None:
    holdback = _holdback()
    assert _push(holdback, "Ask", " me", " again", " if", " I") == ["Ask", " me", " again", " if"]
    assert holdback.release_rest() == [" I"]


def test_a_phrase_that_began_in_the_text_already_sent_is_caught() -> None:
    holdback = _holdback(sent="Here you go. I apologize, but I")  # a prefill continued
    assert _push(holdback, " encountered", " an") == []
    with pytest.raises(GuardViolation):
        _push(holdback, " error processing your request")


def test_without_phrases_nothing_waits() -> None:
    holdback = StreamHoldback[str](ResponseGuard([]), CONTEXT)
    assert _push(holdback, "I", " apologize") == ["I", " apologize"]


@pytest.mark.parametrize(
    "phrases",
    [DEFAULT_FORBIDDEN_PHRASES, ("abab", "bab", "aab", "b"), ("aaa", "aab")],
    ids=["defaults", "overlapping", "repeated-letters"],
)
def test_the_matcher_agrees_with_a_plain_search_on_every_text(phrases: tuple[str, ...]) -> None:
    """What a phrase can still grow from, and whether one is complete, against brute force."""
    guard = ResponseGuard(phrases)
    letters = "".join(sorted(set("".join(guard.phrases)))) + "xy "
    rng = random.Random(10)
    for _ in range(3000):
        text = "".join(rng.choice(letters) for _ in range(rng.randint(0, 80)))
        state, number = guard.matcher.feed(0, text)
        if any(p in text for p in guard.phrases):
            assert number, text
            # Reported where the first phrase ends, and it is that phrase.
            ends = min(text.find(p) + len(p) for p in guard.phrases if p in text)
            _, first = guard.matcher.feed(0, text[:ends])
            assert text[:ends].endswith(guard.phrases[first - 1]), text
            continue
        assert number == 0, text
        begun = [n for p in guard.phrases for n in range(1, len(p)) if text.endswith(p[:n])]
        assert guard.matcher.depth[state] == max(begun, default=0), text
