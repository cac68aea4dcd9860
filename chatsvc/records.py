"""What the store hands back: one typed record per kind of row it reads.

``store.py`` builds them from Piccolo's rows; everything above the store reads
their attributes (checked by pyright) instead of looking up keys in dicts.
They are plain ``msgspec`` Structs, never sent as they are: ``mappers.py``
turns them into the wire types.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from msgspec import Struct

from chatsvc.wire import FeedbackRating, MessageRole, MessageStatus, ToolCallRecord


class UserAccess(Struct, frozen=True, kw_only=True):
    """A user's flags and the version their tokens must carry (``password``: the hash)."""

    id: int
    username: str
    password: str
    active: bool
    admin: bool
    token_version: int


class Sampling(Struct, frozen=True, kw_only=True):
    """A chat's own sampling settings (issue 16); ``None``: the server's for that one."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None


class ChatRecord(Struct, frozen=True, kw_only=True):
    """``active_leaf``: the end of the branch shown and continued (``None``: the newest
    message); ``message_count``: every message of the chat, every branch."""

    id: UUID
    title: str
    system_prompt: str
    model: str | None
    created_at: datetime
    updated_at: datetime
    #: The chat's own generation settings; ``None``: the server's (issue 16).
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    #: Who named the chat (``tables.TitleSource``): ``user``, ``placeholder`` or ``model``.
    title_source: str = "user"
    active_leaf: UUID | None = None
    message_count: int = 0


class FeedbackRecord(Struct, frozen=True, kw_only=True):
    """The owner's rating of an assistant message (issue 17)."""

    rating: FeedbackRating
    comment: str
    created_at: datetime
    updated_at: datetime


class NewMessage(Struct, frozen=True, kw_only=True):
    """A message to store as it is (an import; issue 17): its id and parent are chosen
    above the store, which keeps the chat's tree valid (a parent before its children)."""

    id: UUID
    parent: UUID | None
    role: MessageRole
    content: str
    status: MessageStatus
    created_at: datetime
    completed_at: datetime | None = None
    reasoning: str = ""
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_estimated: bool | None = None
    finish_reason: str | None = None
    tool_calls: list[ToolCallRecord] | None = None
    feedback: FeedbackRecord | None = None


class NewChat(Struct, frozen=True, kw_only=True):
    """A chat to store with its messages (an import), parents before children."""

    title: str
    system_prompt: str
    model: str | None
    sampling: Sampling
    created_at: datetime
    updated_at: datetime
    active_leaf: UUID | None
    messages: list[NewMessage]


class MessageRecord(Struct, frozen=True, kw_only=True):
    """``siblings``: the ids of the messages with the same parent, this one among them,
    oldest first (filled by the store where a message is shown)."""

    id: UUID
    chat: UUID
    parent: UUID | None
    role: MessageRole
    content: str
    status: MessageStatus
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    #: The figures are chatsvc's estimate (``None``: a user message, or a reply from before).
    usage_estimated: bool | None
    finish_reason: str | None
    created_at: datetime
    completed_at: datetime | None
    tool_calls: list[ToolCallRecord] | None
    reasoning: str = ""
    siblings: tuple[UUID, ...] = ()
    #: Filled where a message is shown (``feedback_store.with_feedback``).
    feedback: FeedbackRecord | None = None


class Exchange(Struct, frozen=True, kw_only=True):
    """What one send stored: the chat (``created`` when this send made it), the user's
    message and the ``streaming`` reply."""

    chat: ChatRecord
    question: MessageRecord
    reply: MessageRecord
    created: bool


class Turn(Struct, frozen=True, kw_only=True):
    """A message of the history sent upstream."""

    id: UUID
    role: MessageRole
    content: str


class RunningReply(Struct, frozen=True, kw_only=True):
    """A reply streaming on a live instance: which chat, which task, where (a reply
    on a live instance always has both: older ones were interrupted at start)."""

    id: UUID
    chat: UUID
    task_id: UUID
    instance: str


class InterruptedReply(Struct, frozen=True, kw_only=True):
    """A reply marked ``interrupted`` because its instance is gone."""

    id: UUID
    chat: UUID
    task_id: UUID | None


class TreeRecord(Struct, frozen=True, kw_only=True):
    """A chat's workspace tree: its version and its root node (plain JSON)."""

    version: int
    root: dict[str, Any]


class ApiKeyRecord(Struct, frozen=True, kw_only=True):
    """An API key as its owner sees it (never its hash)."""

    id: UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyHolder(Struct, frozen=True, kw_only=True):
    """The key a bearer presented, with the state of its owner (``UserAccess`` without the hash)."""

    key_id: UUID
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    id: int
    username: str
    active: bool
    admin: bool
    token_version: int


class KeyState(Struct, frozen=True, kw_only=True):
    """What decides whether a socket opened with a key may stay open."""

    id: UUID
    expires_at: datetime | None
    revoked_at: datetime | None


class ShareRecord(Struct, frozen=True, kw_only=True):
    """A share link as its owner sees it (never its hash nor its snapshot)."""

    id: UUID
    chat: UUID
    prefix: str
    title: str
    created_at: datetime


class SharedSnapshot(Struct, frozen=True, kw_only=True):
    """What a valid link shows: the title and messages (JSON text) copied when shared."""

    title: str
    messages: str
    created_at: datetime
