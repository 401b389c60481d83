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
    # Whom the key's owner asked to be reached at about its failures (an email address);
    # shown in enterprise error bodies only when set, never made up.
    contact: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request is served for: a verified key's user, or the operator at the console."""

    user_id: str
    tier: Tier
    role: KeyRole
    key_id: str | None  # None for the operator (the CLI runs with the configuration's rights)
    contact: str | None = None  # the key's contact, for the tickets of its failed requests

    @classmethod
    def of(cls, record: KeyRecord) -> Caller:
        return cls(record.user_id, record.tier, record.role, record.id, record.contact)
