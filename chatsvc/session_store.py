"""The queries of login sessions: the ``refresh_token`` table (issue 16, point 1).

A session is a *family* of refresh tokens, each replacing the one before. Only a
token's SHA-256 is stored. A token is exchanged once: the exchange marks it
``used_at`` and inserts the next one in the same transaction, so two exchanges of
one token cannot both succeed.
"""

# Piccolo's query builders are unparameterised generics (see store.py): the unknowns
# end here, where every row becomes a typed record.
# pyright: reportUnknownMemberType=false, reportUnknownVariableType=false
# pyright: reportUnknownArgumentType=false

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import msgspec

from chatsvc.database import current_engine, write_transaction
from chatsvc.tables import RefreshToken


class RefreshRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored refresh token (never the token itself)."""

    id: UUID
    family: UUID
    account: int
    version: int
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None


def now() -> datetime:
    return datetime.now(UTC)


def _record(row: dict[str, Any]) -> RefreshRecord:
    return msgspec.convert(row, RefreshRecord, strict=False)


_COLUMNS = (
    RefreshToken.id,
    RefreshToken.family,
    RefreshToken.account,
    RefreshToken.version,
    RefreshToken.expires_at,
    RefreshToken.used_at,
    RefreshToken.revoked_at,
)


def _row(
    account: int, family: UUID, version: int, token_hash: str, expires_at: datetime
) -> RefreshToken:
    return RefreshToken(
        id=uuid4(),
        family=family,
        account=account,
        token_hash=token_hash,
        version=version,
        created_at=now(),
        expires_at=expires_at,
    )


async def find(token_hash: str) -> RefreshRecord | None:
    rows = (
        await RefreshToken.select(*_COLUMNS).where(RefreshToken.token_hash == token_hash).limit(1)
    )
    return _record(rows[0]) if rows else None


async def start(
    account: int, version: int, token_hash: str, expires_at: datetime, *, family: UUID | None
) -> UUID:
    """Store the first token of a session (a new family, or ``family``) and drop the user's
    expired tokens (of ended sessions too); the family."""
    family = family or uuid4()
    async with write_transaction(current_engine()):
        await RefreshToken.delete().where(
            (RefreshToken.account == account) & (RefreshToken.expires_at < now())
        )
        await RefreshToken.insert(_row(account, family, version, token_hash, expires_at))
    return family


async def exchange(old: RefreshRecord, token_hash: str, expires_at: datetime) -> bool:
    """Mark ``old`` used and store its successor; ``False`` when ``old`` was used or revoked
    meanwhile (then nothing is stored)."""
    async with write_transaction(current_engine()):
        used = (
            await RefreshToken.update({RefreshToken.used_at: now()})
            .where(
                (RefreshToken.id == old.id)
                & RefreshToken.used_at.is_null()
                & RefreshToken.revoked_at.is_null()
            )
            .returning(RefreshToken.id)
        )
        if not used:
            return False
        await RefreshToken.insert(
            _row(old.account, old.family, old.version, token_hash, expires_at)
        )
        # The session's tokens past their expiry can no longer be presented: no need to keep
        # them to recognise a reuse.
        await RefreshToken.delete().where(
            (RefreshToken.family == old.family) & (RefreshToken.expires_at < now())
        )
    return True


async def renew(
    family: UUID, account: int, version: int, token_hash: str, expires_at: datetime
) -> bool:
    """Give a live session a new token at ``version`` (after a password change): its
    unused tokens count as used. ``False`` when the family is revoked or unknown."""
    async with write_transaction(current_engine()):
        live = await RefreshToken.exists().where(
            (RefreshToken.family == family)
            & (RefreshToken.account == account)
            & RefreshToken.revoked_at.is_null()
        )
        if not live:
            return False
        await RefreshToken.update({RefreshToken.used_at: now()}).where(
            (RefreshToken.family == family) & RefreshToken.used_at.is_null()
        )
        await RefreshToken.insert(_row(account, family, version, token_hash, expires_at))
    return True


async def revoke_family(family: UUID) -> None:
    await RefreshToken.update({RefreshToken.revoked_at: now()}).where(
        (RefreshToken.family == family) & RefreshToken.revoked_at.is_null()
    )


async def revoke_user(account: int, *, keep: UUID | None = None) -> None:
    """End every session of the user, but ``keep``."""
    where = (RefreshToken.account == account) & RefreshToken.revoked_at.is_null()
    if keep is not None:
        where = where & (RefreshToken.family != keep)
    await RefreshToken.update({RefreshToken.revoked_at: now()}).where(where)
