"""The last check before an answer leaves: provenance present, and no known fallback text."""

from __future__ import annotations

from collections.abc import Iterable

from sincere.answer import Answer
from sincere.errors import ErrorContext, GuardViolation


class ResponseGuard:
    """Blocks answers that fail the honesty checks (the gateway counts what it blocked)."""

    def __init__(self, forbidden_phrases: Iterable[str]) -> None:
        self._phrases = tuple(p.lower() for p in forbidden_phrases if p)

    def check(self, answer: object, context: ErrorContext) -> Answer:
        """The answer, unchanged, or GuardViolation naming what was wrong."""
        reason = self._violation(answer)
        if reason is None:
            assert isinstance(answer, Answer)
            return answer
        raise GuardViolation(
            f"response guard: {reason}; the answer was withheld",
            context=context,
            suggestions=["This is a defect in a provider or in sincere: report the request id."],
        )

    def check_text(self, sent: str, context: ErrorContext, new: int) -> None:
        """For streams: check the text sent so far, as each piece is about to go out.

        Only the tail that the newest piece can have completed a phrase in is searched.
        """
        longest = max((len(p) for p in self._phrases), default=0)
        reason = self._phrase_in(sent[-(longest + new) :].lower(), "the stream")
        if reason is not None:
            raise GuardViolation(
                f"response guard: {reason}; it was cut before that phrase was complete",
                context=context,
            )

    def _violation(self, answer: object) -> str | None:
        if not isinstance(answer, Answer):
            return "the payload is not an Answer with provenance"
        p = answer.provenance
        if not p.attempts or not p.attempts[-1].succeeded or not p.deployment:
            return "the provenance does not name a successful attempt"
        if (answer.completion.deployment, answer.completion.usage) != (p.deployment, p.usage):
            return "the provenance does not describe the completion"
        return self._phrase_in(answer.text.lower(), "the answer")

    def _phrase_in(self, text: str, what: str) -> str | None:
        # The phrase is named by its place in the list, not quoted: quoting it would hand the
        # client the very text the guard exists to keep from it.
        for number, phrase in enumerate(self._phrases, 1):
            if phrase in text:
                return f"{what} contains forbidden fallback phrase #{number} of the guard's list"
        return None
