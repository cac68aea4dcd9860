"""Imports (issue 17, point 2): our own exports (one chat, or the JSON lines of
``GET /api/me/export``) and ChatGPT's ``conversations.json``, turned into chats whose
trees hold every rule of ours, and stored all at once or not at all.

What a file may hold, and what happens otherwise:

- a file that is no JSON nor JSON lines, or not one of the shapes taken, or with a
  field of the wrong type, or a message whose parent is not in its chat, is refused
  whole (``invalid_import``, 422); nothing is stored;
- a file over ``IMPORT_MAX_BYTES`` or with more than ``IMPORT_MAX_CHATS`` chats is
  refused whole (``too_large``, 413); more chats than ``MAX_CHATS_PER_USER`` allows
  the user to keep: ``limit_reached`` (409);
- a chat with no text message left, or more than ``IMPORT_MAX_MESSAGES_PER_CHAT``, is
  skipped and named in the report; so are the messages left out of an imported chat
  (ChatGPT's system, tool and hidden nodes, non-text content, a message that does not
  follow the role before it), with the reason and how many.

The rules of the tree: a user message starts the chat or follows an assistant
message, an assistant message follows a user message, every message is newer than
its parent, no message is ``streaming`` (such a reply is imported ``interrupted``),
and the active leaf is a leaf. A message left out is transparent: what followed it
follows the message before it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec

from chatsvc import chatgpt_import, transfer_store
from chatsvc.errors import InvalidImport, TooLarge
from chatsvc.import_tree import ImportLimits, Node, Parsed, build_tree, convert, new_chat
from chatsvc.records import FeedbackRecord, NewChat, NewMessage, Sampling
from chatsvc.wire import ChatExport, ImportReport, ImportSkipped


async def import_file(owner: int, body: bytes, limits: ImportLimits) -> ImportReport:
    """Store every chat of the file that can be, in one transaction; the report says
    which were made and what was left out."""
    if len(body) > limits.max_bytes:
        raise TooLarge(f"the file is over IMPORT_MAX_BYTES ({limits.max_bytes} bytes)")
    documents = _documents(body)
    if len(documents) > limits.max_chats:
        raise TooLarge(
            f"the file holds {len(documents)} chats, more than IMPORT_MAX_CHATS "
            f"({limits.max_chats}); split it"
        )
    chats: list[NewChat] = []
    skipped: list[ImportSkipped] = []
    for index, document in enumerate(documents):
        parsed = _parse(index, document, limits)
        title = parsed.chat.title if parsed.chat else parsed.title
        skipped += [
            ImportSkipped(index=index, title=title, reason=reason) for reason in parsed.notes
        ]
        if parsed.chat is not None:
            chats.append(parsed.chat)
    ids = await transfer_store.insert_chats(owner, chats, max_chats=limits.max_chats_per_user)
    return ImportReport(imported=ids, skipped=skipped)


# --- reading the file -------------------------------------------------------------


def _documents(body: bytes) -> list[Any]:
    """The chats of the file, undecoded: a JSON document (one export, or ChatGPT's array
    of conversations), or JSON lines (one export a line)."""
    text = body.removeprefix(b"\xef\xbb\xbf").strip()
    if not text:
        raise InvalidImport("the file is empty")
    try:
        whole = msgspec.json.decode(text)
    except msgspec.DecodeError:
        whole = _lines(text)
    if isinstance(whole, list):
        return whole  # pyright: ignore[reportUnknownVariableType] (checked item by item)
    return [whole]


def _lines(text: bytes) -> list[Any]:
    documents: list[Any] = []
    for number, line in enumerate(text.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            documents.append(msgspec.json.decode(line))
        except msgspec.DecodeError as exc:
            raise InvalidImport(
                f"line {number}: not JSON ({exc}); send a chatsvc export (JSON or JSON "
                "lines) or ChatGPT's conversations.json"
            ) from exc
    return documents


def _parse(index: int, document: Any, limits: ImportLimits) -> Parsed:
    if isinstance(document, dict) and "format" in document:
        return _ours(index, document, limits)
    if isinstance(document, dict) and "mapping" in document:
        return chatgpt_import.parse_conversation(index, document, limits)
    raise InvalidImport(
        f"chat {index}: neither a chatsvc export (with `format`) nor a ChatGPT "
        "conversation (with `mapping`)"
    )


# --- our own export ---------------------------------------------------------------


def _ours(index: int, document: Any, limits: ImportLimits) -> Parsed:
    export = convert(index, document, ChatExport)
    chat = export.chat
    nodes: list[Node] = []
    seen: set[UUID] = set()
    for m in chat.messages:
        if m.id in seen:
            raise InvalidImport(f"chat {index}: message {m.id} appears twice")
        seen.add(m.id)
        usage = m.usage
        message = NewMessage(
            id=m.id,
            parent=None,
            role=m.role,
            content=m.content,
            status=m.status,
            created_at=_aware(m.created_at),
            completed_at=_aware(m.completed_at) if m.completed_at else None,
            reasoning=m.reasoning,
            model=m.model,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            usage_estimated=usage.estimated if usage else None,
            finish_reason=m.finish_reason,
            tool_calls=m.tool_calls,
            feedback=FeedbackRecord(
                rating=m.feedback.rating,
                comment=m.feedback.comment,
                created_at=m.feedback.created_at,
                updated_at=m.feedback.updated_at,
            )
            if m.feedback and m.role == "assistant"
            else None,
        )
        nodes.append(Node(str(m.id), str(m.parent_id) if m.parent_id else None, message))
    active = str(chat.active_leaf_id) if chat.active_leaf_id else None
    if active is not None and active not in {node.key for node in nodes}:
        raise InvalidImport(f"chat {index}: active_leaf_id is no message of it")
    tree = build_tree(index, nodes, active, strict=True)
    return new_chat(
        index,
        chat.title,
        tree,
        limits,
        system_prompt=chat.system_prompt,
        model=chat.model,
        sampling=Sampling(
            temperature=chat.temperature, top_p=chat.top_p, max_tokens=chat.max_tokens
        ),
        created_at=_aware(chat.created_at),
        updated_at=_aware(chat.updated_at),
    )


def _aware(stamp: datetime) -> datetime:
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
