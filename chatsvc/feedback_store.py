"""The queries of message feedback (table ``message_feedback``; issue 17, point 4).

Beside ``store.py``, as ``key_store.py`` is: a rating touches one row. Every write
checks that the message is an assistant message of one of the owner's chats, so
another user's message is simply not found.
"""

# Piccolo's query builders are unparameterised generics (see store.py): rows become
# records before they leave this module.
# pyright: reportUnknownMemberType=false, reportUnknownVariableType=false
# pyright: reportUnknownArgumentType=false

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from chatsvc.database import current_engine, write_transaction
from chatsvc.errors import NotAReply, NotFound
from chatsvc.records import FeedbackRecord, MessageRecord
from chatsvc.tables import Chat, Message, MessageFeedback
from chatsvc.wire import FeedbackRating

_COLUMNS = (
    MessageFeedback.rating,
    MessageFeedback.comment,
    MessageFeedback.created_at,
    MessageFeedback.updated_at,
)


def _record(row: dict[str, Any]) -> FeedbackRecord:
    return msgspec.convert(row, FeedbackRecord, strict=False)


async def _check_reply(owner: int, chat_id: UUID, message_id: UUID) -> None:
    """:class:`NotFound` unless the message is in the owner's chat; :class:`NotAReply`
    unless it is an assistant message."""
    if not await Chat.exists().where((Chat.id == chat_id) & (Chat.owner == owner)):
        raise NotFound("chat not found")
    rows = await Message.select(Message.role).where(
        (Message.id == message_id) & (Message.chat == chat_id)
    )
    if not rows:
        raise NotFound("message_id: no such message in this chat")
    if rows[0]["role"] != "assistant":
        raise NotAReply("message_id: feedback is given on assistant messages only")


async def set_feedback(
    owner: int,
    chat_id: UUID,
    message_id: UUID,
    *,
    rating: FeedbackRating,
    comment: str,
    at: datetime,
) -> FeedbackRecord:
    """Rate the owner's assistant message, replacing its rating if it has one."""
    async with write_transaction(current_engine()):
        await _check_reply(owner, chat_id, message_id)
        rows = (
            await MessageFeedback.update(
                {
                    MessageFeedback.rating: rating,
                    MessageFeedback.comment: comment,
                    MessageFeedback.updated_at: at,
                }
            )
            .where(MessageFeedback.message == message_id)
            .returning(*_COLUMNS)
        )
        if not rows:
            rows = await MessageFeedback.insert(
                MessageFeedback(
                    message=message_id,
                    rating=rating,
                    comment=comment,
                    created_at=at,
                    updated_at=at,
                )
            ).returning(*_COLUMNS)
    return _record(rows[0])


async def delete_feedback(owner: int, chat_id: UUID, message_id: UUID) -> bool:
    """Remove the rating of the owner's assistant message; False when it had none."""
    async with write_transaction(current_engine()):
        await _check_reply(owner, chat_id, message_id)
        rows = (
            await MessageFeedback.delete()
            .where(MessageFeedback.message == message_id)
            .returning(MessageFeedback.id)
        )
    return bool(rows)


async def feedback_of(message_ids: Sequence[UUID]) -> dict[UUID, FeedbackRecord]:
    """The ratings of these messages, by message id (one query; unrated ones are missing)."""
    if not message_ids:
        return {}
    rows = await MessageFeedback.select(MessageFeedback.message, *_COLUMNS).where(
        MessageFeedback.message.is_in(list(message_ids))
    )
    return {row["message"]: _record(row) for row in rows}


async def with_feedback(records: list[MessageRecord]) -> list[MessageRecord]:
    """The records with their ratings (one query, for the assistant messages only)."""
    found = await feedback_of([r.id for r in records if r.role == "assistant"])
    if not found:
        return records
    return [
        msgspec.structs.replace(record, feedback=found[record.id]) if record.id in found else record
        for record in records
    ]
