"""Every database query of chatsvc, over the Piccolo tables.

Functions take plain values and return the typed records of ``records.py``;
callers above this module never build queries nor see a row. Every chat query
is scoped by owner, so another user's chat is simply not found.
"""

# Piccolo's query builders are typed with unparameterised generics (``Select``,
# ``Update[Unknown]``, raw rows as ``Unknown``), so strict pyright sees every
# query here as partially unknown. This module is the one that builds queries,
# and it turns every row into a typed record before returning it: the unknowns
# stop here, and only these three rules are relaxed, only in this file.
# pyright: reportUnknownMemberType=false, reportUnknownVariableType=false
# pyright: reportUnknownArgumentType=false

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
from piccolo.apps.user.tables import BaseUser
from piccolo.columns.base import Column
from piccolo.columns.combination import WhereRaw
from piccolo.engine.postgres import PostgresEngine
from piccolo.query.functions.string import Length

from chatsvc.admission import admit
from chatsvc.database import KeyedTurns, ServerPostgresEngine, current_engine, write_transaction
from chatsvc.errors import Conflict, LimitReached
from chatsvc.records import (
    ChatRecord,
    Exchange,
    InterruptedReply,
    MessageRecord,
    RunningReply,
    TreeRecord,
    Turn,
    UserAccess,
)
from chatsvc.tables import Chat, ChatTree, Instance, Message
from chatsvc.tree import Node, empty_root
from chatsvc.wire import ErrorCode, MessageStatus, ToolCallRecord

#: A row as Piccolo gives it, before it becomes a record.
_Row = dict[str, Any]
#: A place in an ordered list: the sort timestamp, then the id that breaks ties.
_Keyset = tuple[datetime, UUID]


def now() -> datetime:
    return datetime.now(UTC)


# --- users ----------------------------------------------------------------------


async def username_exists(username: str) -> bool:
    return await BaseUser.exists().where(BaseUser.username == username)


async def create_user(
    username: str, password_hash: str, *, admin: bool = False, superuser: bool = False
) -> int:
    """Insert an active user; :class:`Conflict` when the username is taken."""
    # BaseUser.email is UNIQUE NOT NULL; users of the API have none, so keep it unique.
    user = BaseUser(
        username=username,
        password=password_hash,
        email=f"{username}@users.invalid",
        active=True,
        admin=admin,
        superuser=superuser,
    )
    try:
        rows = await BaseUser.insert(user).returning(BaseUser.id)
    except (asyncpg.UniqueViolationError, sqlite3.IntegrityError) as exc:
        raise Conflict(f"username {username!r} is already taken") from exc
    return rows[0]["id"]


#: A user with the version their tokens must carry (no ``token_version`` row yet: 0).
_USER_ACCESS = (
    "SELECT u.id, u.username, u.password, u.active, u.admin, "
    "COALESCE(v.version, 0) AS token_version "
    "FROM piccolo_user u LEFT JOIN token_version v ON v.account = u.id "
)


async def get_credentials(username: str) -> UserAccess | None:
    """The user's id, hash, flags and token version, by name."""
    rows = await BaseUser.raw(_USER_ACCESS + "WHERE u.username = {}", username)
    return _user(rows[0]) if rows else None


def _user(row: _Row) -> UserAccess:
    # SQLite answers 0/1 for booleans: convert them.
    return msgspec.convert(row, UserAccess, strict=False)


async def record_login(user_id: int, password_hash: str | None = None) -> None:
    # BaseUser.last_login is a naive TIMESTAMP column: store UTC without the offset.
    values: dict[Any, Any] = {BaseUser.last_login: now().replace(tzinfo=None)}
    if password_hash is not None:
        values[BaseUser.password] = password_hash
    await BaseUser.update(values).where(BaseUser.id == user_id)


async def get_active_user(user_id: int) -> UserAccess | None:
    rows = await access_of([user_id])
    return rows[0] if rows and rows[0].active else None


async def access_of(user_ids: list[int]) -> list[UserAccess]:
    """Flags and token version of these users, in one query (deleted users are missing)."""
    if not user_ids:
        return []
    marks = ", ".join("{}" for _ in user_ids)
    rows = await BaseUser.raw(_USER_ACCESS + f"WHERE u.id IN ({marks})", *user_ids)
    return [_user(row) for row in rows]


