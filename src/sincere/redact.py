"""Scrubbing of secrets from any text that may reach a user or the event stream."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

REDACTED = "[redacted]"

# Credentials in URLs (scheme://user:password@host), bearer tokens, and the key shapes the
# common providers issue. Known key values are removed first and exactly.
_PATTERNS = (
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),
    re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\b(?:sk|pk|rk|gsk|xai|sincere)[-_][A-Za-z0-9._-]{8,}"),
    re.compile(r"(?i)(?<=api[_-]key=)[^&\s]+"),
)

# A remembered secret is removed from answers too, so it must not be a word a model may
# well write: placeholders such as "EMPTY" or "ollama" (keys local servers ignore) are
# shorter than this and stay readable; real provider keys are far longer.
MIN_KNOWN_SECRET = 8

_known: tuple[str, ...] = ()  # replaced whole, never mutated: readers need no lock
_holders: dict[str, int] = {}  # how many live deployments hold each secret
_lock = threading.Lock()


def remember_secret(secret: str | None) -> None:
    """Make ``secret`` (a deployment's key) one that every later ``redact`` removes."""
    if secret and len(secret) >= MIN_KNOWN_SECRET:
        with _lock:
            _holders[secret] = _holders.get(secret, 0) + 1
            _publish()


def forget_secret(secret: str | None) -> None:
    """Undo one ``remember_secret``: the deployment holding it is gone."""
    if not secret:
        return
    with _lock:
        if secret in _holders:
            _holders[secret] -= 1
            if not _holders[secret]:
                del _holders[secret]
            _publish()


def _publish() -> None:
    global _known
    # Longest first: a key that contains another is removed whole.
    _known = tuple(sorted(_holders, key=len, reverse=True))


def known_secrets() -> tuple[str, ...]:
    """Every secret remembered by this process (the keys of its deployments)."""
    return _known


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` without the given and remembered secrets or credential-shaped tokens."""
    for secret in (*secrets, *_known):
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


class StreamRedactor:
    """Removes known secrets from text that arrives in pieces, such as a model's deltas.

    A secret may be split across two pieces, so the tail of a piece that could begin one
    (at most ``len(secret) - 1`` characters) is held until the next piece or ``flush``;
    a piece whose tail begins no secret passes whole and at once.
    """

    __slots__ = ("_held", "_secrets")

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(s for s in secrets if s)
        self._held = ""

    def feed(self, piece: str) -> str:
        """The part of the text so far that is safe to send now."""
        text = self._held + piece if self._held else piece
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        keep = self._pending(text)
        if keep:
            self._held = text[-keep:]
            return text[:-keep]
        self._held = ""
        return text

    def flush(self) -> str:
        """What is still held: the text ended, so it cannot become a secret any more."""
        held, self._held = self._held, ""
        return held

    def _pending(self, text: str) -> int:
        """The length of the longest tail of ``text`` that a secret starts with."""
        end, longest = len(text), 0
        for secret in self._secrets:
            first = secret[0]
            i = text.find(first, max(0, end - len(secret) + 1))
            while i != -1 and end - i > longest:
                if secret.startswith(text[i:]):
                    longest = end - i
                    break
                i = text.find(first, i + 1)
        return longest
