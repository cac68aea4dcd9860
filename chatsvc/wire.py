"""Every type on the wire, as msgspec Structs: the single source of the OpenAPI schema.

Names are chosen for generated clients (``Chat``, ``ChatCreate``, ``ChatPage``...).
Timestamps encode as RFC 3339 UTC (``...Z``), ids as UUID strings.
"""

from __future__ import annotations

from datetime import date as datetime_date
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

MessageRole = Literal["user", "assistant"]
MessageStatus = Literal["complete", "streaming", "aborted", "failed", "interrupted"]
#: The ``type`` of every server frame: the tags of ``ServerFrame``'s members.
EventType = Literal[
    "ready",
    "chat_created",
    "chat_updated",
    "message",
    "started",
    "token",
    "reasoning",
    "snapshot",
    "done",
    "aborted",
    "error",
    "pong",
    "tree_update",
    "debug",
]
#: Every code an error carries on the wire (docs/protocol.md section 2).
ErrorCode = Literal[
    "invalid_message",
    "too_large",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "stale_version",
    "invalid_patch",
    "busy",
    "not_running",
    "rate_limited",
    "limit_reached",
    "llm_unavailable",
    "llm_error",
    "timeout",
    "internal",
    "unavailable",
    "overloaded",
    "quota_exceeded",
    "not_a_reply",
    "invalid_import",
]

#: Text without NUL characters (PostgreSQL cannot store them; SQLite would, so refuse both).
NO_NUL = r"^[^\x00]*$"

Username = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="3-64 characters: letters, digits, `_`, `.` and `-`.",
    ),
]
Password = Annotated[
    str, Meta(min_length=8, max_length=256, pattern=NO_NUL, description="8-256 characters.")
]
Title = Annotated[str, Meta(max_length=200, pattern=NO_NUL, description="Up to 200 characters.")]
SystemPrompt = Annotated[
    str,
    Meta(
        max_length=32_000,
        pattern=NO_NUL,
        description="Sent first to the model; up to 32,000 characters.",
    ),
]
ModelName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.:/@+-]+$",
        description="One of `GET /api/models` (else `422`); null uses the server's default.",
    ),
]
Temperature = Annotated[
    float,
    Meta(
        ge=0,
        le=2,
        description="Sampling temperature, 0-2; null: the server's `LLM_TEMPERATURE` (unset "
        "there: the model's own).",
    ),
]
TopP = Annotated[
    float,
    Meta(
        gt=0,
        le=1,
        description="Nucleus sampling: over 0, at most 1; null: the server's `LLM_TOP_P` "
        "(unset there: the model's own).",
    ),
]
MaxTokens = Annotated[
    int,
    Meta(
        ge=1,
        le=1_000_000,
        description="The reply's length cap in tokens, at least 1 and at most the server's "
        "`LLM_MAX_TOKENS_LIMIT` (else `422`); null: the server's `LLM_MAX_TOKENS` (unset "
        "there: none is sent).",
    ),
]
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
    username: Annotated[str, Meta(min_length=1, max_length=64, pattern=NO_NUL)]
    password: Annotated[str, Meta(min_length=1, max_length=256, pattern=NO_NUL)]


class TokenBudget(_Wire):
    """Tokens used against a budget: the user's today (`day`) or one chat's (`chat`)."""

    scope: Literal["day", "chat"]
    used: Annotated[
        int,
        Meta(
            description="Prompt and completion tokens of the replies counted "
            "(for `day`: those started today, UTC)."
        ),
    ]
    budget: Annotated[int | None, Meta(description="The budget; null: no limit.")]
    resets_at: Annotated[
        datetime | None,
        Meta(
            description="When `used` starts again from 0: the next UTC midnight for `day`; "
            "null for `chat` (never)."
        ),
    ]


class User(_Wire):
    id: int
    username: str
    #: Only in `GET /api/me`.
    daily_tokens: Annotated[
        TokenBudget | None,
        Meta(description="Only in `GET /api/me`: today's tokens against the daily budget."),
    ] = None