_RAISE_TOKEN_VERSION = (
    "INSERT INTO token_version (account, version) VALUES ({}, 1) "
    "ON CONFLICT (account) DO UPDATE SET version = token_version.version + 1"
)


async def update_user(user_id: int, values: dict[str, Any], *, revoke_tokens: bool) -> bool:
    """Change columns of a user (by name), and with ``revoke_tokens`` raise their token version.

    False when there is no such user.
    """
    columns: dict[Column | str, Any] = {**values}  # Piccolo looks each name up
    async with write_transaction(current_engine()):
        if not await BaseUser.exists().where(BaseUser.id == user_id):
            return False
        if columns:
            await BaseUser.update(columns).where(BaseUser.id == user_id)
        if revoke_tokens:
            await BaseUser.raw(_RAISE_TOKEN_VERSION, user_id)
    return True


# --- chats ----------------------------------------------------------------------

_CHAT_COLUMNS = (
    Chat.id,
    Chat.title,
    Chat.system_prompt,
    Chat.model,
    Chat.created_at,
    Chat.updated_at,
    Chat.title_source,
)


async def create_chat(
    owner: int,
    *,
    title: str,
    system_prompt: str,
    model: str | None,
    max_chats: int,
    title_source: str = "user",
) -> ChatRecord:
    """Insert a chat and its empty tree; :class:`LimitReached` when the owner has
    ``max_chats`` already. ``title_source``: see ``tables.TitleSource``."""
    stamp = now()
    engine = current_engine()
    async with write_transaction(engine):
        if isinstance(engine, PostgresEngine):
            await BaseUser.raw(_LOCK_USER, owner)  # two creates of one user count in turn
        await _check_room_for_chat(owner, max_chats)
        rows = await Chat.insert(
            Chat(
                owner=owner,
                title=title,
                title_source=title_source,
                system_prompt=system_prompt,
                model=model,
                created_at=stamp,
                updated_at=stamp,
            )
        ).returning(*_CHAT_COLUMNS)
        await _create_tree(rows[0]["id"])
    return ChatRecord(**rows[0])


async def _check_room_for_chat(owner: int, max_chats: int) -> None:
    """Inside the transaction that inserts a chat, with the owner's row locked."""
    if await Chat.count().where(Chat.owner == owner) >= max_chats:
        raise LimitReached(
            f"you have {max_chats} chats, the most allowed; delete one to start another"
        )


async def get_chat(owner: int, chat_id: UUID) -> ChatRecord | None:
    row = (
        await Chat.select(*_CHAT_COLUMNS)
        .where((Chat.id == chat_id) & (Chat.owner == owner))
        .first()
    )
    return ChatRecord(**row) if row else None


async def list_chats(
    owner: int,
    *,
    limit: int,
    after: tuple[datetime, UUID] | None = None,
    search: str | None = None,
) -> list[ChatRecord]:
    """Chats newest ``updated_at`` first (ties by id), strictly after the keyset ``after``."""
    query = Chat.select(*_CHAT_COLUMNS).where(Chat.owner == owner)
    if after is not None:
        updated_at, chat_id = after
        query = query.where(
            (Chat.updated_at < updated_at) | ((Chat.updated_at == updated_at) & (Chat.id < chat_id))
        )
    if search:
        query = query.where(_matches(search))
    rows = await query.order_by(Chat.updated_at, Chat.id, ascending=False).limit(limit)
    return [ChatRecord(**row) for row in rows]


# Literal substring match, case-insensitive, as constant SQL: the text is a bound
# parameter, so `%`, `_` and quotes are plain characters and nothing is spliced in.
_SEARCH = (
    "({find}(lower(chat.title), lower({{}})) > 0 OR EXISTS ("
    "SELECT 1 FROM message WHERE message.chat = chat.id "
    "AND {find}(lower(message.content), lower({{}})) > 0))"
)
_SEARCH_SQL = {
    "postgres": _SEARCH.format(find="strpos"),
    "sqlite": _SEARCH.format(find="instr"),
}


def _matches(search: str) -> WhereRaw:
    """The chat's title or any of its messages contains ``search``."""
    engine = "postgres" if isinstance(current_engine(), PostgresEngine) else "sqlite"
    return WhereRaw(_SEARCH_SQL[engine], search, search)


