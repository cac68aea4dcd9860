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

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar
from uuid import UUID, uuid4

import msgspec

from chatsvc import transfer_store
from chatsvc.errors import InvalidImport, TooLarge
from chatsvc.records import FeedbackRecord, NewChat, NewMessage, Sampling
from chatsvc.wire import ChatExport, ImportReport, ImportSkipped

#: Newer than its parent by at least this much (the tree is ordered by creation).
_TICK = timedelta(microseconds=1)
_UNTITLED = "Imported chat"
_T = TypeVar("_T")


class ImportLimits(NamedTuple):
    max_bytes: int
    max_chats: int
    max_messages: int
    max_chats_per_user: int
    #: The models a chat may choose (``Settings.model_choices``): another one is dropped.
    models: tuple[str, ...]
    max_tokens_limit: int


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


class _Parsed(NamedTuple):
    title: str
    chat: NewChat | None
    notes: list[str]


def _parse(index: int, document: Any, limits: ImportLimits) -> _Parsed:
    if isinstance(document, dict) and "format" in document:
        return _ours(index, document, limits)
    if isinstance(document, dict) and "mapping" in document:
        return _chatgpt(index, document, limits)
    raise InvalidImport(
        f"chat {index}: neither a chatsvc export (with `format`) nor a ChatGPT "
        "conversation (with `mapping`)"
    )


def _convert(index: int, document: Any, kind: type[_T]) -> _T:
    try:
        return msgspec.convert(document, kind)
    except msgspec.ValidationError as exc:
        raise InvalidImport(f"chat {index}: {exc}") from exc


# --- the tree, whatever the source --------------------------------------------------


@dataclass
class _Node:
    """A message of the file: ``message`` (its id and parent still to be chosen), or
    ``None`` and ``skipped``, why it is left out (empty: silently, ChatGPT's root)."""

    key: str
    parent: str | None
    message: NewMessage | None
    skipped: str = ""


class _Tree(NamedTuple):
    messages: list[NewMessage]
    active_leaf: UUID | None
    notes: Counter[str]


def _tree(index: int, nodes: list[_Node], active: str | None, *, strict: bool) -> _Tree:
    """New ids, parents and times for the messages kept, parents first. ``strict``: a
    parent missing from the chat, or a cycle, refuses the file (our own format); else
    such a node starts a branch."""
    by_key = {node.key: node for node in nodes}
    children: dict[str | None, list[str]] = {}
    for node in nodes:
        parent = node.parent
        if parent is not None and parent not in by_key:
            if strict:
                raise InvalidImport(f"chat {index}: message {node.key} follows no message of it")
            parent = None
        children.setdefault(parent, []).append(node.key)
    kept: list[NewMessage] = []
    stands: dict[str, NewMessage | None] = {}
    notes: Counter[str] = Counter()
    clock = datetime.min.replace(tzinfo=UTC)
    pending: list[tuple[str, NewMessage | None]] = [
        (key, None) for key in reversed(children.get(None, []))
    ]
    while pending:
        key, before = pending.pop()
        node = by_key[key]
        stand = before
        if node.message is None:
            if node.skipped:
                notes[node.skipped] += 1
        elif node.message.role != _expected(before):
            follows = f"an {before.role} message" if before else "nothing"
            notes[f"an {node.message.role} message that follows {follows}"] += 1
        else:
            stand = _placed(node.message, before, clock)
            clock = stand.created_at
            kept.append(stand)
        stands[key] = stand
        pending += [(child, stand) for child in reversed(children.get(key, []))]
    if len(stands) < len(by_key):
        if strict:
            raise InvalidImport(f"chat {index}: its messages' parents make a cycle")
        notes["a message in a cycle of parents"] += len(by_key) - len(stands)
    chosen = stands.get(active) if active is not None else None
    return _Tree(kept, _leaf_below(chosen, kept) if chosen else None, notes)


def _expected(before: NewMessage | None) -> str:
    return "user" if before is None or before.role == "assistant" else "assistant"


def _placed(message: NewMessage, before: NewMessage | None, clock: datetime) -> NewMessage:
    """The message with a new id, following ``before``, newer than it."""
    created = message.created_at
    if before is not None and created <= before.created_at:
        created = before.created_at + _TICK
    if created == datetime.min.replace(tzinfo=UTC):  # no time given: after the last one
        created = clock + _TICK
    completed = message.completed_at
    status = "interrupted" if message.status == "streaming" else message.status
    return msgspec.structs.replace(
        message,
        id=uuid4(),
        parent=before.id if before else None,
        created_at=created,
        completed_at=max(completed, created) if completed else None,
        status=status,
    )