class AccessToken(_Wire):
    """A session's tokens: a short-lived access token and the refresh token that renews it."""

    access_token: Annotated[str, Meta(description="Send as `Authorization: Bearer <token>`.")]
    expires_in: Annotated[int, Meta(description="Seconds the access token stays valid.")]
    refresh_token: Annotated[
        str,
        Meta(
            description="Exchange it once at `POST /api/auth/refresh` for a new pair, before "
            "`refresh_expires_in` seconds; a second use ends the session."
        ),
    ]
    refresh_expires_in: Annotated[int, Meta(description="Seconds the refresh token stays valid.")]
    token_type: Literal["bearer"] = "bearer"


RefreshTokenText = Annotated[
    str, Meta(min_length=1, max_length=256, pattern=NO_NUL, description="A refresh token.")
]


class RefreshRequest(_Wire):
    refresh_token: RefreshTokenText


class PasswordChange(_Wire):
    current_password: Annotated[str, Meta(min_length=1, max_length=256, pattern=NO_NUL)]
    new_password: Password


# --- API keys (docs/protocol.md section 1.2) ------------------------------------

#: A key's longest lifetime from its creation: ten years.
MAX_KEY_SECONDS = 10 * 366 * 86_400


class ApiKeyCreate(_Wire):
    """A new API key: what it is for, and when it expires (`expires_at` or `expires_in`,
    not both; neither: never)."""

    name: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=100,
            pattern=r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$",
            description="What the key is for: 1-100 characters, no control characters.",
        ),
    ]
    expires_at: (
        Annotated[
            datetime,
            Meta(tz=True, description="When the key stops working: in the future, with a zone."),
        ]
        | None
    ) = None
    expires_in: (
        Annotated[
            int,
            Meta(ge=1, le=MAX_KEY_SECONDS, description="Seconds from now until the key expires."),
        ]
        | None
    ) = None


class ApiKey(_Wire):
    """An API key as lists show it: never the key itself, only its first characters."""

    id: UUID
    name: str
    prefix: Annotated[str, Meta(description="The key's first 12 characters (`csk_...`).")]
    created_at: datetime
    last_used_at: Annotated[
        datetime | None, Meta(description="Last use, to the minute; null: never used.")
    ]
    expires_at: Annotated[datetime | None, Meta(description="Null: never expires.")]


class NewApiKey(ApiKey):
    """A key just made: `key` is shown this once and never again."""

    key: Annotated[
        str, Meta(description="Send it as `Authorization: Bearer <key>`; keep it secret.")
    ]


class ApiKeyList(_Wire):
    items: list[ApiKey]


# --- share links (docs/protocol.md section 3.4) ------------------------------


class Share(_Wire):
    """A share link as its owner's lists show it: never the token, only its first characters."""

    id: UUID
    chat_id: UUID
    prefix: Annotated[str, Meta(description="The token's first 12 characters (`shr_...`).")]
    title: Annotated[str, Meta(description="The chat's title when it was shared.")]
    created_at: datetime


class NewShare(Share):
    """A link just made: `token` and `url` are shown this once and never again."""

    token: Annotated[str, Meta(description="The link's secret; anyone who has it can read.")]
    url: Annotated[str, Meta(description="The read-only page, on this server: `/share/<token>`.")]


class ShareList(_Wire):
    items: list[Share]


class SharedMessage(_Wire):
    """One message of a snapshot: a copy, as it was when the chat was shared."""

    role: MessageRole
    content: str
    model: str | None
    created_at: datetime


class SharedChat(_Wire):
    """A shared snapshot, as anyone with the link reads it (no login)."""

    title: str
    shared_at: datetime
    messages: list[SharedMessage]


# --- chats and messages -------------------------------------------------------


class Usage(_Wire):
    """Tokens of one reply, summed over its upstream rounds (docs/protocol.md section 3.2)."""

    prompt_tokens: int | None
    completion_tokens: int | None
    estimated: Annotated[
        bool,
        Meta(
            description="True when a figure is chatsvc's estimate (about 4 characters a "
            "token), not the model server's count: it sent none (an aborted reply, a server "
            "without usage in its stream)."
        ),
    ] = False


class ToolCallRecord(_Wire):
    """A tool call an assistant reply made (docs/protocol.md section 5), and its result."""

    name: str
    arguments: Annotated[str, Meta(description="The arguments as the model wrote them (JSON).")]
    result: Annotated[
        dict[str, Any],
        Meta(
            description='What the model was answered: `{"ok": true, "version", "id"}` or '
            '`{"ok": false, "error"}`.'
        ),
    ]