async def update_chat(owner: int, chat_id: UUID, values: dict[str, Any]) -> ChatRecord | None:
    columns: dict[Column | str, Any] = {**values}  # Piccolo looks each name up
    columns[Chat.updated_at] = now()
    rows = await (
        Chat.update(columns)
        .where((Chat.id == chat_id) & (Chat.owner == owner))
        .returning(*_CHAT_COLUMNS)
    )
    return ChatRecord(**rows[0]) if rows else None


async def delete_chat(owner: int, chat_id: UUID) -> bool:
    rows = await (
        Chat.delete().where((Chat.id == chat_id) & (Chat.owner == owner)).returning(Chat.id)
    )
    return bool(rows)


# --- messages -------------------------------------------------------------------

_MESSAGE_COLUMNS = (
    Message.id,
    Message.chat,
    Message.role,
    Message.content,
    Message.status,
    Message.model,
    Message.prompt_tokens,
    Message.completion_tokens,
    Message.finish_reason,
    Message.created_at,
    Message.completed_at,
    Message.tool_calls,
    Message.reasoning,
)


async def list_messages(
    chat_id: UUID, *, limit: int, before: _Keyset | None = None
) -> list[MessageRecord]:
    """The newest ``limit`` messages before the keyset ``before``, returned oldest first
    (a page: no caller reads a whole chat)."""
    query = Message.select(*_MESSAGE_COLUMNS).where(Message.chat == chat_id)
    if before is not None:
        query = query.where(_older_than(before))
    rows = await query.order_by(Message.created_at, Message.id, ascending=False).limit(limit)
    return [_message(row) for row in reversed(rows)]


def _message(row: _Row) -> MessageRecord:
    """The JSONB column comes as JSON text from both drivers (or null)."""
    stored = row["tool_calls"]
    if isinstance(stored, str | bytes):
        stored = msgspec.json.decode(stored)
    calls = msgspec.convert(stored, list[ToolCallRecord]) if stored else None
    values: _Row = {**row, "tool_calls": calls}
    return MessageRecord(**values)


#: Messages whose sizes one query reads while a prompt's history is gathered.
HISTORY_PAGE = 50


async def prompt_history(chat_id: UUID, *, budget: int, leave_out: UUID) -> list[Turn]:
    """The newest messages whose texts fit ``budget`` characters, oldest first: ``id``,
    ``role`` and ``content`` only. The newest one always goes, however long; empty
    ones and ``leave_out`` (the reply being written) never do.

    Sizes are read newest first, a page at a time, until the budget is full; then
    the texts of the messages that fit, in one query. A long chat costs what the
    budget holds plus a page of sizes, not its whole history (issue 12).
    """
    chosen: set[UUID] = set()
    oldest: _Keyset | None = None
    before: _Keyset | None = None
    while True:
        query = Message.select(
            Message.id, Message.created_at, Length(Message.content, alias="size")
        ).where(Message.chat == chat_id)
        if before is not None:
            query = query.where(_older_than(before))
        rows = await query.order_by(Message.created_at, Message.id, ascending=False).limit(
            HISTORY_PAGE
        )
        full = False
        for row in rows:
            if row["id"] == leave_out or not row["size"]:
                continue
            if chosen and budget - row["size"] < 0:
                full = True
                break
            budget -= row["size"]
            chosen.add(row["id"])
            oldest = (row["created_at"], row["id"])
        if full or len(rows) < HISTORY_PAGE:
            break
        before = (rows[-1]["created_at"], rows[-1]["id"])
    if oldest is None:
        return []
    texts = await (
        Message.select(Message.id, Message.role, Message.content)
        .where((Message.chat == chat_id) & _from(oldest))
        .order_by(Message.created_at, Message.id)
    )
    return [Turn(**row) for row in texts if row["id"] in chosen]


def _older_than(keyset: _Keyset) -> Any:
    """Messages strictly before ``keyset`` in history order (``created_at``, then id)."""
    created_at, message_id = keyset
    return (Message.created_at < created_at) | (
        (Message.created_at == created_at) & (Message.id < message_id)
    )


def _from(keyset: _Keyset) -> Any:
    """Messages at ``keyset`` or after it in history order."""
    created_at, message_id = keyset
    return (Message.created_at > created_at) | (
        (Message.created_at == created_at) & (Message.id >= message_id)
    )


