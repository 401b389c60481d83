"""One try of one deployment: the record both answers and errors carry."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

OK = "ok"
BLOCKED = "blocked"  # the response guard withheld the answer this attempt produced


@dataclass(frozen=True, slots=True)
class Attempt:
    """What happened when a request was sent to one deployment.

    ``outcome`` is ``"ok"`` or the ``error_type`` of the error that ended the attempt;
    ``detail`` is already free of secrets (providers redact before they raise).
    """

    model: str
    deployment: str
    provider: str
    outcome: str
    duration_s: float
    status_code: int | None = None
    detail: str | None = None
    retry_after_s: float | None = None
    cost_usd: float | None = None  # what this attempt was billed; None when unknown

    @property
    def succeeded(self) -> bool:
        return self.outcome == OK

    def to_dict(self) -> dict[str, Any]:
        # By hand rather than dataclasses.asdict: this runs for every attempt of every answer.
        return {f: v for f in _FIELDS if (v := getattr(self, f)) is not None}

    def summary(self) -> str:
        """One human line: ``openai-mini (gpt-4o-mini): unavailable after 0.012 s: ...``."""
        line = f"{self.deployment} ({self.model}): {self.outcome} after {self.duration_s:.3f} s"
        return f"{line}: {self.detail}" if self.detail else line


_FIELDS = tuple(f.name for f in fields(Attempt))
