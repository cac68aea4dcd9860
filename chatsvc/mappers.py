"""Rows of the store as the wire shows them: a chat, a message with its usage and tool calls.

They live next to the store, below both use-case modules that need them (``chats`` and
``generation``), so neither has to import the other.
"""

from __future__ import annotations

from typing import Any

import msgspec

from chatsvc.wire import Chat, Message, ToolCallRecord, Usage


def chat_from_row(row: dict[str, Any]) -> Chat:
    return Chat(
        id=row["id"],
        title=row["title"],
        system_prompt=row["system_prompt"],
        model=row["model"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def message_from_row(row: dict[str, Any]) -> Message:
    has_usage = row["prompt_tokens"] is not None or row["completion_tokens"] is not None
    return Message(
        id=row["id"],
        chat_id=row["chat"],
        role=row["role"],
        content=row["content"],
        status=row["status"],
        is_ai=row["role"] == "assistant",
        model=row["model"],
        usage=Usage(prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"])
        if has_usage
        else None,
        finish_reason=row["finish_reason"],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
        tool_calls=_tool_calls(row.get("tool_calls")),
    )


def _tool_calls(stored: Any) -> list[ToolCallRecord] | None:
    """The JSONB column as stored: JSON text (both drivers give it so), or null."""
    if stored is None:
        return None
    if isinstance(stored, str | bytes):
        stored = msgspec.json.decode(stored)
    return msgspec.convert(stored, list[ToolCallRecord]) if stored else None
