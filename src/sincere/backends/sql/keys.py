"""API keys: random, shown once, stored as a hash, bound to a user, a tier and a role."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import insert, select, update

from sincere.context import Tier
from sincere.store.database import Database
from sincere.store.schema import api_keys

KEY_PREFIX = "sk-sincere-"


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    prefix: str
    user_id: str
    tier: Tier
    role: Role
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _hash(key: str) -> str:
    # Keys carry 256 random bits: a plain SHA-256 cannot be brute-forced, and it is cheap
    # enough to check on every request.
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """Keys in the store, with a short-lived in-process cache of verified keys.

    Verifying is on every request's path; the cache saves a query per request. A key revoked
    by this process stops working at once; one revoked by another process (the ``sincere
    keys revoke`` command) within ``cache_ttl_s``.
    """

    def __init__(self, db: Database, cache_ttl_s: float = 5.0) -> None:
        self._db = db
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[KeyRecord, float]] = {}

    def create(
        self, user_id: str, tier: Tier | str, role: Role | str = Role.USER
    ) -> tuple[str, KeyRecord]:
        """A new key: the plaintext is returned here once and never stored."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = KeyRecord(
            id="key_" + secrets.token_hex(6),
            prefix=key[: len(KEY_PREFIX) + 4],
            user_id=user_id,
            tier=Tier(tier),
            role=Role(role),
            created_at=time.time(),
            revoked_at=None,
        )
        with self._db.engine.begin() as conn:
            conn.execute(
                insert(api_keys).values(
                    id=record.id,
                    key_hash=_hash(key),
                    prefix=record.prefix,
                    user_id=record.user_id,
                    tier=str(record.tier),
                    role=str(record.role),
                    created_at=record.created_at,
                )
            )
        return key, record

    @staticmethod
    def well_formed(key: str) -> bool:
        """Whether ``key`` has the shape of a sincere key (anything else is refused unread)."""
        return key.startswith(KEY_PREFIX)

    def cached(self, key: str) -> KeyRecord | None:
        """The record of a key verified less than ``cache_ttl_s`` ago, without a query."""
        cached = self._cache.get(_hash(key))
        return cached[0] if cached is not None and cached[1] > time.monotonic() else None

    def verify(self, key: str) -> KeyRecord | None:
        """The active key's record, or None for an unknown or revoked key."""
        if not self.well_formed(key):
            return None
        if (record := self.cached(key)) is not None:
            return record
        digest = _hash(key)
        now = time.monotonic()
        with self._db.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_hash == digest)).one_or_none()
        if row is None or row.revoked_at is not None:
            self._cache.pop(digest, None)
            return None
        record = _record(row)
        if len(self._cache) > 10_000:  # bounded: a flood of distinct keys cannot grow it
            self._cache.clear()
        self._cache[digest] = (record, now + self._ttl)
        return record

    def list(self) -> list[KeyRecord]:
        with self._db.engine.connect() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at)).all()
        return [_record(r) for r in rows]

    def count_active(self) -> int:
        return sum(1 for r in self.list() if r.active)

    def revoke(self, key_id: str) -> bool:
        """Revoke by public id; False when no active key has that id."""
        with self._db.engine.begin() as conn:
            result = conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        self._cache = {h: v for h, v in self._cache.items() if v[0].id != key_id}
        return result.rowcount == 1


def _record(row: object) -> KeyRecord:
    r = row._mapping  # type: ignore[attr-defined]
    return KeyRecord(
        id=r["id"],
        prefix=r["prefix"],
        user_id=r["user_id"],
        tier=Tier(r["tier"]),
        role=Role(r["role"]),
        created_at=r["created_at"],
        revoked_at=r["revoked_at"],
    )
