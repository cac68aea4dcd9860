"""The queries of exports and imports (issue 17, point 2).

Beside ``store.py``: an export reads one chat at a time (its every message), an import
writes whole chats, every one of a file in one transaction, so a file is imported
whole or not at all.
"""

# Piccolo's query builders are unparameterised generics (see store.py): rows become
# records before they leave this module.
# pyright: reportUnknownMemberType=false, reportUnknownVariableType=false
# pyright: reportUnknownArgumentType=false

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import msgspec

from chatsvc import store
from chatsvc.database import current_engine, lock_user, write_transaction
from chatsvc.errors import LimitReached
from chatsvc.feedback_store import with_feedback
from chatsvc.records import ChatRecord, MessageRecord, NewChat
from chatsvc.tables import Chat, Message, MessageFeedback

#: Rows inserted per statement (SQLite allows 32,766 bound values; a message has 19).
_BATCH = 500


async def chat_with_messages(
    owner: int, chat_id: UUID
) -> tuple[ChatRecord, list[MessageRecord]] | None:
    """The owner's chat and every message of it with their feedback, oldest first;
    ``None`` when it is not the owner's."""
    chat = await store.get_chat(owner, chat_id)
    if chat is None:
        return None
    return chat, await with_feedback(await store.chat_messages(chat_id))


async def chat_ids(owner: int) -> list[UUID]:
    """The ids of the owner's chats, oldest first (an export reads them one by one)."""
    rows = await Chat.select(Chat.id).where(Chat.owner == owner).order_by(Chat.created_at, Chat.id)
    return [row["id"] for row in rows]


async def insert_chats(owner: int, chats: Sequence[NewChat], *, max_chats: int) -> list[UUID]:
    """Store the chats with their messages, trees and feedback, all in one transaction:
    all of them or none. :class:`LimitReached` when the owner would keep more than
    ``max_chats``."""
    engine = current_engine()
    ids: list[UUID] = []
    async with write_transaction(engine):
        await lock_user(engine, owner)  # counted with the owner's other creates
        kept = await store.count_chats(owner)
        if kept + len(chats) > max_chats:
            raise LimitReached(
                f"you keep {kept} chats and this file has {len(chats)}: more than the "
                f"{max_chats} allowed; delete some chats, or import fewer at once"
            )
        for chat in chats:
            ids.append(await _insert_chat(owner, chat))
    return ids


async def _insert_chat(owner: int, chat: NewChat) -> UUID:
    row = Chat(
        owner=owner,
        title=chat.title,
        title_source="user",
        system_prompt=chat.system_prompt,
        model=chat.model,
        temperature=chat.sampling.temperature,
        top_p=chat.sampling.top_p,
        max_tokens=chat.sampling.max_tokens,
        created_at=chat.created_at,
        updated_at=chat.updated_at,
        active_leaf=chat.active_leaf,
    )
    inserted = await Chat.insert(row).returning(Chat.id)
    chat_id: UUID = inserted[0]["id"]
    await store.create_tree(chat_id)
    messages = [
        Message(
            id=m.id,
            chat=chat_id,
            owner=owner,
            parent=m.parent,
            role=m.role,
            content=m.content,
            reasoning=m.reasoning,
            status=m.status,
            model=m.model,
            prompt_tokens=m.prompt_tokens,
            completion_tokens=m.completion_tokens,
            usage_estimated=m.usage_estimated,
            finish_reason=m.finish_reason,
            created_at=m.created_at,
            completed_at=m.completed_at,
            tool_calls=msgspec.to_builtins(m.tool_calls) if m.tool_calls else None,
        )
        for m in chat.messages
    ]
    for start in range(0, len(messages), _BATCH):
        await Message.insert(*messages[start : start + _BATCH])
    ratings = [
        MessageFeedback(
            message=m.id,
            rating=m.feedback.rating,
            comment=m.feedback.comment,
            created_at=m.feedback.created_at,
            updated_at=m.feedback.updated_at,
        )
        for m in chat.messages
        if m.feedback is not None
    ]
    for start in range(0, len(ratings), _BATCH):
        await MessageFeedback.insert(*ratings[start : start + _BATCH])
    return chat_id
