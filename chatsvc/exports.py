"""Exports (issue 17, point 2): a chat as versioned JSON (every branch, statuses, usage,
feedback) or as Markdown (the active conversation), and every chat of a user as JSON
lines, read one chat at a time."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import UUID

import msgspec

from chatsvc import transfer_store
from chatsvc.errors import NotFound
from chatsvc.mappers import feedback_from_record, usage_from_record
from chatsvc.records import ChatRecord, MessageRecord
from chatsvc.wire import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    ChatExport,
    ExportedChat,
    ExportedMessage,
)

_encode = msgspec.json.Encoder().encode
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


async def export_chat(owner: int, chat_id: UUID) -> ChatExport:
    """The owner's chat, whole; :class:`NotFound` for another user's or none."""
    found = await transfer_store.chat_with_messages(owner, chat_id)
    if found is None:
        raise NotFound("chat not found")
    return _export(*found)


async def export_all(owner: int) -> AsyncIterator[bytes]:
    """Every chat of the owner, oldest first, one JSON line each (read one at a time;
    a chat deleted meanwhile is left out)."""
    for chat_id in await transfer_store.chat_ids(owner):
        found = await transfer_store.chat_with_messages(owner, chat_id)
        if found is not None:
            yield _encode(_export(*found)) + b"\n"


def to_json(export: ChatExport) -> bytes:
    return _encode(export)


def _export(chat: ChatRecord, messages: list[MessageRecord]) -> ChatExport:
    return ChatExport(
        format=EXPORT_FORMAT,
        version=EXPORT_VERSION,
        exported_at=datetime.now(UTC),
        chat=ExportedChat(
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
            messages=[_message(m) for m in messages],
        ),
    )


def _message(message: MessageRecord) -> ExportedMessage:
    return ExportedMessage(
        id=message.id,
        parent_id=message.parent,
        role=message.role,
        content=message.content,
        status=message.status,
        created_at=message.created_at,
        completed_at=message.completed_at,
        reasoning=message.reasoning,
        model=message.model,
        usage=usage_from_record(message),
        finish_reason=message.finish_reason,
        tool_calls=message.tool_calls,
        feedback=feedback_from_record(message.feedback) if message.feedback else None,
    )


def active_branch(chat: ExportedChat) -> list[ExportedMessage]:
    """The messages from the first one to the active leaf (else the newest message)."""
    if not chat.messages:
        return []
    by_id = {m.id: m for m in chat.messages}
    leaf = by_id.get(chat.active_leaf_id) if chat.active_leaf_id else None
    current = leaf or max(chat.messages, key=lambda m: (m.created_at, str(m.id)))
    branch: list[ExportedMessage] = []
    while current is not None and len(branch) <= len(by_id):
        branch.append(current)
        current = by_id.get(current.parent_id) if current.parent_id else None
    return branch[::-1]


_STATUS_NOTE = {
    "aborted": "stopped before its end",
    "failed": "failed",
    "interrupted": "interrupted",
    "streaming": "still being written",
}


def to_markdown(export: ChatExport) -> str:
    """The active conversation, readable: the title, the settings, each message under
    its author, its status when it did not complete, and its rating."""
    chat = export.chat
    lines = [f"# {chat.title or 'Untitled chat'}", ""]
    lines.append(f"*Exported {export.exported_at:%Y-%m-%d %H:%M} UTC from chatsvc.*")
    if chat.model:
        lines.append(f"*Model: {chat.model}.*")
    lines.append("")
    if chat.system_prompt:
        lines += ["## System prompt", "", chat.system_prompt, ""]
    for message in active_branch(chat):
        author = "You" if message.role == "user" else "Assistant"
        if message.role == "assistant" and message.model:
            author += f" ({message.model})"
        lines += [f"## {author}", "", message.content, ""]
        if note := _STATUS_NOTE.get(message.status):
            lines += [f"*This reply {note}.*", ""]
        if message.feedback is not None:
            thumb = "👍" if message.feedback.rating == "up" else "👎"
            said = f": {message.feedback.comment}" if message.feedback.comment else ""
            lines += [f"*Your rating: {thumb}{said}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def filename(title: str, extension: str) -> str:
    """A file name safe in a ``Content-Disposition`` header: ASCII letters, digits, dots,
    dashes and underscores only, never empty."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    stem = _UNSAFE.sub("-", ascii_title).strip(".-_")[:80] or "chat"
    return f"{stem}.{extension}"
