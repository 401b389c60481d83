"""The last check before an answer leaves: provenance present, and no known fallback text.

``ResponseGuard`` checks a finished answer; ``StreamHoldback`` keeps a stream's pieces back
while its tail could still become a forbidden phrase, so that no part of one goes out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

from sincere.answer import Answer
from sincere.errors import ErrorContext, GuardViolation

T = TypeVar("T")


class ResponseGuard:
    """Blocks answers that fail the honesty checks; the phrases match case-insensitively."""

    def __init__(self, forbidden_phrases: Iterable[str]) -> None:
        self.phrases = tuple(p.lower() for p in forbidden_phrases if p)

    def check(self, answer: object, context: ErrorContext) -> Answer:
        """The answer, unchanged, or GuardViolation naming what was wrong."""
        reason = self._violation(answer)
        if reason is None:
            assert isinstance(answer, Answer)
            return answer
        raise GuardViolation(f"response guard: {reason}; the answer was withheld", context=context)

    def check_text(self, sent: str, context: ErrorContext, new: int) -> None:
        """For the HTTP route's stream until the request pipeline replaces it (then delete):
        the cascade's ``StreamHoldback`` already keeps every phrase from reaching it."""
        longest = max((len(p) for p in self.phrases), default=0)
        reason = self.phrase_in(sent[-(longest + new) :].lower(), "the stream")
        if reason is not None:
            raise GuardViolation(
                f"response guard: {reason}; it was cut before that phrase was complete",
                context=context,
            )

    def phrase_in(self, text: str, what: str) -> str | None:
        """Why ``text`` (lower case) may not go out, or None; ``what`` names it in the reason."""
        # The phrase is named by its place in the list, not quoted: quoting it would hand the
        # client the very text the guard exists to keep from it.
        for number, phrase in enumerate(self.phrases, 1):
            if phrase in text:
                return f"{what} contains forbidden fallback phrase #{number} of the guard's list"
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
    Only the tail a phrase can span is kept, never the whole text.
    """

    __slots__ = ("_context", "_end", "_first", "_guard", "_held", "_keep", "_tail")

    def __init__(self, guard: ResponseGuard, context: ErrorContext, sent: str = "") -> None:
        """``sent``: text already out before this stream (a prefill it continues)."""
        self._guard = guard
        self._context = context
        self._keep = max((len(p) for p in guard.phrases), default=1) - 1
        self._first = frozenset(p[0] for p in guard.phrases)
        self._tail = _last(sent.lower(), self._keep)
        self._end = 0  # characters (lower-cased) taken so far
        self._held: deque[tuple[int, T]] = deque()  # (where its text ends, piece)

    def push(self, piece: T, text: str) -> list[T]:
        """Take the next piece (``text`` is its text); the pieces that may go out now."""
        if text:
            window = self._tail + text.lower()
            reason = self._guard.phrase_in(window, "the stream")
            if reason is not None:
                self._held.clear()
                raise GuardViolation(
                    f"response guard: {reason}; it was cut before any of that phrase went out",
                    context=self._context,
                )
            self._end += len(window) - len(self._tail)
            self._tail = _last(window, self._keep)
        if not self._held and not text:
            return [piece]
        self._held.append((self._end, piece))
        safe = self._end - self._suspect()
        released = []
        while self._held and self._held[0][0] <= safe:
            released.append(self._held.popleft()[1])
        return released

    def release_rest(self) -> list[T]:
        """Every piece still held, for when the whole answer has passed the guard."""
        rest = [piece for _, piece in self._held]
        self._held.clear()
        return rest

    def _suspect(self) -> int:
        """The length of the longest end of the text that a phrase could still grow from."""
        tail = self._tail
        for start in range(len(tail)):
            if tail[start] in self._first:
                end = tail[start:]
                if any(p.startswith(end) for p in self._guard.phrases):
                    return len(end)
        return 0


def _last(text: str, count: int) -> str:
    return text[len(text) - count :] if count < len(text) else text
