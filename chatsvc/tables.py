"""Piccolo tables. Users are Piccolo's own ``BaseUser`` (table ``piccolo_user``)."""

from __future__ import annotations

from enum import StrEnum

from piccolo.apps.user.tables import BaseUser
from piccolo.columns import (
    JSONB,
    UUID,
    BigInt,
    Boolean,
    DoublePrecision,
    ForeignKey,
    Integer,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.columns.readable import Readable
from piccolo.table import Table

from chatsvc.settings import DEFAULT_PASSWORD_HASH_ROUNDS

#: The length rules of ``wire.Password`` (docs/protocol.md section 1).
MIN_PASSWORD, MAX_PASSWORD = 8, 256
#: PBKDF2-SHA256 rounds of a hash Piccolo makes itself (the admin's new users); chatsvc's
#: own hashes take ``PASSWORD_HASH_ROUNDS`` (this by default, OWASP's figure).
PASSWORD_ITERATIONS = DEFAULT_PASSWORD_HASH_ROUNDS


class Account(BaseUser, tablename="piccolo_user"):
    """``piccolo_user`` with chatsvc's password rules: Piccolo's hashing and stored format,
    for passwords up to ``MAX_PASSWORD`` characters (``BaseUser`` stops at 128).

    Not a table of its own (not in the app's ``table_classes``): the same rows as
    ``BaseUser``, for ``Account.hash_password`` and the admin's ``AdminUser``.
    """

    _min_password_length = MIN_PASSWORD
    _max_password_length = MAX_PASSWORD
    _pbkdf2_iteration_count = PASSWORD_ITERATIONS


class Role(StrEnum):
    user = "user"
    assistant = "assistant"


class Status(StrEnum):
    complete = "complete"
    streaming = "streaming"
    aborted = "aborted"
    failed = "failed"
    interrupted = "interrupted"


class TitleSource(StrEnum):
    """Who named a chat: its user (never renamed by the server), a placeholder from the
    first message (replaced by the model's title), or the model (named once)."""

    user = "user"
    placeholder = "placeholder"
    model = "model"


class Chat(Table):
    """A conversation owned by one user."""

    id = UUID(primary_key=True)
    owner = ForeignKey(
        references=BaseUser,
        on_delete=OnDelete.cascade,
        null=False,
        help_text="The user who owns the chat.",
    )
    title = Varchar(length=200, default="", help_text="Shown in chat lists; searchable.")
    title_source = Varchar(
        length=16,
        choices=TitleSource,
        default=TitleSource.user,
        help_text="Who named the chat: user, placeholder (to be named by the model), model.",
    )
    system_prompt = Text(default="", help_text="Sent first to the model on every generation.")
    model = Varchar(
        length=200, null=True, default=None, help_text="Model for this chat; empty: the default."
    )
    # Double precision, not real: a temperature of 0.3 must go upstream as 0.3 (issue 16).
    temperature = DoublePrecision(
        null=True, default=None, help_text="Sampling temperature (0-2); empty: the server's."
    )
    top_p = DoublePrecision(
        null=True, default=None, help_text="Nucleus sampling (0-1); empty: the server's."
    )
    max_tokens = Integer(
        null=True, default=None, help_text="Reply length cap in tokens; empty: the server's."
    )
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow(), help_text="Last change or message.")
    active_leaf = UUID(
        null=True,
        default=None,
        help_text="The last message of the branch shown and continued; empty: the newest message.",
    )

    @classmethod
    def get_readable(cls) -> Readable:
        """How the admin names a chat (in message lists and the chat filter)."""
        return Readable(template="%s (%s)", columns=[cls.title, cls.owner.username])


class Message(Table):
    """One user or assistant message of a chat."""

    id = UUID(primary_key=True)
    chat = ForeignKey(references=Chat, on_delete=OnDelete.cascade, null=False)
    owner = Integer(
        null=True,
        default=None,
        help_text="The owner of the chat (which never changes): a user's running replies "
        "are found by it and the status.",
    )
    parent = UUID(
        null=True,
        default=None,
        help_text="The message this one follows in the chat's tree; empty: a first message.",
    )
    role = Varchar(length=16, choices=Role)
    content = Text(default="")
    reasoning = Text(default="", help_text="What the model streamed as reasoning, if any.")
    status = Varchar(
        length=16,
        choices=Status,
        default=Status.complete,
        index=True,  # recovery looks for `streaming` replies every few seconds
    )
    model = Varchar(length=200, null=True, default=None, help_text="Model that wrote the reply.")
    prompt_tokens = Integer(null=True, default=None)
    completion_tokens = Integer(null=True, default=None)
    usage_estimated = Boolean(
        null=True,
        default=None,
        help_text="The token figures are chatsvc's estimate, not the model server's count; "
        "empty: a user message, or a reply stored before usage was tracked.",
    )
    finish_reason = Varchar(length=64, null=True, default=None)
    error_code = Varchar(length=64, null=True, default=None, help_text="Why a reply failed.")
    created_at = Timestamptz(default=TimestamptzNow())
    completed_at = Timestamptz(null=True, default=None)
    task_id = UUID(null=True, default=None, help_text="The generation that streams the reply.")
    instance = Varchar(
        length=64, null=True, default=None, help_text="The chatsvc instance streaming the reply."
    )
    tool_calls = JSONB(
        null=True, default=None, help_text="The tree tool calls the reply made, with results."
    )