async def create_exchange(
    owner: int,
    *,
    chat_id: UUID | None,
    new_chat_title: str,
    user_content: str,
    assistant_id: UUID,
    default_model: str,
    offered_models: Collection[str],
    task_id: UUID,
    instance: str,
    live_after: datetime,
    per_user_cap: int,
    max_chats: int,
) -> Exchange | None:
    """Store the user's message and an empty ``streaming`` reply, in one transaction.

    With no ``chat_id`` a chat is created first. The reply's model is the chat's
    when it is among ``offered_models``, else ``default_model`` (a chat may keep a
    model the operator no longer offers: it is never sent upstream). Returns
    the :class:`~chatsvc.records.Exchange`, or ``None`` when the
    chat is not the owner's.
    The limits hold across instances: the user's row is locked (SQLite has one
    writer anyway) while the replies streaming on live instances are counted,
    so two instances cannot both pass ``admission.admit`` (one reply per chat, the
    user's cap), or create a chat past ``max_chats``
    (``LimitReached``).
    """
    stamp = now()
    engine = current_engine()
    # On PostgreSQL a user's sends queue here rather than on their row's lock (KeyedTurns).
    one_per_user = (
        _ADMISSIONS.turn(owner, seconds=engine.write_seconds)
        if isinstance(engine, ServerPostgresEngine)
        else contextlib.nullcontext()
    )
    async with one_per_user, write_transaction(engine):
        if isinstance(engine, PostgresEngine):
            await BaseUser.raw(_LOCK_USER, owner)
        running = await Message.raw(_RUNNING_FOR_OWNER, owner, live_after)
        admit([row["chat"] for row in running], chat_id, per_user_cap)
        if chat_id is None:
            await _check_room_for_chat(owner, max_chats)
            chat = (
                await Chat.insert(
                    Chat(
                        owner=owner,
                        title=new_chat_title,
                        title_source="placeholder",  # the model may name it after its reply
                        created_at=stamp,
                        updated_at=stamp,
                    )
                ).returning(*_CHAT_COLUMNS)
            )[0]
            await _create_tree(chat["id"])
            created = True
        else:
            rows = await (
                Chat.update({Chat.updated_at: stamp})
                .where((Chat.id == chat_id) & (Chat.owner == owner))
                .returning(*_CHAT_COLUMNS)
            )
            if not rows:
                return None
            chat, created = rows[0], False
        user_message = Message(
            chat=chat["id"],
            role="user",
            content=user_content,
            status="complete",
            created_at=stamp,
            completed_at=stamp,
        )
        reply = Message(
            id=assistant_id,
            chat=chat["id"],
            role="assistant",
            content="",
            status="streaming",
            model=chat["model"] if chat["model"] in offered_models else default_model,
            created_at=stamp + _AFTER,
            task_id=task_id,
            instance=instance,
        )
        rows = await Message.insert(user_message, reply).returning(*_MESSAGE_COLUMNS)
    question, reply_row = sorted(rows, key=lambda row: row["role"] != "user")
    return Exchange(
        chat=ChatRecord(**chat),
        question=_message(question),
        reply=_message(reply_row),
        created=created,
    )


# Admission runs these for every message sent: as constant SQL they cost a few
# microseconds to prepare, where Piccolo's query builder takes a quarter of a
# millisecond for the join and subquery (tests/bench/admission.py).
_LOCK_USER = "SELECT id FROM piccolo_user WHERE id = {} FOR UPDATE"
#: The chats of the owner's replies streaming on a live instance.
_RUNNING_FOR_OWNER = (
    "SELECT message.chat FROM message JOIN chat ON chat.id = message.chat "
    "WHERE message.status = 'streaming' AND chat.owner = {} "
    "AND message.instance IN (SELECT id FROM instance WHERE heartbeat_at > {})"
)

_ADMISSIONS = KeyedTurns()

#: The reply is stamped just after the question, so the two never tie in history order.
_AFTER = timedelta(microseconds=1)


#: Replies saved by one checkpoint statement (SQLite binds at most 32,766 values).
CHECKPOINT_BATCH = 500