def _leaf_below(message: NewMessage, kept: list[NewMessage]) -> UUID:
    """The newest leaf under ``message`` (itself when nothing follows it)."""
    below: dict[UUID | None, list[NewMessage]] = {}
    for other in kept:
        below.setdefault(other.parent, []).append(other)
    current = message
    while below.get(current.id):
        current = max(below[current.id], key=lambda m: (m.created_at, str(m.id)))
    return current.id


def _chat(
    index: int,
    title: str,
    tree: _Tree,
    limits: ImportLimits,
    *,
    system_prompt: str = "",
    model: str | None = None,
    sampling: Sampling,
    created_at: datetime | None,
    updated_at: datetime | None,
) -> _Parsed:
    notes = [
        f"{count} message{'s' if count > 1 else ''} left out: {reason}"
        for reason, count in sorted(tree.notes.items())
    ]
    if not tree.messages:
        return _Parsed(title, None, [*notes, "chat skipped: no text message to import"])
    if len(tree.messages) > limits.max_messages:
        return _Parsed(
            title,
            None,
            [
                f"chat skipped: {len(tree.messages)} messages, more than "
                f"IMPORT_MAX_MESSAGES_PER_CHAT ({limits.max_messages})"
            ],
        )
    first = min(m.created_at for m in tree.messages)
    last = max(m.created_at for m in tree.messages)
    max_tokens = sampling.max_tokens
    if max_tokens is not None and max_tokens > limits.max_tokens_limit:
        sampling = msgspec.structs.replace(sampling, max_tokens=None)
    chat = NewChat(
        title=title,
        system_prompt=system_prompt,
        model=model if model in limits.models else None,
        sampling=sampling,
        created_at=min(created_at or first, first),
        updated_at=max(updated_at or last, last),
        active_leaf=tree.active_leaf,
        messages=tree.messages,
    )
    return _Parsed(title, chat, notes)


# --- our own export ---------------------------------------------------------------


def _ours(index: int, document: Any, limits: ImportLimits) -> _Parsed:
    export = _convert(index, document, ChatExport)
    chat = export.chat
    nodes: list[_Node] = []
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
        nodes.append(_Node(str(m.id), str(m.parent_id) if m.parent_id else None, message))
    active = str(chat.active_leaf_id) if chat.active_leaf_id else None
    if active is not None and active not in {node.key for node in nodes}:
        raise InvalidImport(f"chat {index}: active_leaf_id is no message of it")
    tree = _tree(index, nodes, active, strict=True)
    return _chat(
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


# --- ChatGPT's conversations.json ---------------------------------------------------
# The shape of OpenAI's data export, as far as it is read here: unknown fields are
# ignored (the format is OpenAI's, and grows), the ones read must have their types.


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


def _chatgpt(index: int, document: Any, limits: ImportLimits) -> _Parsed:
    conversation = _convert(index, document, _GptConversation)
    title = _clean(conversation.title or "")[:200].strip() or _UNTITLED
    nodes = [
        _gpt_node(key, node)
        for key, node in sorted(conversation.mapping.items(), key=lambda item: _order(item[1]))
    ]
    tree = _tree(index, nodes, conversation.current_node, strict=False)
    return _chat(
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


def _gpt_node(key: str, node: _GptNode) -> _Node:
    message = node.message
    if message is None:
        return _Node(key, node.parent, None)  # the root of every conversation: no message
    role = message.author.role
    if role not in ("user", "assistant"):
        return _Node(key, node.parent, None, f"a {role} message")
    metadata = message.metadata or {}
    if metadata.get("is_visually_hidden_from_conversation"):
        return _Node(key, node.parent, None, "a hidden message")
    content = message.content
    kind = content.content_type if content else "none"
    if content is None or kind not in _TEXT_TYPES:
        return _Node(key, node.parent, None, f"non-text content ({kind})")
    texts = [part for part in content.parts or [] if isinstance(part, str)]
    text = _clean("\n\n".join(t for t in texts if t))
    if not text.strip():
        why = "no text (images or files only)" if content.parts else "an empty message"
        return _Node(key, node.parent, None, why)
    model = metadata.get("model_slug")
    stamp = _time(message.create_time)
    return _Node(
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


def _clean(text: str) -> str:
    """PostgreSQL cannot store NUL characters."""
    return text.replace("\x00", "")
