"""The quality gate: an empty or degenerate completion is a failure, never an answer."""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORDS = re.compile(r"\S+")
MAX_PHRASE_WORDS = 16


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a completion is not an answer."""

    reason: str
    loop: bool  # it ended in a repeated phrase (rather than being empty or blank)


def rejection(text: str, min_words: int = 24, min_repeats: int = 4) -> Rejection | None:
    """Why ``text`` is not an answer, or None when it passes.

    Degenerate means the text ends in a loop: one phrase of up to 16 words repeated back to
    back at least ``min_repeats`` times, covering at least ``min_words`` words. The last
    repetition may be cut short (generation stopped mid-phrase at the token limit).
    """
    if not text.strip():
        reason = "the completion is empty" if not text else "the completion is only whitespace"
        return Rejection(reason, loop=False)
    words = _WORDS.findall(text.lower())
    if len(words) < min_words:  # too short to hold a loop of min_words words
        return None
    for size in range(1, MAX_PHRASE_WORDS + 1):
        for cut in range(size):
            end = len(words) - cut
            if size * min_repeats > end:
                break
            phrase = words[end - size : end]
            repeats = 1
            while words[end - size * (repeats + 1) : end - size * repeats] == phrase:
                repeats += 1
            if repeats >= min_repeats and repeats * size >= min_words:
                return Rejection(
                    f"the completion degenerated into a loop ({' '.join(phrase)!r} × {repeats})",
                    loop=True,
                )
    return None
