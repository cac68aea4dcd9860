"""The message tree of an import, whatever its source (``chatsvc/imports.py``): new
ids, parents and times for the messages kept, under the rules of our trees (a user
message starts the chat or follows an assistant message, an assistant message follows a
user message, every message is newer than its parent, none is ``streaming``, the active
leaf is a leaf); a message left out is transparent."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar
from uuid import UUID, uuid4

import msgspec

from chatsvc.errors import InvalidImport
from chatsvc.records import NewChat, NewMessage, Sampling

#: Newer than its parent by at least this much (the tree is ordered by creation).
_TICK = timedelta(microseconds=1)
UNTITLED = "Imported chat"
_T = TypeVar("_T")


class ImportLimits(NamedTuple):
    """The settings an import is bounded by (``IMPORT_MAX_*``, ``MAX_CHATS_PER_USER``,
    ``LLM_MAX_TOKENS_LIMIT``)."""

    max_bytes: int
    max_chats: int
    max_messages: int
    max_chats_per_user: int
    #: The models a chat may choose (``Settings.model_choices``): another one is dropped.
    models: tuple[str, ...]
    max_tokens_limit: int


class Parsed(NamedTuple):
    """One chat of the file: the chat to store (``None``: skipped), and what was left out."""

    title: str
    chat: NewChat | None
    notes: list[str]


def convert(index: int, document: Any, kind: type[_T]) -> _T:
    try:
        return msgspec.convert(document, kind)
    except msgspec.ValidationError as exc:
        raise InvalidImport(f"chat {index}: {exc}") from exc


@dataclass
class Node:
    """A message of the file: ``message`` (its id and parent still to be chosen), or
    ``None`` and ``skipped``, why it is left out (empty: silently, ChatGPT's root)."""

    key: str
    parent: str | None
    message: NewMessage | None
    skipped: str = ""


class Tree(NamedTuple):
    messages: list[NewMessage]
    active_leaf: UUID | None
    notes: Counter[str]


def build_tree(index: int, nodes: list[Node], active: str | None, *, strict: bool) -> Tree:
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
    return Tree(kept, _leaf_below(chosen, kept) if chosen else None, notes)


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


def new_chat(
    index: int,
    title: str,
    tree: Tree,
    limits: ImportLimits,
    *,
    system_prompt: str = "",
    model: str | None = None,
    sampling: Sampling,
    created_at: datetime | None,
    updated_at: datetime | None,
) -> Parsed:
    notes = [
        f"{count} message{'s' if count > 1 else ''} left out: {reason}"
        for reason, count in sorted(tree.notes.items())
    ]
    if not tree.messages:
        return Parsed(title, None, [*notes, "chat skipped: no text message to import"])
    if len(tree.messages) > limits.max_messages:
        return Parsed(
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
    return Parsed(title, chat, notes)


def clean(text: str) -> str:
    """PostgreSQL cannot store NUL characters."""
    return text.replace("\x00", "")