async def checkpoint_replies(replies: list[tuple[UUID, str, str]]) -> None:
    """Save the partial text and reasoning (id, text, reasoning) of replies still
    streaming (a finished one is left alone).

    One ``UPDATE`` for up to ``CHECKPOINT_BATCH`` replies, rather than one each:
    at 200 streams, one statement every ``CHECKPOINT_SECONDS`` instead of 200. The
    reasoning is only set when some reply of the batch has any.
    """
    async with write_transaction(current_engine()):
        for start in range(0, len(replies), CHECKPOINT_BATCH):
            batch = replies[start : start + CHECKPOINT_BATCH]
            cases = " ".join("WHEN {} THEN {}" for _ in batch)
            ids = ", ".join("{}" for _ in batch)
            values = [value for message_id, text, _ in batch for value in (message_id, text)]
            sets = f"content = CASE id {cases} END"
            if any(reasoning for _, _, reasoning in batch):
                sets += f", reasoning = CASE id {cases} END"
                values += [value for message_id, _, r in batch for value in (message_id, r)]
            await Message.raw(
                f"UPDATE message SET {sets} "  # noqa: S608 (placeholders only)
                f"WHERE status = 'streaming' AND id IN ({ids})",
                *values,
                *(message_id for message_id, _, _ in batch),
            )


async def finish_reply(
    message_id: UUID,
    chat_id: UUID,
    *,
    status: MessageStatus,
    content: str,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    finish_reason: str | None,
    error_code: ErrorCode | None,
    tool_calls: list[dict[str, Any]] | None = None,
    reasoning: str = "",
) -> MessageRecord | None:
    """The one final write of a reply: its text, reasoning, status, usage and tool calls
    (``name``, ``arguments``, ``result`` each); the chat's ``updated_at``. It goes before
    other queued writes: an abort, and every follower, waits for it."""
    stamp = now()
    async with write_transaction(current_engine(), urgent=True):
        rows = await (
            Message.update(
                {
                    Message.content: content,
                    Message.reasoning: reasoning,
                    Message.status: status,
                    Message.prompt_tokens: prompt_tokens,
                    Message.completion_tokens: completion_tokens,
                    Message.finish_reason: finish_reason,
                    Message.error_code: error_code,
                    Message.completed_at: stamp,
                    Message.tool_calls: tool_calls or None,
                }
            )
            .where(Message.id == message_id)
            .returning(*_MESSAGE_COLUMNS)
        )
        await Chat.update({Chat.updated_at: stamp}).where(Chat.id == chat_id)
    return _message(rows[0]) if rows else None


async def claim_title(chat_id: UUID) -> bool:
    """Take a chat whose title is a placeholder for the model to name (``model``): once,
    across instances; ``False`` when its user titled it or it was claimed before."""
    rows = await (
        Chat.update({Chat.title_source: "model"})
        .where((Chat.id == chat_id) & (Chat.title_source == "placeholder"))
        .returning(Chat.id)
    )
    return bool(rows)


async def set_model_title(chat_id: UUID, title: str) -> ChatRecord | None:
    """Store the title the model gave, unless the user renamed the chat meanwhile (or it
    is the title the chat has: ``None`` then too)."""
    rows = await (
        Chat.update({Chat.title: title, Chat.updated_at: now()})
        .where((Chat.id == chat_id) & (Chat.title_source == "model") & (Chat.title != title))
        .returning(*_CHAT_COLUMNS)
    )
    return ChatRecord(**rows[0]) if rows else None


async def get_message(message_id: UUID) -> MessageRecord | None:
    rows = await Message.select(*_MESSAGE_COLUMNS).where(Message.id == message_id)
    return _message(rows[0]) if rows else None


async def find_running(
    owner: int, *, task_id: UUID | None, chat_id: UUID | None, live_after: datetime
) -> RunningReply | None:
    """The owner's reply streaming on a live instance, by task or by chat."""
    where = (
        (Message.status == "streaming")
        & (Message.chat.owner == owner)
        & _on_live_instance(live_after)
    )
    if task_id is not None:
        where &= Message.task_id == task_id
    elif chat_id is not None:
        where &= Message.chat == chat_id
    rows = await Message.select(Message.id, Message.chat, Message.task_id, Message.instance).where(
        where
    )
    return RunningReply(**rows[0]) if rows else None


# --- trees ---------------------------------------------------------------------------


async def _create_tree(chat_id: UUID) -> None:
    """An empty tree (the root alone, version 0); nothing when the chat has one."""
    await ChatTree.insert(ChatTree(chat=chat_id, version=0, root=empty_root())).on_conflict(
        target=ChatTree.chat, action="DO NOTHING"
    )


