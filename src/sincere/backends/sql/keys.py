"""API keys in SQL: random, shown once, stored as a hash, bound to a user, a tier and a role."""

from __future__ import annotations

import builtins
import hashlib
import secrets
import time
from collections.abc import Callable

from sqlalchemy import insert, select, update

from sincere.backends.sql.database import Database
from sincere.backends.sql.schema import api_keys
from sincere.context import Tier
from sincere.identity import KeyRecord, KeyRole

KEY_PREFIX = "sk-sincere-"
CACHE_LIMIT = 10_000  # verified keys kept: a flood of distinct keys cannot grow the cache


def _hash(key: str) -> str:
    # Keys carry 256 random bits: a plain SHA-256 cannot be brute-forced, and it is cheap
    # enough to check on every request.
    return hashlib.sha256(key.encode()).hexdigest()


class SqlKeyStore:
    """``ports.KeyStore`` on the store, with a short-lived in-process cache of verified keys.

    Verifying is on every request's path: a cached key is answered without I/O, and every
    statement runs on a worker thread, so a flood of unknown keys or a slow database cannot
    stall the event loop. A key revoked by this process stops working at once; one revoked
    by another process (``sincere keys revoke``) within ``cache_ttl_s``.
    """

    def __init__(
        self,
        db: Database,
        cache_ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._ttl = cache_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[KeyRecord, float]] = {}  # key hash -> (record, until)
        self._revocations = 0  # a lookup that a revocation overtook must not be cached

    async def verify(self, key: str) -> KeyRecord | None:
        """The active key's record, or None for an unknown, revoked or malformed key."""
        if not key.startswith(KEY_PREFIX):  # anything else is refused unread
            return None
        digest = _hash(key)
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        revocations, until = self._revocations, self._clock() + self._ttl
        record = await self._db.run(self._select, digest)
        if record is None or not record.active:
            self._cache.pop(digest, None)
            return None
        if revocations == self._revocations:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = (record, until)
        return record

    async def create(
        self, user_id: str, tier: str, role: KeyRole = KeyRole.USER, contact: str | None = None
    ) -> tuple[str, KeyRecord]:
        """A new key: the plaintext is returned here once and never stored."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = KeyRecord(
            id="key_" + secrets.token_hex(6),
            prefix=key[: len(KEY_PREFIX) + 4],
            user_id=user_id,
            tier=Tier(tier),
            role=KeyRole(role),
            created_at=time.time(),
            revoked_at=None,
            contact=contact,
        )
        await self._db.run(self._insert, record, _hash(key))
        return key, record

    async def list(self) -> list[KeyRecord]:
        return await self._db.run(self._select_all)

    async def revoke(self, key_id: str) -> bool:
        """Revoke by public id; False when no active key has that id."""
        revoked = await self._db.run(self._update_revoked, key_id, time.time())
        self._revocations += 1
        self._cache = {h: v for h, v in self._cache.items() if v[0].id != key_id}
        return revoked

    # The statements, each run on a worker thread.

    def _select(self, digest: str) -> KeyRecord | None:
        with self._db.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_hash == digest)).one_or_none()
        return None if row is None else _record(row)

    def _select_all(self) -> builtins.list[KeyRecord]:  # `list` is a method here
        with self._db.engine.connect() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at)).all()
        return [_record(r) for r in rows]

    def _insert(self, record: KeyRecord, digest: str) -> None:
        with self._db.engine.begin() as conn:
            conn.execute(
                insert(api_keys).values(
                    id=record.id,
                    key_hash=digest,
                    prefix=record.prefix,
                    user_id=record.user_id,
                    tier=str(record.tier),
                    role=str(record.role),
                    created_at=record.created_at,
                    contact=record.contact,
                )
            )

    def _update_revoked(self, key_id: str, at: float) -> bool:
        with self._db.engine.begin() as conn:
            result = conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )
        return result.rowcount == 1


def _record(row: object) -> KeyRecord:
    r = row._mapping  # type: ignore[attr-defined]
    return KeyRecord(
        id=r["id"],
        prefix=r["prefix"],
        user_id=r["user_id"],
        tier=Tier(r["tier"]),
        role=KeyRole(r["role"]),
        created_at=r["created_at"],
        revoked_at=r["revoked_at"],
        contact=r["contact"],
    )
