"""Records of the store as the wire shows them: a chat, a message with its usage and tool calls.

They live next to the store, below both use-case modules that need them (``chats`` and
``generation``), so neither has to import the other.
"""

from __future__ import annotations

from chatsvc.records import ChatRecord, FeedbackRecord, MessageRecord
from chatsvc.wire import Chat, Feedback, Message, Usage


def chat_from_record(chat: ChatRecord) -> Chat:
    return Chat(
        id=chat.id,
        title=chat.title,
        system_prompt=chat.system_prompt,
        model=chat.model,
        temperature=chat.temperature,
        top_p=chat.top_p,
        max_tokens=chat.max_tokens,
        created_at=chat.created_at,
        updated_at=chat.updated_at,
        active_leaf_id=chat.active_leaf,
        message_count=chat.message_count,
    )


def message_from_record(message: MessageRecord) -> Message:
    siblings = list(message.siblings) if len(message.siblings) > 1 else None
    return Message(
        id=message.id,
        chat_id=message.chat,
        parent_id=message.parent,
        sibling_index=siblings.index(message.id) if siblings else 0,
        sibling_count=len(siblings) if siblings else 1,
        sibling_ids=siblings,
        role=message.role,
        content=message.content,
        status=message.status,
        is_ai=message.role == "assistant",
        model=message.model,
        usage=usage_from_record(message),
        finish_reason=message.finish_reason,
        created_at=message.created_at,
        completed_at=message.completed_at,
        tool_calls=message.tool_calls,
        reasoning=message.reasoning,
        feedback=feedback_from_record(message.feedback) if message.feedback else None,
    )


def usage_from_record(message: MessageRecord) -> Usage | None:
    """The reply's tokens, when any were counted or estimated (``None`` for the rest)."""
    if message.prompt_tokens is None and message.completion_tokens is None:
        return None
    return Usage(
        prompt_tokens=message.prompt_tokens,
        completion_tokens=message.completion_tokens,
        estimated=bool(message.usage_estimated),
    )


def feedback_from_record(feedback: FeedbackRecord) -> Feedback:
    return Feedback(
        rating=feedback.rating,
        comment=feedback.comment,
        created_at=feedback.created_at,
        updated_at=feedback.updated_at,
    )