async def get_tree(chat_id: UUID) -> TreeRecord:
    """The chat's tree; a chat from before trees gets an empty one."""
    query = ChatTree.select(ChatTree.version, ChatTree.root).where(ChatTree.chat == chat_id)
    rows = await query.output(load_json=True)
    if not rows:
        await _create_tree(chat_id)
        rows = await query.output(load_json=True)
    return TreeRecord(**rows[0])


#: The bytes of the trees of a chat's owner, but that chat's.
_OTHER_TREES_BYTES = (
    "SELECT COALESCE(SUM(chat_tree.size), 0) AS total FROM chat_tree "
    "JOIN chat ON chat.id = chat_tree.chat "
    "WHERE chat.owner = (SELECT owner FROM chat WHERE id = {}) AND chat_tree.chat <> {}"
)
_LOCK_CHAT_OWNER = (
    "SELECT id FROM piccolo_user WHERE id = (SELECT owner FROM chat WHERE id = {}) FOR UPDATE"
)


async def save_tree(
    chat_id: UUID, expected_version: int, root: Node, *, size: int, owner_cap: int
) -> int | None:
    """Store ``root`` (``size`` bytes as JSON) as the next version if the tree is still at
    ``expected_version``; :class:`LimitReached` if the owner's trees would then hold more
    than ``owner_cap`` bytes.

    One conditional UPDATE: of two writers from the same version, the database
    lets one through and the other matches no row (``None``), so no change is
    ever lost, across instances too. The owner's total is read in the same
    transaction, with the owner's row locked on PostgreSQL (SQLite has one
    writer), so two trees of one user cannot pass the cap together.
    """
    engine = current_engine()
    async with write_transaction(engine):
        if isinstance(engine, PostgresEngine):
            await BaseUser.raw(_LOCK_CHAT_OWNER, chat_id)
        others = (await ChatTree.raw(_OTHER_TREES_BYTES, chat_id, chat_id))[0]["total"]
        if others + size > owner_cap:
            raise LimitReached(
                f"your workspace trees together would hold more than {owner_cap} bytes; "
                "empty or delete one first"
            )
        rows = await (
            ChatTree.update(
                {ChatTree.root: root, ChatTree.version: ChatTree.version + 1, ChatTree.size: size}
            )
            .where((ChatTree.chat == chat_id) & (ChatTree.version == expected_version))
            .returning(ChatTree.version)
        )
    return rows[0]["version"] if rows else None


# --- instances ---------------------------------------------------------------------


def _live_instances(live_after: datetime) -> Any:
    return Instance.select(Instance.id).where(Instance.heartbeat_at > live_after)


def _on_live_instance(live_after: datetime) -> Any:
    return Message.instance.is_in(_live_instances(live_after))


async def register_instance(instance: str, host: str) -> None:
    stamp = now()
    await Instance.insert(Instance(id=instance, host=host, started_at=stamp, heartbeat_at=stamp))


async def renew_lease(instance: str, host: str) -> bool:
    """Extend the instance's lease; ``False`` when its row was gone (and is now back)."""
    rows = await (
        Instance.update({Instance.heartbeat_at: now()})
        .where(Instance.id == instance)
        .returning(Instance.id)
    )
    if rows:
        return True
    await register_instance(instance, host)
    return False


async def end_lease(instance: str) -> None:
    await Instance.delete().where(Instance.id == instance)


async def interrupt_orphaned_replies(
    live_after: datetime, *, sole: str | None = None
) -> list[InterruptedReply]:
    """Mark ``interrupted`` the replies still ``streaming`` for an instance that is gone.

    An instance is gone when its lease ran out (it crashed, or lost its
    database) or its row was removed (it stopped); a reply stored before
    instances were tracked has none. Replies of live instances are left alone.
    With ``sole``, that instance is the only one there is (no shared event
    bus), so every other is gone, whatever its lease says.
    """
    if sole is None:
        others_gone = Message.instance.not_in(_live_instances(live_after))
        gone_leases = Instance.heartbeat_at <= live_after
    else:
        others_gone = Message.instance != sole
        gone_leases = Instance.id != sole
    async with write_transaction(current_engine()):
        rows = await (
            Message.update({Message.status: "interrupted", Message.completed_at: now()})
            .where((Message.status == "streaming") & (Message.instance.is_null() | others_gone))
            .returning(Message.id, Message.chat, Message.task_id)
        )
        await Instance.delete().where(gone_leases)
    return [InterruptedReply(**row) for row in rows]