FeedbackRating = Literal["up", "down"]
#: The longest feedback comment (``tables.MAX_FEEDBACK_COMMENT``).
MAX_FEEDBACK_COMMENT = 2_000
FeedbackComment = Annotated[
    str,
    Meta(
        max_length=MAX_FEEDBACK_COMMENT,
        pattern=NO_NUL,
        description=f"Up to {MAX_FEEDBACK_COMMENT} characters; may be empty.",
    ),
]


class FeedbackUpdate(_Wire):
    """A thumbs up or down on an assistant message, with an optional comment (issue 17)."""

    rating: FeedbackRating
    comment: FeedbackComment = ""


class Feedback(_Wire):
    """The owner's rating of an assistant message; one per message, replaced by a new one."""

    rating: FeedbackRating
    comment: str
    created_at: datetime
    updated_at: datetime


class Message(_Wire, omit_defaults=True):
    """`tool_calls` is left out when the message made none, `reasoning` when the model
    streamed none; `parent_id` for a first message; `sibling_index`, `sibling_count` and
    `sibling_ids` when it has no siblings (0, 1 and its own id)."""

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
    tool_calls: Annotated[
        list[ToolCallRecord] | None,
        Meta(description="The workspace tree tool calls of an assistant reply, in order."),
    ] = None
    reasoning: Annotated[
        str,
        Meta(
            description="What the model streamed as reasoning before or while it answered "
            "(`reasoning` events); left out when none."
        ),
    ] = ""
    parent_id: Annotated[
        UUID | None,
        Meta(description="The message this one follows in the chat's tree; none: a first one."),
    ] = None
    sibling_index: Annotated[
        int, Meta(description="Its place among the messages of the same parent, oldest first.")
    ] = 0
    sibling_count: Annotated[
        int, Meta(description="How many messages share its parent, itself included.")
    ] = 1
    sibling_ids: Annotated[
        list[UUID] | None,
        Meta(description="The ids of the messages sharing its parent, itself included, in order."),
    ] = None
    feedback: Annotated[
        Feedback | None,
        Meta(description="The owner's thumbs up or down on an assistant message; left out: none."),
    ] = None


class Chat(_Wire):
    """`model`, `temperature`, `top_p` and `max_tokens` are the chat's own generation
    settings; null: the server's default for each (docs/protocol.md section 3)."""

    id: UUID
    title: str
    system_prompt: str
    model: str | None
    # Without the bounds of `ChatCreate`: what is stored is shown as it is (issue 16).
    temperature: Annotated[
        float | None, Meta(description="The chat's temperature; null: the server's.")
    ]
    top_p: Annotated[float | None, Meta(description="The chat's top_p; null: the server's.")]
    max_tokens: Annotated[
        int | None,
        Meta(
            description="The chat's reply length cap in tokens (sent at most "
            "`LLM_MAX_TOKENS_LIMIT`); null: the server's."
        ),
    ]
    created_at: datetime
    updated_at: datetime
    active_leaf_id: Annotated[
        UUID | None,
        Meta(
            description="The last message of the branch shown and continued; null: the "
            "newest message."
        ),
    ]
    message_count: Annotated[int, Meta(description="The chat's messages, on every branch.")]


class ChatWithMessages(Chat):
    """The chat with the newest messages of its active branch, oldest first;
    `messages_next_cursor`, passed as `before` to `GET /api/chats/{chat_id}/messages`,
    fetches older ones."""

    messages: list[Message]
    messages_next_cursor: str | None = msgspec.field(default=None)


#: The title of a chat created without one.
DEFAULT_TITLE = "New chat"


class ChatCreate(_Wire):
    """With `content`, the chat starts with that message and the answer is the reply's
    (docs/protocol.md section 4.3); its title is then the message's first line unless
    `title` says otherwise."""

    title: Title = DEFAULT_TITLE
    system_prompt: SystemPrompt = ""
    model: ModelName | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_tokens: MaxTokens | None = None
    content: Content | None = None


class ChatUpdate(_Wire):
    """Only the fields given change; `null` returns `model`, `temperature`, `top_p` or
    `max_tokens` to the server's default."""

    title: Title | UnsetType = UNSET
    system_prompt: SystemPrompt | UnsetType = UNSET
    model: ModelName | UnsetType | None = UNSET
    temperature: Temperature | UnsetType | None = UNSET
    top_p: TopP | UnsetType | None = UNSET
    max_tokens: MaxTokens | UnsetType | None = UNSET


