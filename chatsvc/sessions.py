"""Login sessions that last and can be ended (issue 16, point 1).

A login starts a session: a *family* of refresh tokens. Each refresh token is
high-entropy (256 bits), stored only as its SHA-256, valid
``REFRESH_TOKEN_TTL_SECONDS``, and exchanged once for the next (rotation); the
API signs a short-lived access token next to it, naming the session
(:mod:`chatsvc.api.security`). A refresh token presented a second time means
two parties hold it: the whole family is revoked and an audit line says so.

Ending sessions: ``end`` (logout) revokes one family; ``end_all`` (logout
everywhere) revokes them all and raises the user's token version, which refuses
every access token issued before and closes the user's open sockets with 4401
(:class:`~chatsvc.access.AccessWatch`). A password change does the same for every
session but the caller's, which gets a fresh pair at the new version.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NoReturn
from uuid import UUID

import msgspec

from chatsvc import session_store
from chatsvc.accounts import Accounts, ActiveUser
from chatsvc.audit import audit
from chatsvc.bearer import new_secret, secret_hash
from chatsvc.errors import Unauthorized
from chatsvc.session_store import RefreshRecord

ENDED = "this session has ended; log in again"


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """A session's new refresh token, for the API to send with an access token."""

    user: ActiveUser
    family: UUID
    refresh_token: str
    refresh_expires_in: int


class Sessions:
    """Start, renew and end the login sessions of users."""

    def __init__(self, accounts: Accounts, refresh_seconds: int) -> None:
        self._accounts = accounts
        self.refresh_seconds = refresh_seconds

    def _new_token(self) -> tuple[str, datetime]:
        expires_at = datetime.now(UTC) + timedelta(seconds=self.refresh_seconds)
        return new_secret(), expires_at

    def _session(self, user: ActiveUser, family: UUID, token: str) -> Session:
        return Session(
            user=user, family=family, refresh_token=token, refresh_expires_in=self.refresh_seconds
        )

    async def start(self, user: ActiveUser) -> Session:
        """A new session for a user who just logged in."""
        token, expires_at = self._new_token()
        family = await session_store.start(
            user.id, user.token_version, secret_hash(token), expires_at, family=None
        )
        return self._session(user, family, token)

    async def refresh(self, token: str, *, address: str | None = None) -> Session:
        """Exchange a refresh token for the session's next one; :class:`Unauthorized` when
        it is unknown, expired, revoked, or already used (which revokes the session)."""
        record = await session_store.find(secret_hash(token))
        if record is None:
            raise Unauthorized(ENDED)
        if record.used_at is not None:
            await self._reused(record, address)
        if record.revoked_at is not None or record.expires_at <= datetime.now(UTC):
            raise Unauthorized(ENDED)
        user = await self._accounts.active_user(record.account)
        if user is None or user.token_version != record.version:
            # Deactivated, or every token revoked (password, logout everywhere) since.
            await session_store.revoke_family(record.family)
            raise Unauthorized(ENDED)
        new, expires_at = self._new_token()
        if not await session_store.exchange(record, secret_hash(new), expires_at):
            await self._reused(record, address)  # exchanged by someone else meanwhile
        return self._session(user, record.family, new)

    async def _reused(self, record: RefreshRecord, address: str | None) -> NoReturn:
        await session_store.revoke_family(record.family)
        audit(
            "refresh_token_reused",
            "refresh token presented again: its session is revoked",
            user_id=record.account,
            session=str(record.family),
            address=address,
        )
        raise Unauthorized(ENDED)

    async def end(self, token: str) -> None:
        """Log out: revoke the session of this refresh token (none: nothing to do)."""
        record = await session_store.find(secret_hash(token))
        if record is not None:
            await session_store.revoke_family(record.family)

    async def end_all(self, user: ActiveUser, *, address: str | None = None) -> None:
        """Log out everywhere: every session, every access token, every open socket."""
        await self._accounts.revoke_tokens(user.id)
        await session_store.revoke_user(user.id)
        audit("logout_all", "logged out everywhere", username=user.username, address=address)

    async def change_password(
        self,
        user: ActiveUser,
        family: UUID | None,
        current: str,
        new: str,
        *,
        address: str | None = None,
    ) -> Session:
        """Change the password and end every other session; this one (``family``) goes on
        with a fresh refresh token (or a new session, when it has none or it has ended)."""
        changed = await self._accounts.change_password(user, current, new, address=address)
        await session_store.revoke_user(user.id, keep=family)
        token, expires_at = self._new_token()
        hashed = secret_hash(token)
        if family is None or not await session_store.renew(
            family, user.id, changed.token_version, hashed, expires_at
        ):
            family = await session_store.start(
                user.id, changed.token_version, hashed, expires_at, family=None
            )
        return self._session(changed, family, token)
