"""Feedback on replies (issue 17, point 4): a thumbs up or down and a comment, one per
assistant message, only on the owner's own chats."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from chatsvc import feedback_store
from chatsvc.mappers import feedback_from_record
from chatsvc.wire import Feedback, FeedbackUpdate


async def rate(owner: int, chat_id: UUID, message_id: UUID, data: FeedbackUpdate) -> Feedback:
    """Rate the owner's assistant message (a new rating replaces the old one)."""
    record = await feedback_store.set_feedback(
        owner,
        chat_id,
        message_id,
        rating=data.rating,
        comment=data.comment,
        at=datetime.now(UTC),
    )
    return feedback_from_record(record)


async def unrate(owner: int, chat_id: UUID, message_id: UUID) -> None:
    """Idempotent: a message without a rating stays without one."""
    await feedback_store.delete_feedback(owner, chat_id, message_id)
