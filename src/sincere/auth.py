"""Authentication: an API key becomes a ``Caller``, or a clear 401/403.

Every surface asks here: the HTTP routes, the event socket, and (as the operator of the
installation, who holds its configuration and so every deployment's key) the CLI.
"""

from __future__ import annotations

from sincere.context import Tier
from sincere.errors import AuthenticationFailed, ErrorContext, PermissionDenied, ServiceError
from sincere.identity import Caller, KeyRecord, KeyRole
from sincere.ports import KeyStore

# The tier of the operator's own requests from the console (`sincere chat`).
OPERATOR_TIER = Tier.STANDARD


class Authenticator:
    def __init__(self, keys: KeyStore) -> None:
        self._keys = keys

    async def key(self, key: str | None, request_id: str, *, admin: bool = False) -> KeyRecord:
        """The key's record, or AuthenticationFailed / PermissionDenied."""
        context = ErrorContext(request_id=request_id, service="auth")
        if not key:
            raise AuthenticationFailed(
                "no API key: send it as 'Authorization: Bearer <key>'",
                context=context,
                suggestions=["Create one with: sincere keys create --user U --tier T"],
            )
        try:
            record = await self._keys.verify(key)  # cached; a miss queries off the event loop
        except ServiceError as exc:  # the store is unreachable: a 503 of this request
            raise exc.with_context(context) from exc.__cause__
        if record is None:
            raise AuthenticationFailed(
                "the API key is unknown or revoked",
                context=context,
                suggestions=["Check the key, or create a new one with: sincere keys create"],
            )
        if admin and record.role is not KeyRole.ADMIN:
            raise PermissionDenied(
                "this needs a key with the admin role",
                context=ErrorContext(record.user_id, request_id, "auth", str(record.tier)),
            )
        return record

    async def caller(self, key: str | None, request_id: str) -> Caller:
        return Caller.of(await self.key(key, request_id))

    @staticmethod
    def operator(user_id: str) -> Caller:
        """The person at the console: trusted as the owner of the configuration."""
        return Caller(user_id, OPERATOR_TIER, KeyRole.USER, key_id=None)
