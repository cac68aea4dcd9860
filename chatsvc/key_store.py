"""The queries of API keys (table ``api_key``; issue 16, point 2).

Beside ``store.py`` rather than in it: keys touch no chat, and the module stays
small. Every query of a user's own keys is scoped by owner, so another user's
key is simply not found. Keys are found by the SHA-256 of the key, never by
the key itself, which is not stored.
"""

# Piccolo's query builders are unparameterised generics (see store.py): rows become
# records before they leave this module.
# pyright: reportUnknownMemberType=false, reportUnknownVariableType=false
# pyright: reportUnknownArgumentType=false

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from piccolo.columns.base import Column

from chatsvc.database import current_engine, lock_user, write_transaction
from chatsvc.errors import InvalidInput, LimitReached
from chatsvc.records import ApiKeyRecord, KeyHolder, KeyState
from chatsvc.tables import ApiKey

_COLUMNS = (
    ApiKey.id,
    ApiKey.name,
    ApiKey.prefix,
    ApiKey.created_at,
    ApiKey.last_used_at,
    ApiKey.expires_at,
    ApiKey.revoked_at,
)
#: The key of a hash with its owner's state, in one query.
_HOLDER = (
    "SELECT k.id AS key_id, k.expires_at, k.revoked_at, k.last_used_at, "
    "u.id, u.username, u.active, u.admin, COALESCE(v.version, 0) AS token_version "
    "FROM api_key k JOIN piccolo_user u ON u.id = k.owner "
    "LEFT JOIN token_version v ON v.account = u.id WHERE k.hash = {}"
)


def _record(row: dict[str, Any]) -> ApiKeyRecord:
    return msgspec.convert(row, ApiKeyRecord, strict=False)


async def create_key(
    owner: int,
    *,
    name: str,
    prefix: str,
    key_hash: str,
    created_at: datetime,
    expires_at: datetime | None,
    max_keys: int,
) -> ApiKeyRecord:
    """Insert a key; :class:`LimitReached` when the owner keeps ``max_keys`` unrevoked ones."""
    engine = current_engine()
    async with write_transaction(engine):
        await lock_user(engine, owner)  # two creates of one user count in turn
        kept = await ApiKey.count().where((ApiKey.owner == owner) & ApiKey.revoked_at.is_null())
        if kept >= max_keys:
            raise LimitReached(
                f"you have {max_keys} API keys, the most allowed; revoke one to make another"
            )
        rows = await ApiKey.insert(
            ApiKey(
                owner=owner,
                name=name,
                prefix=prefix,
                hash=key_hash,
                created_at=created_at,
                expires_at=expires_at,
            )
        ).returning(*_COLUMNS)
    return _record(rows[0])


async def list_keys(owner: int) -> list[ApiKeyRecord]:
    """The owner's keys not revoked, newest first."""
    rows = (
        await ApiKey.select(*_COLUMNS)
        .where((ApiKey.owner == owner) & ApiKey.revoked_at.is_null())
        .order_by(ApiKey.created_at, ApiKey.id, ascending=False)
    )
    return [_record(row) for row in rows]


async def revoke_key(key_id: UUID, at: datetime, *, owner: int | None = None) -> int | None:
    """Revoke a key not yet revoked (the owner's, when ``owner`` is given); its owner's id,
    or ``None`` when there is no such key."""
    where = (ApiKey.id == key_id) & ApiKey.revoked_at.is_null()
    if owner is not None:
        where &= ApiKey.owner == owner
    rows = await ApiKey.update({ApiKey.revoked_at: at}).where(where).returning(ApiKey.owner)
    return rows[0]["owner"] if rows else None


async def change_key(key_id: UUID, values: dict[str, Any]) -> tuple[int, datetime | None] | None:
    """Change columns of a key (by name): its owner and when it was revoked before, or
    ``None`` when there is no such key; :class:`InvalidInput` to un-revoke one."""
    async with write_transaction(current_engine()):
        row = (
            await ApiKey.select(ApiKey.owner, ApiKey.revoked_at).where(ApiKey.id == key_id).first()
        )
        if row is None:
            return None
        if row["revoked_at"] is not None and values.get("revoked_at", True) is None:
            raise InvalidInput("a revoked key stays revoked; the user makes a new one")
        if values:
            columns: dict[Column | str, Any] = {**values}  # Piccolo looks each name up
            await ApiKey.update(columns).where(ApiKey.id == key_id)
    return row["owner"], row["revoked_at"]


async def holder(key_hash: str) -> KeyHolder | None:
    """The key with this hash and its owner, whatever their state; ``None``: no such key."""
    rows = await ApiKey.raw(_HOLDER, key_hash)
    # SQLite answers 0/1 for booleans and text for computed columns: convert them.
    return msgspec.convert(rows[0], KeyHolder, strict=False) if rows else None


async def mark_used(key_id: UUID, at: datetime, *, unless_since: datetime) -> None:
    """Note a use of the key, unless one was noted at ``unless_since`` or later (so two
    instances, or a burst of requests, write it once)."""
    await ApiKey.update({ApiKey.last_used_at: at}).where(
        (ApiKey.id == key_id)
        & (ApiKey.last_used_at.is_null() | (ApiKey.last_used_at < unless_since))
    )


async def key_states(key_ids: list[UUID]) -> list[KeyState]:
    """Expiry and revocation of these keys, in one query (deleted keys are missing)."""
    if not key_ids:
        return []
    rows = await ApiKey.select(ApiKey.id, ApiKey.expires_at, ApiKey.revoked_at).where(
        ApiKey.id.is_in(key_ids)
    )
    return [msgspec.convert(row, KeyState, strict=False) for row in rows]