class ModelInfo(_Wire):
    """A model a chat may choose."""

    id: Annotated[str, Meta(description="The model id, as `model` of a chat takes it.")]


class ModelList(_Wire):
    """The models a chat may choose (the server's `MODELS`), `default` first."""

    default: Annotated[
        str, Meta(description="The model of chats whose `model` is null (`MODEL_NAME`).")
    ]
    models: list[ModelInfo]


# --- usage (docs/protocol.md section 3.2) ------------------------------------------------

UsageGrouping = Literal["day", "chat", "model"]


class UsageTotals(_Wire):
    """Tokens of the replies counted (every assistant message that has ended)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: Annotated[int, Meta(description="`prompt_tokens + completion_tokens`.")]
    replies: int
    estimated_replies: Annotated[
        int, Meta(description="Replies whose figures are estimates (`usage.estimated`).")
    ]
    estimated_share: Annotated[
        float,
        Meta(
            ge=0, le=1, description="`estimated_replies / replies`, to 4 decimals (0: no replies)."
        ),
    ]


class UsageGroup(UsageTotals):
    """One group of `group_by`: a UTC day, a chat or a model."""

    key: Annotated[
        str,
        Meta(
            description="The UTC day (`YYYY-MM-DD`), the chat's id, or the model's name "
            "(empty: not recorded)."
        ),
    ]
    title: Annotated[
        str | None, Meta(description="The chat's title (`group_by=chat`); else null.")
    ] = None


class UsageReport(_Wire):
    """A user's usage over UTC days `from` to `to` (both included), in groups."""

    user_id: int
    from_: datetime_date = msgspec.field(name="from")
    to: datetime_date
    group_by: UsageGrouping
    totals: UsageTotals
    groups: Annotated[
        list[UsageGroup],
        Meta(
            description="Days oldest first (days without replies left out); chats and models "
            "by `total_tokens`, largest first; at most `limit`."
        ),
    ]
    truncated: Annotated[
        bool, Meta(description="More groups than `limit`: `totals` still counts them all.")
    ] = False


class ChatPage(_Wire):
    items: list[Chat]
    next_cursor: str | None = msgspec.field(default=None)


class MessagePage(_Wire):
    """Messages oldest first (of the active branch, or of the whole chat with `all=true`);
    `next_cursor`, passed as `before`, fetches older ones."""

    items: list[Message]
    next_cursor: str | None = msgspec.field(default=None)


# --- full-text search (issue 17, docs/protocol.md "Search") ---------------------------------


class SearchHit(_Wire):
    """A chat title or a message that matched `q`; `ranges` are `[start, end)` offsets in
    Unicode code points of `snippet`, the words that matched."""

    chat_id: UUID
    chat_title: str
    message_id: Annotated[
        UUID | None, Meta(description="The message that matched; null: the chat's title did.")
    ]
    role: MessageRole | None
    created_at: datetime
    snippet: Annotated[str, Meta(description="Plain text around the match (never HTML).")]
    ranges: list[tuple[int, int]]
    score: Annotated[float, Meta(description="Higher: a better match (the engine's own scale).")]


class SearchPage(_Wire):
    """Hits best first (ties by id); `next_cursor`, passed as `cursor`, fetches the next ones."""

    items: list[SearchHit]
    next_cursor: str | None = msgspec.field(default=None)


# --- export and import (issue 17, point 2) -----------------------------------------

EXPORT_FORMAT = "chatsvc.export"
EXPORT_VERSION = 1
ExportTitle = Annotated[str, Meta(max_length=200, pattern=NO_NUL)]
ExportText = Annotated[str, Meta(pattern=NO_NUL)]


class ExportedMessage(_Wire):
    """One message of an exported chat: `id` is its id in this file, `parent_id` the
    message it follows (null: a first message); importing gives every message a new id."""

    id: UUID
    parent_id: UUID | None
    role: MessageRole
    content: ExportText
    status: MessageStatus
    created_at: datetime
    completed_at: datetime | None = None
    reasoning: ExportText = ""
    model: str | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    tool_calls: list[ToolCallRecord] | None = None
    feedback: Feedback | None = None