class ChatTree(Table):
    """A chat's workspace tree (docs/protocol.md section 5): the root node and its version."""

    chat = ForeignKey(references=Chat, on_delete=OnDelete.cascade, null=False, unique=True)
    version = Integer(default=0, help_text="0 when created; +1 per change.")
    root = JSONB(default=None, null=True, help_text="The root node: id, value, children.")
    size = Integer(default=0, help_text="Bytes of the root as JSON (the per-user cap).")


class TokenVersion(Table):
    """Per user: the version every access token carries; raising it revokes them all."""

    account = ForeignKey(
        references=BaseUser,
        on_delete=OnDelete.cascade,
        null=False,
        unique=True,
        help_text="The user whose tokens this counts.",
    )
    version = Integer(
        default=0,
        help_text="Raised by a password change or a deactivation: older tokens are refused.",
    )


class RefreshToken(Table):
    """One refresh token of a session (a *family*: the tokens that replaced each other).

    Only its SHA-256 is stored. Each is exchanged once (``used_at``); presenting it again
    revokes its whole family (docs/protocol.md section 1).
    """

    id = UUID(primary_key=True)
    family = UUID(index=True, help_text="The session: every token that replaced another.")
    account = ForeignKey(
        references=BaseUser,
        on_delete=OnDelete.cascade,
        null=False,
        index=True,
        help_text="The user the session belongs to.",
    )
    token_hash = Varchar(
        length=64, unique=True, help_text="SHA-256 of the token (hex); the token is never kept."
    )
    version = Integer(
        default=0, help_text="The user's token version when issued: a raised one ends it."
    )
    created_at = Timestamptz(default=TimestamptzNow())
    expires_at = Timestamptz(default=TimestamptzNow())
    used_at = Timestamptz(
        null=True, default=None, help_text="When it was exchanged for the next token (last used)."
    )
    revoked_at = Timestamptz(
        null=True, default=None, help_text="When its session was ended (logout, reuse, password)."
    )


class UserQuota(Table):
    """Per user, set by a superuser in the admin: a daily token budget in place of
    ``DAILY_TOKEN_BUDGET`` (docs/operations.md, "Token budgets")."""

    account = ForeignKey(
        references=BaseUser,
        on_delete=OnDelete.cascade,
        null=False,
        unique=True,
        help_text="The user this budget is for (one row per user).",
    )
    daily_token_budget = Integer(
        null=True,
        default=None,
        help_text="Tokens a day (UTC) for this user, in place of DAILY_TOKEN_BUDGET; "
        "empty: no daily limit. Delete the row to fall back to the setting.",
    )


class DailySpend(Table, tablename="daily_spend"):
    """Each user's tokens per UTC day: the replies started that day, added as each ends.

    What the daily budget reads when it admits a reply: one row, where summing the day's
    replies cost a read of every one of them, a cost that grew with each message a user sent
    that day (docs/performance.md, "The day's tokens in one row"). Tokens spent stay spent:
    deleting a chat does not give them back, and imported chats bring none.
    """

    id = Varchar(length=80, primary_key=True, help_text="The user's id and the day: 12/2026-12-07.")
    account = ForeignKey(references=BaseUser, on_delete=OnDelete.cascade, null=False, index=True)
    day = Varchar(length=10, help_text="The UTC day (YYYY-MM-DD) the replies started.")
    tokens = BigInt(default=0, help_text="Prompt and completion tokens of those replies.")


class ApiKey(Table):
    """A user's API key for services (issue 16): only its hash is stored, never the key."""

    id = UUID(primary_key=True)
    owner = ForeignKey(
        references=BaseUser,
        on_delete=OnDelete.cascade,
        null=False,
        index=True,
        help_text="The user the key acts as.",
    )
    name = Varchar(length=100, help_text="What the key is for, as its owner named it.")
    prefix = Varchar(length=16, help_text="The key's first characters, to recognise it by.")
    hash = Varchar(
        length=64,
        unique=True,
        secret=True,  # never sent by the admin
        help_text="SHA-256 of the key (hex).",
    )
    created_at = Timestamptz(default=TimestamptzNow())
    last_used_at = Timestamptz(
        null=True, default=None, help_text="Last use, to the minute; empty: never used."
    )
    expires_at = Timestamptz(null=True, default=None, help_text="Empty: never expires.")
    revoked_at = Timestamptz(
        null=True,
        default=None,
        help_text="Set to revoke the key: refused from then on, its open sockets closed.",
    )

    @classmethod
    def get_readable(cls) -> Readable:
        return Readable(template="%s (%s)", columns=[cls.name, cls.prefix])


