"""The last check before an answer leaves: provenance present, and no known fallback text.

``ResponseGuard`` checks a finished answer; ``StreamHoldback`` keeps a stream's pieces back
while its tail could still become a forbidden phrase, so that no part of one goes out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

from sincere.answer import Answer
from sincere.errors import ErrorContext, GuardViolation

T = TypeVar("T")


class ResponseGuard:
    """Blocks answers that fail the honesty checks; the phrases match case-insensitively."""

    def __init__(self, forbidden_phrases: Iterable[str]) -> None:
        self.phrases = tuple(p.lower() for p in forbidden_phrases if p)
        self.matcher = PhraseMatcher(self.phrases)

    def check(self, answer: object, context: ErrorContext) -> Answer:
        """The answer, unchanged, or GuardViolation naming what was wrong."""
        reason = self._violation(answer)
        if reason is None:
            assert isinstance(answer, Answer)
            return answer
        raise GuardViolation(f"response guard: {reason}; the answer was withheld", context=context)

    def phrase_in(self, text: str, what: str) -> str | None:
        """Why ``text`` (lower case) may not go out, or None; ``what`` names it in the reason."""
        for number, phrase in enumerate(self.phrases, 1):
            if phrase in text:
                return _reason(number, what)
        return None

    def _violation(self, answer: object) -> str | None:
        if not isinstance(answer, Answer):
            return "the payload is not an Answer with provenance"
        p = answer.provenance
        if not p.attempts or not p.attempts[-1].succeeded or not p.deployment:
            return "the provenance does not name a successful attempt"
        if (answer.completion.deployment, answer.completion.usage) != (p.deployment, p.usage):
            return "the provenance does not describe the completion"
        return self.phrase_in(answer.text.lower(), "the answer")


class StreamHoldback(Generic[T]):
    """Holds a stream's pieces back while its tail could still begin a forbidden phrase.

    As a stop sequence is handled: a piece goes out whole (with whatever else it carries)
    once the text after it shows that no phrase starts in it; a phrase completed in the
    stream raises ``GuardViolation`` before any of it went out. Whatever is still held at
    the end goes out with ``release_rest``, once the finished answer passed the guard.
    """

    __slots__ = ("_context", "_end", "_held", "_matcher", "_state")

    def __init__(self, guard: ResponseGuard, context: ErrorContext, sent: str = "") -> None:
        """``sent``: text already out before this stream (a prefill it continues)."""
        self._matcher = guard.matcher
        self._context = context
        self._state = self._matcher.after(sent.lower())
        self._end = 0  # characters (lower-cased) taken so far
        self._held: deque[tuple[int, T]] = deque()  # (where its text ends, piece)

    def push(self, piece: T, text: str) -> list[T]:
        """Take the next piece (``text`` is its text); the pieces that may go out now."""
        if text:
            lowered = text.lower()
            self._state, number = self._matcher.feed(self._state, lowered)
            if number:
                self._held.clear()
                raise GuardViolation(
                    f"response guard: {_reason(number, 'the stream')}; it was cut before any "
                    "of that phrase went out",
                    context=self._context,
                )
            self._end += len(lowered)
        begun = self._matcher.depth[self._state]  # the end of the text a phrase may grow from
        if not begun and not self._held:
            return [piece]
        self._held.append((self._end, piece))
        safe = self._end - begun
        released = []
        while self._held and self._held[0][0] <= safe:
            released.append(self._held.popleft()[1])
        return released

    def release_rest(self) -> list[T]:
        """Every piece still held, for when the whole answer has passed the guard."""
        rest = [piece for _, piece in self._held]
        self._held.clear()
        return rest


class PhraseMatcher:
    """The phrases as one automaton (Aho-Corasick, made a full table), fed text as it comes.

    A state is the longest end of the text so far that begins a phrase (``depth`` is its
    length); reaching one that ends a phrase reports the phrase. Each character costs one
    dictionary lookup, however many phrases there are.
    """

    def __init__(self, phrases: Sequence[str]) -> None:
        goto: list[dict[str, int]] = [{}]
        self.depth = [0]
        self._found = [0]  # the number (from 1) of a phrase that ends in a state, else 0
        for number, phrase in enumerate(phrases, 1):
            state = 0
            for char in phrase:
                if char not in goto[state]:
                    goto[state][char] = len(goto)
                    goto.append({})
                    self.depth.append(self.depth[state] + 1)
                    self._found.append(0)
                state = goto[state][char]
            self._found[state] = self._found[state] or number
        # Breadth first, so that the shorter states a longer one falls back to are done:
        # a character that does not continue a state continues its longest proper end that
        # begins a phrase (``fail``) instead; any character no phrase holds leads to 0.
        self._next: list[dict[str, int]] = [dict(goto[0])] + [{} for _ in goto[1:]]
        fail = [0] * len(goto)
        queue = deque(goto[0].values())
        while queue:
            state = queue.popleft()
            self._next[state] = {**self._next[fail[state]], **goto[state]}
            for char, child in goto[state].items():
                fail[child] = self._next[fail[state]].get(char, 0) if state else 0
                self._found[child] = self._found[child] or self._found[fail[child]]
                queue.append(child)

    def feed(self, state: int, text: str) -> tuple[int, int]:
        """The state after ``text``, and the number of a phrase it completed (0: none)."""
        table, found = self._next, self._found
        for char in text:
            state = table[state].get(char, 0)
            if found[state]:
                return state, found[state]
        return state, 0

    def after(self, text: str) -> int:
        """The state after ``text``, whatever it holds."""
        state = 0
        for char in text[len(text) - max(self.depth) :]:
            state, _ = self.feed(state, char)
        return state


def _reason(number: int, what: str) -> str:
    # The phrase is named by its place in the list, not quoted: quoting it would hand the
    # client the very text the guard exists to keep from it.
    return f"{what} contains forbidden fallback phrase #{number} of the guard's list"