class ExportedChat(_Wire):
    """A chat with every message of every branch, oldest first; `active_leaf_id` is the
    end of the branch shown and continued (null: the newest message)."""

    id: UUID
    title: ExportTitle
    created_at: datetime
    updated_at: datetime
    messages: list[ExportedMessage]
    system_prompt: Annotated[str, Meta(max_length=32_000, pattern=NO_NUL)] = ""
    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    active_leaf_id: UUID | None = None


class ChatExport(_Wire):
    """`GET /api/chats/{chat_id}/export`, and each line of `GET /api/me/export`; what
    `POST /api/import` takes back (docs/protocol.md section 3.6)."""

    format: Literal["chatsvc.export"]
    version: Literal[1]
    exported_at: datetime
    chat: ExportedChat


ExportFormat = Literal["json", "markdown"]


class ImportSkipped(_Wire):
    """A chat, or a part of one, left out of an import, and why."""

    index: Annotated[int, Meta(description="The chat's place in the file, from 0.")]
    title: str
    reason: str


class ImportReport(_Wire):
    """What `POST /api/import` stored: the new chats' ids, in the file's order, and what
    it left out (whole chats, or messages of an imported one: hidden, system, tool or
    non-text nodes of a ChatGPT export)."""

    imported: list[UUID]
    skipped: list[ImportSkipped]


# --- operations -----------------------------------------------------------------


class Health(_Wire):
    version: str
    status: Literal["ok"] = "ok"


class Readiness(_Wire):
    """`status` follows the database and the event bus; `llm` is the upstream circuit
    breaker's state. `event_bus` is `none` for one instance (no EVENT_BUS_URL)."""

    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unavailable"]
    event_bus: Literal["ok", "unavailable", "none"]
    llm: Literal["closed", "open", "half-open"]


# --- generation (REST) ---------------------------------------------------------------

Content = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=1_000_000,
        pattern=NO_NUL,
        description="The message; MAX_MESSAGE_CHARS at most.",
    ),
]
RequestId = Annotated[
    str, Meta(max_length=200, description="Any client string, echoed in the answers.")
]


ParentId = Annotated[
    UUID | None,
    Meta(
        description="Edit and resend: the message the new one follows (an assistant message "
        "of the chat), so it becomes a sibling of what followed it; null: a new first "
        "message. Left out: the end of the active branch."
    ),
]


class MessageCreate(_Wire):
    content: Content
    parent_id: ParentId | UnsetType = UNSET


class ActiveBranch(_Wire):
    """`message_id`: any message of the chat; the branch becomes the newest one under it."""

    message_id: UUID


class ChatReply(_Wire):
    """A chat started with its first message (`POST /api/chats` with `content`), and the
    finished reply (status `complete` or `aborted`)."""

    chat: Chat
    message: Message
    chat_id: UUID
    message_id: UUID


class MessageReply(_Wire):
    """The finished reply (status `complete` or `aborted`)."""

    message: Message
    chat_id: UUID
    message_id: UUID


class AbortResult(_Wire):
    task_id: UUID
    message: Message


# --- WebSocket frames (docs/protocol.md section 4.2) --------------------------------------
# Client frames are tagged by `action`, server frames by `type`.


class _Action(Struct, tag_field="action", forbid_unknown_fields=True, kw_only=True):
    pass


class SendMessage(_Action, tag="send_message"):
    content: Content
    chat_id: UUID | None = None
    request_id: RequestId | None = None
    parent_id: ParentId | UnsetType = UNSET


class Regenerate(_Action, tag="regenerate"):
    """A new reply in place of ``message_id`` (an assistant message), as its sibling."""

    chat_id: UUID
    message_id: UUID
    request_id: RequestId | None = None


class Abort(_Action, tag="abort"):
    task_id: UUID | None = None
    chat_id: UUID | None = None

    def __post_init__(self) -> None:
        if self.task_id is None and self.chat_id is None:
            raise ValueError("abort needs `task_id` or `chat_id`")


class Subscribe(_Action, tag="subscribe"):
    chat_id: UUID
    debug: bool = False


class Unsubscribe(_Action, tag="unsubscribe"):
    chat_id: UUID


class Ping(_Action, tag="ping"):
    """Ask the server for a `pong`."""


ClientFrame = SendMessage | Regenerate | Abort | Subscribe | Unsubscribe | Ping


class _RequestIdOnly(Struct):
    request_id: str | None = None


class Limits(_Wire):
    max_message_chars: int
    max_frame_bytes: int
    max_concurrent_generations: int


