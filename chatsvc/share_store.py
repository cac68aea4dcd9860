"""The queries of share links (table ``chat_share``; issue 17, point 3).

Beside ``store.py`` rather than in it, as ``key_store.py`` is: a link only reads
its own row once made. Every query of a user's own links is scoped by owner, so
another user's link is simply not found. A link is found by the SHA-256 of its
token, never by the token itself, which is not stored.
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
from piccolo.engine.postgres import PostgresEngine

from chatsvc.database import current_engine, write_transaction
from chatsvc.errors import LimitReached, NotFound
from chatsvc.records import SharedSnapshot, ShareRecord
from chatsvc.tables import Chat, ChatShare

_COLUMNS = (ChatShare.id, ChatShare.chat, ChatShare.prefix, ChatShare.title, ChatShare.created_at)
#: The chat, locked: a delete of it waits for the link (or the link sees it gone).
_LOCK_CHAT = "SELECT id FROM chat WHERE id = {} AND owner = {} FOR UPDATE"


def _record(row: dict[str, Any]) -> ShareRecord:
    return msgspec.convert(row, ShareRecord, strict=False)


async def create_share(
    owner: int,
    chat_id: UUID,
    *,
    prefix: str,
    token_hash: str,
    title: str,
    messages: str,
    created_at: datetime,
    max_shares: int,
) -> ShareRecord:
    """Insert a link to the owner's chat; :class:`NotFound` when the chat is not theirs (or
    is gone), :class:`LimitReached` when it has ``max_shares`` unrevoked links."""
    engine = current_engine()
    async with write_transaction(engine):
        if isinstance(engine, PostgresEngine):
            found = await Chat.raw(_LOCK_CHAT, chat_id, owner)
        else:  # the one SQLite writer runs this turn alone
            found = await Chat.select(Chat.id).where((Chat.id == chat_id) & (Chat.owner == owner))
        if not found:
            raise NotFound("chat not found")
        kept = await ChatShare.count().where(
            (ChatShare.chat == chat_id) & ChatShare.revoked_at.is_null()
        )
        if kept >= max_shares:
            raise LimitReached(
                f"this chat has {max_shares} share links, the most allowed; revoke one first"
            )
        rows = await ChatShare.insert(
            ChatShare(
                chat=chat_id,
                owner=owner,
                prefix=prefix,
                hash=token_hash,
                title=title,
                messages=messages,
                created_at=created_at,
            )
        ).returning(*_COLUMNS)
    return _record(rows[0])


async def list_shares(owner: int, chat_id: UUID | None = None) -> list[ShareRecord]:
    """The owner's links not revoked (of one chat, when given), newest first."""
    where = (ChatShare.owner == owner) & ChatShare.revoked_at.is_null()
    if chat_id is not None:
        where &= ChatShare.chat == chat_id
    rows = (
        await ChatShare.select(*_COLUMNS)
        .where(where)
        .order_by(ChatShare.created_at, ChatShare.id, ascending=False)
    )
    return [_record(row) for row in rows]


async def revoke_share(share_id: UUID, at: datetime, *, owner: int | None = None) -> int | None:
    """Revoke a link not yet revoked (the owner's, when ``owner`` is given); its owner's id,
    or ``None`` when there is no such link."""
    where = (ChatShare.id == share_id) & ChatShare.revoked_at.is_null()
    if owner is not None:
        where &= ChatShare.owner == owner
    rows = (
        await ChatShare.update({ChatShare.revoked_at: at}).where(where).returning(ChatShare.owner)
    )
    return rows[0]["owner"] if rows else None


async def snapshot(token_hash: str) -> SharedSnapshot | None:
    """The snapshot of the unrevoked link with this hash; ``None`` for any other."""
    row = (
        await ChatShare.select(ChatShare.title, ChatShare.messages, ChatShare.created_at)
        .where((ChatShare.hash == token_hash) & ChatShare.revoked_at.is_null())
        .first()
    )
    return msgspec.convert(row, SharedSnapshot, strict=False) if row else None
