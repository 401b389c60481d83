"""Who is asking: an API key's record, its role, its tier (vocabulary: imports no domain)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sincere.context import Tier


class KeyRole(StrEnum):
    """What a key may do: use the gateway, or also administer it."""

    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    prefix: str
    user_id: str
    tier: Tier
    role: KeyRole
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None
