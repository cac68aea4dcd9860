"""ChatGPT's ``conversations.json`` (OpenAI's data export) read as chats to import: its
node mapping becomes our message tree, ``current_node`` the active branch; system, tool
and hidden nodes and non-text content are left out, with the reason.

The shape of the export, as far as it is read here: unknown fields are ignored (the
format is OpenAI's, and grows), the ones read must have their types.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import msgspec

from chatsvc.import_tree import (
    UNTITLED,
    ImportLimits,
    Node,
    Parsed,
    build_tree,
    clean,
    convert,
    new_chat,
)
from chatsvc.records import NewMessage, Sampling


class _GptAuthor(msgspec.Struct):
    role: str


class _GptContent(msgspec.Struct):
    content_type: str
    parts: list[Any] | None = None


class _GptMessage(msgspec.Struct):
    author: _GptAuthor
    content: _GptContent | None = None
    create_time: float | None = None
    metadata: dict[str, Any] | None = None


class _GptNode(msgspec.Struct):
    message: _GptMessage | None = None
    parent: str | None = None
    children: list[str] = []


class _GptConversation(msgspec.Struct):
    mapping: dict[str, _GptNode]
    title: str | None = None
    create_time: float | None = None
    update_time: float | None = None
    current_node: str | None = None
    default_model_slug: str | None = None


_TEXT_TYPES = frozenset({"text", "multimodal_text"})


def parse_conversation(index: int, document: Any, limits: ImportLimits) -> Parsed:
    conversation = convert(index, document, _GptConversation)
    title = clean(conversation.title or "")[:200].strip() or UNTITLED
    nodes = [
        _gpt_node(key, node)
        for key, node in sorted(conversation.mapping.items(), key=lambda item: _order(item[1]))
    ]
    tree = build_tree(index, nodes, conversation.current_node, strict=False)
    return new_chat(
        index,
        title,
        tree,
        limits,
        model=conversation.default_model_slug,
        sampling=Sampling(),
        created_at=_time(conversation.create_time),
        updated_at=_time(conversation.update_time),
    )


def _order(node: _GptNode) -> float:
    """Siblings in the order they were written (ChatGPT lists children so too)."""
    message = node.message
    return message.create_time or 0.0 if message else 0.0


def _gpt_node(key: str, node: _GptNode) -> Node:
    message = node.message
    if message is None:
        return Node(key, node.parent, None)  # the root of every conversation: no message
    role = message.author.role
    if role not in ("user", "assistant"):
        return Node(key, node.parent, None, f"a {role} message")
    metadata = message.metadata or {}
    if metadata.get("is_visually_hidden_from_conversation"):
        return Node(key, node.parent, None, "a hidden message")
    content = message.content
    kind = content.content_type if content else "none"
    if content is None or kind not in _TEXT_TYPES:
        return Node(key, node.parent, None, f"non-text content ({kind})")
    texts = [part for part in content.parts or [] if isinstance(part, str)]
    text = clean("\n\n".join(t for t in texts if t))
    if not text.strip():
        why = "no text (images or files only)" if content.parts else "an empty message"
        return Node(key, node.parent, None, why)
    model = metadata.get("model_slug")
    stamp = _time(message.create_time)
    return Node(
        key,
        node.parent,
        NewMessage(
            id=uuid4(),
            parent=None,
            role="user" if role == "user" else "assistant",
            content=text,
            status="complete",
            created_at=stamp or datetime.min.replace(tzinfo=UTC),
            completed_at=stamp,
            model=model if isinstance(model, str) and role == "assistant" else None,
        ),
    )


def _time(seconds: float | None) -> datetime | None:
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None
