"""Every type on the wire, as msgspec Structs: the single source of the OpenAPI schema.

Names are chosen for generated clients (``Chat``, ``ChatCreate``, ``ChatPage``...).
Timestamps encode as RFC 3339 UTC (``...Z``), ids as UUID strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

MessageRole = Literal["user", "assistant"]
MessageStatus = Literal["complete", "streaming", "aborted", "failed", "interrupted"]

Username = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="3-64 characters: letters, digits, `_`, `.` and `-`.",
    ),
]
Password = Annotated[str, Meta(min_length=8, max_length=256, description="8-256 characters.")]
Title = Annotated[str, Meta(max_length=200, description="Up to 200 characters.")]
SystemPrompt = Annotated[
    str, Meta(max_length=32_000, description="Sent first to the model; up to 32,000 characters.")
]
ModelName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.:/@+-]+$",
        description="Model id sent upstream; null uses the server's MODEL_NAME.",
    ),
]
SearchQuery = Annotated[str, Meta(min_length=1, max_length=200)]
Cursor = Annotated[
    str, Meta(max_length=200, description="Opaque: the `next_cursor` of the previous page.")
]


class _Wire(Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of our wire types: keyword-only, unknown fields are an error."""


# --- accounts ----------------------------------------------------------------


class RegisterRequest(_Wire):
    username: Username
    password: Password


class LoginRequest(_Wire):
    username: Annotated[str, Meta(min_length=1, max_length=64)]
    password: Annotated[str, Meta(min_length=1, max_length=256)]


class User(_Wire):
    id: int
    username: str


class AccessToken(_Wire):
    access_token: str
    expires_in: Annotated[int, Meta(description="Lifetime in seconds.")]
    token_type: Literal["bearer"] = "bearer"


# --- chats and messages -------------------------------------------------------


class Usage(_Wire):
    prompt_tokens: int | None
    completion_tokens: int | None


class Message(_Wire):
    id: UUID
    chat_id: UUID
    role: MessageRole
    content: str
    status: MessageStatus
    is_ai: bool
    model: str | None
    usage: Usage | None
    finish_reason: str | None
    created_at: datetime
    completed_at: datetime | None


class Chat(_Wire):
    id: UUID
    title: str
    system_prompt: str
    model: str | None
    created_at: datetime
    updated_at: datetime


class ChatWithMessages(Chat):
    messages: list[Message]


class ChatCreate(_Wire):
    title: Title = "New chat"
    system_prompt: SystemPrompt = ""
    model: ModelName | None = None


class ChatUpdate(_Wire):
    """Only the fields given change; `model: null` returns to the server default."""

    title: Title | UnsetType = UNSET
    system_prompt: SystemPrompt | UnsetType = UNSET
    model: ModelName | UnsetType | None = UNSET


class ChatPage(_Wire):
    items: list[Chat]
    next_cursor: str | None = msgspec.field(default=None)


class MessagePage(_Wire):
    """Messages oldest first; `next_cursor`, passed as `before`, fetches older ones."""

    items: list[Message]
    next_cursor: str | None = msgspec.field(default=None)


# --- operations -----------------------------------------------------------------


class Health(_Wire):
    version: str
    status: Literal["ok"] = "ok"


class Readiness(_Wire):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unavailable"]


# --- WebSocket frames (PROTOCOL.md section 2) --------------------------------------
# Client frames are tagged by `action`, server frames by `type`.


class Ping(Struct, tag="ping", tag_field="action", forbid_unknown_fields=True):
    """Ask the server for a `pong`."""


ClientFrame = Ping


class Limits(_Wire):
    max_message_chars: int
    max_frame_bytes: int
    max_concurrent_generations: int


class Ready(Struct, tag="ready", tag_field="type", kw_only=True):
    session_id: str
    user_id: int
    limits: Limits
    protocol: int = 1


class Pong(Struct, tag="pong", tag_field="type"):
    pass


class ErrorEvent(Struct, tag="error", tag_field="type", kw_only=True):
    code: str
    message: str
    task_id: UUID | None = None
    chat_id: UUID | None = None
    request_id: str | None = None


ServerFrame = Ready | Pong | ErrorEvent

decode_client_frame = msgspec.json.Decoder(ClientFrame).decode
encode_frame = msgspec.json.Encoder().encode