class _Event(Struct, tag_field="type", kw_only=True):
    pass


class Ready(_Event, tag="ready"):
    session_id: str
    user_id: int
    limits: Limits
    protocol: int = 1


class ChatCreated(_Event, tag="chat_created"):
    chat: Chat
    request_id: str | None = None


class ChatUpdated(_Event, tag="chat_updated"):
    """The chat changed: the model named it (after its first reply), or its active branch
    (`active_leaf_id`) moved after a regenerate, an edit or a switch."""

    chat: Chat
    request_id: str | None = None


class MessageEvent(_Event, tag="message"):
    message: Message
    request_id: str | None = None


class Started(_Event, tag="started"):
    task_id: UUID
    chat_id: UUID
    message_id: UUID
    request_id: str | None = None


class TokenEvent(_Event, tag="token"):
    task_id: UUID
    chat_id: UUID
    seq: int
    token: str


class ReasoningEvent(_Event, tag="reasoning"):
    task_id: UUID
    chat_id: UUID
    seq: int
    token: str


class Snapshot(_Event, tag="snapshot"):
    """Sent on `subscribe` while a reply streams: everything so far (its text, and its
    reasoning); `token` and `reasoning` events go on from `seq + 1`."""

    task_id: UUID
    chat_id: UUID
    message_id: UUID
    seq: int
    content: str
    reasoning: str = ""


class Done(_Event, tag="done"):
    task_id: UUID
    chat_id: UUID
    message: Message
    usage: Usage | None
    finish_reason: str | None


class Aborted(_Event, tag="aborted"):
    task_id: UUID
    chat_id: UUID
    message: Message


class ErrorEvent(_Event, tag="error"):
    code: ErrorCode
    message: str
    task_id: UUID | None = None
    chat_id: UUID | None = None
    request_id: str | None = None
    #: With `overloaded`, and `rate_limited` for the per-user cap on replies: seconds to
    #: wait before sending the same frame again.
    retry_after: float | None = None
    #: With `quota_exceeded`: the budget that is spent (docs/protocol.md section 2.1).
    quota: TokenBudget | None = None


class Pong(_Event, tag="pong"):
    pass


# --- the workspace tree (docs/protocol.md section 5) -----------------------------------------


class TreeNode(_Wire):
    """A node: `id` unique in the tree (the root's is `root`), a text `value`, children."""

    id: str
    value: str
    children: list[TreeNode] = []


class Tree(_Wire):
    """A chat's workspace tree; `version` is 0 for a new chat and grows by 1 per change."""

    chat_id: UUID
    version: int
    root: TreeNode


class PatchOperation(Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """One RFC 6902 operation on the document `{"root": Node}` (paths start with `/root`)."""

    op: Literal["add", "remove", "replace", "move", "copy", "test"]
    path: Annotated[str, Meta(max_length=2_000, pattern=NO_NUL)]
    from_: Annotated[str, Meta(max_length=2_000, pattern=NO_NUL)] | None = msgspec.field(
        default=None, name="from"
    )
    value: Any = msgspec.UNSET


class TreePatch(_Wire):
    """An RFC 6902 JSON Patch against `version`: applied whole or not at all."""

    version: Annotated[int, Meta(ge=0)]
    ops: Annotated[list[PatchOperation], Meta(min_length=1, max_length=1_000)]


class TreeUpdate(_Event, tag="tree_update"):
    """A change of the chat's tree: `ops` turn version `version - 1` into `version`."""

    chat_id: UUID
    version: int
    ops: list[PatchOperation]
    source: Literal["assistant", "user"]
    task_id: UUID | None = None


class DebugEvent(_Event, tag="debug"):
    """Timings and counts of a generation, for sockets that asked (`subscribe` `debug`)."""

    chat_id: UUID
    task_id: UUID
    data: dict[str, Any]


ServerFrame = (
    Ready
    | ChatCreated
    | ChatUpdated
    | MessageEvent
    | Started
    | TokenEvent
    | ReasoningEvent
    | Snapshot
    | Done
    | Aborted
    | ErrorEvent
    | Pong
    | TreeUpdate
    | DebugEvent
)

decode_client_frame = msgspec.json.Decoder(ClientFrame).decode
decode_request_id = msgspec.json.Decoder(_RequestIdOnly).decode
encode_frame = msgspec.json.Encoder().encode
