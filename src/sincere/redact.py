"""Scrubbing of secrets from any text that may reach a user or the event stream."""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"

# Credentials in URLs (scheme://user:password@host), bearer tokens, and the key shapes the
# common providers issue. Known key values are removed first and exactly, by the caller.
_PATTERNS = (
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),
    re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\b(?:sk|pk|rk|gsk|xai|sincere)[-_][A-Za-z0-9._-]{8,}"),
    re.compile(r"(?i)(?<=api[_-]key=)[^&\s]+"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every given secret and every credential-shaped token removed."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text