class ChatShare(Table):
    """A read-only link to a snapshot of a chat's conversation (issue 17): only the token's
    hash is stored; the messages are a copy, so later edits never change what it shows."""

    id = UUID(primary_key=True)
    chat = ForeignKey(
        references=Chat,
        on_delete=OnDelete.cascade,  # deleting the chat deletes its links: they answer 404
        null=False,
        index=True,
        help_text="The chat the snapshot was taken of.",
    )
    owner = ForeignKey(
        references=BaseUser,
        on_delete=OnDelete.cascade,
        null=False,
        index=True,
        help_text="The user who shared it (the chat's owner).",
    )
    prefix = Varchar(length=16, help_text="The token's first characters, to recognise it by.")
    hash = Varchar(
        length=64,
        unique=True,
        secret=True,  # never sent by the admin
        help_text="SHA-256 of the token (hex).",
    )
    title = Varchar(length=200, default="", help_text="The chat's title when shared.")
    messages = Text(
        default="[]",
        help_text="The snapshot: the active branch's finished messages when shared (JSON).",
    )
    created_at = Timestamptz(default=TimestamptzNow())
    revoked_at = Timestamptz(
        null=True,
        default=None,
        help_text="Set to revoke the link: it answers 404 from then on.",
    )

    @classmethod
    def get_readable(cls) -> Readable:
        return Readable(template="%s (%s)", columns=[cls.title, cls.prefix])


class FeedbackRating(StrEnum):
    up = "up"
    down = "down"


class MessageFeedback(Table):
    """A user's thumbs up or down on one of their assistant messages (issue 17), at most
    one per message."""

    id = UUID(primary_key=True)
    message = ForeignKey(
        references=Message,
        on_delete=OnDelete.cascade,
        null=False,
        unique=True,
        help_text="The assistant message rated (its chat is the owner's).",
    )
    rating = Varchar(length=8, choices=FeedbackRating, index=True, help_text="Thumbs up or down.")
    comment = Text(
        default="", help_text="What the user said of the reply (up to 2,000 characters)."
    )
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow(), help_text="Last change of the rating.")


class Instance(Table):
    """A running chatsvc process; the replies it streams are its own while its lease lasts."""

    id = Varchar(length=64, primary_key=True)
    host = Varchar(length=200, default="", help_text="Host name and process id, for operators.")
    started_at = Timestamptz(default=TimestamptzNow())
    heartbeat_at = Timestamptz(default=TimestamptzNow(), help_text="Renewed every few seconds.")


class UserUsage(Table, tablename="user_usage"):
    """A read-only view (created by a migration, not a table of the app): each user's
    replies that ended, all time, for the admin's usage table (issue 16)."""

    id = Integer(primary_key=True)
    account = ForeignKey(references=BaseUser, help_text="The user.")
    replies = Integer(help_text="Replies that ended (complete, aborted, failed, interrupted).")
    prompt_tokens = Integer()
    completion_tokens = Integer()
    total_tokens = Integer()
    estimated_replies = Integer(help_text="Replies whose figures are chatsvc's estimates.")
    last_reply_at = Timestamptz(null=True, default=None)


class UserDailyUsage(Table, tablename="user_daily_usage"):
    """A read-only view: each user's replies that ended, by UTC day of their start."""

    id = Varchar(length=80, primary_key=True, help_text="The user's id and the day.")
    account = ForeignKey(references=BaseUser, help_text="The user.")
    day = Varchar(length=10, help_text="The UTC day (YYYY-MM-DD); filter 2026-12 for a month.")
    replies = Integer(help_text="Replies that ended (complete, aborted, failed, interrupted).")
    prompt_tokens = Integer()
    completion_tokens = Integer()
    total_tokens = Integer()
    estimated_replies = Integer(help_text="Replies whose figures are chatsvc's estimates.")
    last_reply_at = Timestamptz(null=True, default=None)


#: Multi-column indexes, created by a migration (Piccolo columns declare single-column ones only):
#: chat lists are ``WHERE owner = ? ORDER BY updated_at``, histories ``WHERE chat = ? ORDER BY
#: created_at``, siblings and descendants ``WHERE chat = ? AND parent = ?`` (a first message's
#: siblings: ``parent IS NULL``), a user's running replies ``WHERE owner = ? AND status =
#: 'streaming'``. The migrations test checks the database against this list.
COMPOSITE_INDEXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "chat": (("owner", "updated_at"),),
    "message": (("chat", "created_at"), ("chat", "parent"), ("owner", "status")),
}
