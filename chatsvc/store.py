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
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import msgspec
from msgspec import UNSET, UnsetType
from piccolo.apps.user.tables import BaseUser
from piccolo.columns.base import Column
from piccolo.columns.combination import WhereRaw
from piccolo.engine.postgres import PostgresEngine

from chatsvc.admission import Admission, admit
from chatsvc.context import CHARS_PER_TOKEN
from chatsvc.database import (
    KeyedTurns,
    ServerPostgresEngine,
    current_engine,
    lock_user,
    write_transaction,
)
from chatsvc.errors import Busy, Conflict, InvalidInput, LimitReached, NotFound
from chatsvc.quota_store import add_spent, spent
from chatsvc.records import (
    ChatRecord,
    Exchange,
    InterruptedReply,
    MessageRecord,
    RunningReply,
    Sampling,
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

#: A chat that sets none of its sampling settings: the server's hold.
NO_SAMPLING = Sampling()

_CHAT_COLUMNS = (
    Chat.id,
    Chat.title,
    Chat.system_prompt,
    Chat.model,
    Chat.temperature,
    Chat.top_p,
    Chat.max_tokens,
    Chat.created_at,
    Chat.updated_at,
    Chat.title_source,
    Chat.active_leaf,
)


def _column_list(columns: tuple[Column, ...]) -> str:
    """The columns as constant SQL names them (``id, title, ...``): one list, the builder's
    and the raw statements' alike."""
    # `_meta` is how Piccolo's own docs reach a column's names.
    return ", ".join(
        column._meta.db_column_name  # pyright: ignore[reportPrivateUsage]
        for column in columns
    )


_CHAT_SQL = _column_list(_CHAT_COLUMNS)


class _NewChat(msgspec.Struct, frozen=True, kw_only=True):
    """A chat row to insert: every column of ``chat`` that is written."""

    id: UUID
    owner: int
    title: str
    title_source: str
    system_prompt: str
    model: str | None
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    created_at: datetime
    updated_at: datetime
    active_leaf: UUID | None = None


def _columns_and_row(row: type[msgspec.Struct]) -> tuple[str, str]:
    """The column list of an ``INSERT`` of ``row``'s fields, and one row of placeholders."""
    fields = row.__struct_fields__
    return ", ".join(fields), f"({', '.join('{}' for _ in fields)})"


# A burst's first messages make their chats: as constant SQL, like a send's other
# statements (see `_insert_messages`), without the query builder's CPU.
_COUNT_CHATS = "SELECT COUNT(*) AS n FROM chat WHERE owner = {}"
_NEW_CHAT_SQL, _NEW_CHAT_ROW = _columns_and_row(_NewChat)
_INSERT_CHAT = (
    f"INSERT INTO chat ({_NEW_CHAT_SQL}) VALUES {_NEW_CHAT_ROW} "  # noqa: S608 (column names and placeholders)
    f"RETURNING {_CHAT_SQL}"
)
_INSERT_TREE = (
    "INSERT INTO chat_tree (chat, version, root, size) VALUES ({}, 0, {}, 0) "
    "ON CONFLICT (chat) DO NOTHING"
)


def _uuid(value: Any) -> UUID:
    """An id read by a raw query (SQLite gives the text of computed columns)."""
    return value if isinstance(value, UUID) else UUID(str(value))


async def _chats(rows: list[_Row]) -> list[ChatRecord]:
    """Chat rows as records, with how many messages each holds (one query)."""
    if not rows:
        return []
    marks = ", ".join("{}" for _ in rows)
    counted = await Message.raw(
        f"SELECT chat, COUNT(*) AS n FROM message WHERE chat IN ({marks}) GROUP BY chat",  # noqa: S608 (placeholders only)
        *(row["id"] for row in rows),
    )
    counts = {_uuid(row["chat"]): row["n"] for row in counted}
    return [ChatRecord(**row, message_count=counts.get(row["id"], 0)) for row in rows]


async def create_chat(
    owner: int,
    *,
    title: str,
    system_prompt: str,
    model: str | None,
    max_chats: int,
    title_source: str = "user",
    sampling: Sampling = NO_SAMPLING,
) -> ChatRecord:
    """Insert a chat and its empty tree; :class:`LimitReached` when the owner has
    ``max_chats`` already. ``title_source``: see ``tables.TitleSource``."""
    stamp = now()
    engine = current_engine()
    async with write_transaction(engine):
        await lock_user(engine, owner)  # two creates of one user count in turn
        row = await _insert_chat(
            owner,
            max_chats,
            title=title,
            title_source=title_source,
            system_prompt=system_prompt,
            model=model,
            sampling=sampling,
            stamp=stamp,
        )
    return (await _chats([row]))[0]


async def _insert_chat(
    owner: int,
    max_chats: int,
    *,
    title: str,
    title_source: str,
    system_prompt: str,
    model: str | None,
    sampling: Sampling,
    stamp: datetime,
) -> _Row:
    """A chat and its empty tree, in the caller's write transaction; :class:`LimitReached`
    when the owner has ``max_chats`` already."""
    await _check_room_for_chat(owner, max_chats)
    chat = _NewChat(
        id=uuid4(),
        owner=owner,
        title=title,
        title_source=title_source,
        system_prompt=system_prompt,
        model=model,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_tokens,
        created_at=stamp,
        updated_at=stamp,
    )
    rows = await Chat.raw(_INSERT_CHAT, *msgspec.structs.astuple(chat))
    await create_tree(chat.id)
    return rows[0]


async def count_chats(owner: int) -> int:
    """How many chats ``owner`` keeps (inside a transaction that adds some: with the
    owner's row locked)."""
    return (await Chat.raw(_COUNT_CHATS, owner))[0]["n"]


async def _check_room_for_chat(owner: int, max_chats: int) -> None:
    """Inside the transaction that inserts a chat, with the owner's row locked."""
    if await count_chats(owner) >= max_chats:
        raise LimitReached(
            f"you have {max_chats} chats, the most allowed; delete one to start another"
        )


async def get_chat(owner: int, chat_id: UUID) -> ChatRecord | None:
    row = (
        await Chat.select(*_CHAT_COLUMNS)
        .where((Chat.id == chat_id) & (Chat.owner == owner))
        .first()
    )
    return (await _chats([row]))[0] if row else None


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
    return await _chats(rows)


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
    return (await _chats(rows))[0] if rows else None


async def delete_chat(owner: int, chat_id: UUID) -> bool:
    rows = await (
        Chat.delete().where((Chat.id == chat_id) & (Chat.owner == owner)).returning(Chat.id)
    )
    return bool(rows)


# --- messages -------------------------------------------------------------------

_MESSAGE_COLUMNS = (
    Message.id,
    Message.chat,
    Message.parent,
    Message.role,
    Message.content,
    Message.status,
    Message.model,
    Message.prompt_tokens,
    Message.completion_tokens,
    Message.usage_estimated,
    Message.finish_reason,
    Message.created_at,
    Message.completed_at,
    Message.tool_calls,
    Message.reasoning,
)


async def list_messages(
    chat_id: UUID, *, limit: int, before: _Keyset | None = None
) -> list[MessageRecord]:
    """The newest ``limit`` messages of the chat, every branch, before the keyset
    ``before``, returned oldest first (a page: no caller reads a whole chat)."""
    query = Message.select(*_MESSAGE_COLUMNS).where(Message.chat == chat_id)
    if before is not None:
        query = query.where(_older_than(before))
    rows = await query.order_by(Message.created_at, Message.id, ascending=False).limit(limit)
    return await _with_siblings(chat_id, [_message(row) for row in reversed(rows)])


async def chat_messages(chat_id: UUID) -> list[MessageRecord]:
    """Every message of the chat, every branch, oldest first (an export; issue 17): the
    caller bounds how many chats it holds at once."""
    rows = (
        await Message.select(*_MESSAGE_COLUMNS)
        .where(Message.chat == chat_id)
        .order_by(Message.created_at, Message.id)
    )
    return [_message(row) for row in rows]


# The conversation is the path from a first message to the chat's active leaf. It is
# read upwards from the leaf by a recursive query (SQLite and PostgreSQL both have
# them), each step one primary-key lookup, and never further than the caller needs.

#: The end of the chat's active branch: ``active_leaf``, or else its newest message.
_LEAF = (
    "SELECT COALESCE((SELECT active_leaf FROM chat WHERE id = {}), "
    "(SELECT id FROM message WHERE chat = {} ORDER BY created_at DESC, id DESC LIMIT 1)) "
    "AS leaf"
)
#: The ids of up to ``{}`` messages from a message up towards the root, with their depth.
_BRANCH_IDS = (
    "WITH RECURSIVE branch(id, parent, depth) AS ("
    "SELECT id, parent, 0 FROM message WHERE id = {} AND chat = {} "
    "UNION ALL SELECT message.id, message.parent, branch.depth + 1 FROM message "
    "JOIN branch ON message.id = branch.parent WHERE branch.depth + 1 < {}) "
    "SELECT id, depth FROM branch"
)


async def active_leaf(chat_id: UUID) -> UUID | None:
    """The last message of the chat's active branch (``None``: the chat has none)."""
    rows = await Message.raw(_LEAF, chat_id, chat_id)
    leaf = rows[0]["leaf"] if rows else None
    return _uuid(leaf) if leaf is not None else None


async def branch_messages(
    chat_id: UUID, *, limit: int, before: UUID | None = None
) -> list[MessageRecord]:
    """Up to ``limit`` messages of the active branch, oldest first: the newest ones, or
    with ``before`` (a message of the chat) the ones just above it. A message's
    ancestors never change, so a page read from ``before`` is the same whatever the
    active branch is by then."""
    if before is None:
        start = await active_leaf(chat_id)
    else:
        rows = await Message.select(Message.parent).where(
            (Message.id == before) & (Message.chat == chat_id)
        )
        if not rows:
            raise InvalidInput("before: not a message of this chat")
        start = rows[0]["parent"]
    if start is None:
        return []
    found = await Message.raw(_BRANCH_IDS, start, chat_id, limit)
    depth: dict[UUID, int] = {_uuid(row["id"]): row["depth"] for row in found}
    if not depth:
        return []
    rows = await Message.select(*_MESSAGE_COLUMNS).where(Message.id.is_in(list(depth)))
    records = [_message(row) for row in rows]
    records.sort(key=lambda record: -depth[record.id])
    return await _with_siblings(chat_id, records)


# Sorted in Python, not by the query: ordered by creation, SQLite may walk the chat's
# (chat, created_at) index and read every message (the parent column comes last, after
# the text), where the (chat, parent) index finds the siblings alone. Constant SQL: a
# reply's start and end each read its siblings, and Piccolo's query builder costs more
# CPU than the query (docs/performance.md, "Per-reply costs").
_SIBLINGS = "SELECT id, parent, created_at FROM message WHERE chat = {} AND "


async def _with_siblings(chat_id: UUID, records: list[MessageRecord]) -> list[MessageRecord]:
    """The records with the ids of their siblings (one query)."""
    if not records:
        return records
    parents = {record.parent for record in records}
    named = [parent for parent in parents if parent is not None]
    which = [f"parent IN ({', '.join('{}' for _ in named)})"] if named else []
    if None in parents:
        which.append("parent IS NULL")
    found: list[_Row] = await Message.raw(f"{_SIBLINGS}({' OR '.join(which)})", chat_id, *named)
    found.sort(key=_creation)
    groups: dict[UUID | None, list[UUID]] = {}
    for row in found:
        parent = row["parent"]
        groups.setdefault(None if parent is None else _uuid(parent), []).append(_uuid(row["id"]))
    return [
        msgspec.structs.replace(record, siblings=tuple(groups.get(record.parent, [record.id])))
        for record in records
    ]


async def descendant_leaf(owner: int, chat_id: UUID, message_id: UUID) -> UUID | None:
    """The newest message under ``message_id`` (itself when it has none below it): a
    leaf, since a message is always older than what follows it. ``None`` when the
    message is not one of the owner's chat."""
    rows = await Message.raw(_NEWEST_BELOW, message_id, chat_id, owner, chat_id)
    return _uuid(rows[0]["id"]) if rows else None


_NEWEST_BELOW = (
    "WITH RECURSIVE below(id, created_at) AS ("
    "SELECT message.id, message.created_at FROM message JOIN chat ON chat.id = message.chat "
    "WHERE message.id = {} AND message.chat = {} AND chat.owner = {} "
    "UNION ALL SELECT message.id, message.created_at FROM message "
    "JOIN below ON message.chat = {} AND message.parent = below.id) "
    "SELECT id FROM below ORDER BY created_at DESC, id DESC LIMIT 1"
)


async def set_active_leaf(owner: int, chat_id: UUID, leaf: UUID) -> ChatRecord | None:
    rows = await (
        Chat.update({Chat.active_leaf: leaf})
        .where((Chat.id == chat_id) & (Chat.owner == owner))
        .returning(*_CHAT_COLUMNS)
    )
    return (await _chats(rows))[0] if rows else None


def _message(row: _Row) -> MessageRecord:
    """The JSONB column comes as JSON text from both drivers (or null)."""
    stored = _json(row["tool_calls"])
    calls = msgspec.convert(stored, list[ToolCallRecord]) if stored else None
    values: _Row = {**row, "tool_calls": calls}
    return MessageRecord(**values)


#: The history of a prompt: the branch up from a message while the texts fit a budget of
#: ``{}`` characters (the first one always; the walk stops past the first that does not
#: fit), and the texts of those that fit.
_HISTORY = (
    "WITH RECURSIVE branch(id, parent, depth, size, used) AS ("
    "SELECT id, parent, 0, length(content), length(content) FROM message "
    "WHERE id = {} AND chat = {} "
    "UNION ALL SELECT message.id, message.parent, branch.depth + 1, length(message.content), "
    "branch.used + length(message.content) FROM message "
    "JOIN branch ON message.id = branch.parent WHERE branch.used <= {}) "
    "SELECT branch.id, branch.depth, branch.size, message.role, "
    "CASE WHEN branch.depth = 0 OR branch.used <= {} THEN message.content ELSE '' END "
    "AS content FROM branch JOIN message ON message.id = branch.id"
)


def _creation(row: _Row) -> tuple[datetime, str]:
    """History order: ``created_at``, then the id (as text, as SQLite compares it)."""
    return row["created_at"], str(row["id"])


def _depth(row: _Row) -> int:
    return row["depth"]


async def prompt_history(chat_id: UUID, *, leaf: UUID, budget: int) -> list[Turn]:
    """The branch ending at ``leaf`` (the message being answered), as far back as the
    texts fit ``budget`` characters, oldest first: ``id``, ``role`` and ``content``
    only. ``leaf`` always goes, however long; empty messages never do.

    One recursive query walks up from ``leaf`` and stops past the first message that
    does not fit: a long chat costs what the budget holds, not its whole history
    (issue 12).
    """
    rows = await Message.raw(_HISTORY, leaf, chat_id, budget, budget)
    turns: list[Turn] = []
    found: list[_Row] = rows
    found.sort(key=_depth)
    for row in found:
        if row["depth"] > 0 and not row["content"] and row["size"]:
            break  # the first that does not fit: the walk ends here
        if row["size"]:
            turns.append(Turn(id=_uuid(row["id"]), role=row["role"], content=row["content"]))
    return turns[::-1]


def _older_than(keyset: _Keyset) -> Any:
    """Messages strictly before ``keyset`` in history order (``created_at``, then id)."""
    created_at, message_id = keyset
    return (Message.created_at < created_at) | (
        (Message.created_at == created_at) & (Message.id < message_id)
    )


async def create_exchange(
    admission: Admission,
    *,
    chat_id: UUID | None,
    new_chat_title: str,
    user_content: str,
    max_chats: int,
    parent: UUID | UnsetType | None = UNSET,
    new_chat_system_prompt: str = "",
    new_chat_model: str | None = None,
    new_chat_sampling: Sampling = NO_SAMPLING,
    new_chat_title_source: str = "placeholder",
) -> Exchange | None:
    """Store the user's message and an empty ``streaming`` reply, in one transaction.

    With no ``chat_id`` a chat is created first (``new_chat_*``). The user's message
    follows ``parent`` (an assistant message of the chat; ``None``: a new first
    message; left out: the end of the active branch), the reply follows it, and the
    reply becomes the chat's active leaf. The reply's model is the chat's
    when it is among ``admission.offered_models``, else its ``default_model`` (a chat may
    keep a model the operator no longer offers: it is never sent upstream). Returns
    the :class:`~chatsvc.records.Exchange`, or ``None`` when the
    chat is not the owner's; ``NotFound`` or ``InvalidInput`` for a bad ``parent``.
    The limits hold across instances: the user's row is locked (SQLite has one
    writer anyway) while the replies streaming on live instances are counted,
    so two instances cannot both pass ``admission.admit`` (one reply per chat, the
    user's cap), or create a chat past ``max_chats``
    (``LimitReached``).
    """
    stamp, owner = now(), admission.owner
    async with _admitted(admission, chat_id):
        if chat_id is None:
            chat = await _insert_chat(
                owner,
                max_chats,
                title=new_chat_title,
                title_source=new_chat_title_source,
                system_prompt=new_chat_system_prompt,
                model=new_chat_model,
                sampling=new_chat_sampling,
                stamp=stamp,
            )
            created, follows = True, None
        else:
            rows = await Chat.raw(_OWNED_CHAT, chat_id, owner)
            if not rows:
                return None
            chat, created = rows[0], False
            follows = await active_leaf(chat_id) if parent is UNSET else parent
            if parent is not UNSET and parent is not None:
                await _check_parent(chat_id, parent)
        question_id = uuid4()
        user_message = _NewMessage(
            id=question_id,
            chat=chat["id"],
            owner=owner,
            parent=follows,
            role="user",
            content=user_content,
            status="complete",
            created_at=stamp,
            completed_at=stamp,
        )
        reply = _streaming_reply(admission, chat, question_id, stamp + _AFTER)
        rows = await _insert_messages(user_message, reply)
        chats = await Chat.raw(_LEAD_TO_REPLY, stamp, admission.reply_id, chat["id"])
        # Read inside the transaction, like everything the caller gets: a read failing
        # after the commit would leave the reply `streaming` with nothing to end it.
        record = (await _chats(chats))[0]
        question, reply_row = sorted(rows, key=lambda row: row["role"] != "user")
        exchange = [_message(question), _message(reply_row)]
        if created:  # the first message of a new chat, and its reply: each alone
            exchange = [msgspec.structs.replace(m, siblings=(m.id,)) for m in exchange]
        else:
            exchange = await _with_siblings(record.id, exchange)
    question_record, reply_record = exchange
    return Exchange(chat=record, question=question_record, reply=reply_record, created=created)


async def _check_parent(chat_id: UUID, parent: UUID) -> None:
    """A new user message follows an assistant message of the same chat."""
    rows = await Message.select(Message.role, Message.status).where(
        (Message.id == parent) & (Message.chat == chat_id)
    )
    if not rows:
        raise NotFound("parent_id: no such message in this chat")
    if rows[0]["role"] != "assistant":
        raise InvalidInput(
            "parent_id: a user message follows an assistant message (or null, to start over)"
        )


async def create_regeneration(
    admission: Admission, *, chat_id: UUID, message_id: UUID
) -> Exchange | None:
    """Store an empty ``streaming`` reply as a sibling of the reply ``message_id`` (same
    user message before it) and make it the chat's active leaf, in one transaction,
    under the same limits as :func:`create_exchange`. ``None`` when the chat is not the
    owner's; ``NotFound`` for a message not in the chat, ``InvalidInput`` for one that
    is not a reply, ``Busy`` for one still streaming."""
    stamp, owner = now(), admission.owner
    async with _admitted(admission, chat_id):
        rows = await Chat.raw(_OWNED_CHAT, chat_id, owner)
        if not rows:
            return None
        chat = rows[0]
        found = await Message.select(*_MESSAGE_COLUMNS).where(
            (Message.id == message_id) & (Message.chat == chat_id)
        )
        if not found:
            raise NotFound("message_id: no such message in this chat")
        given = _message(found[0])
        if given.role != "assistant" or given.parent is None:
            raise InvalidInput("message_id: not a reply; only an assistant message is regenerated")
        if given.status == "streaming":
            raise Busy("a reply is already being generated in this chat")
        question = await Message.select(*_MESSAGE_COLUMNS).where(Message.id == given.parent)
        reply = _streaming_reply(admission, chat, given.parent, stamp)
        inserted = await _insert_messages(reply)
        chats = await Chat.raw(_LEAD_TO_REPLY, stamp, admission.reply_id, chat_id)
        record = (await _chats(chats))[0]  # in the transaction, as for a new message
        question_record, reply_record = await _with_siblings(
            chat_id, [_message(question[0]), _message(inserted[0])]
        )
    return Exchange(chat=record, question=question_record, reply=reply_record, created=False)


def _streaming_reply(
    admission: Admission, chat: _Row, parent: UUID, stamp: datetime
) -> _NewMessage:
    """The admitted reply's row: empty, ``streaming``, in the chat's model if it is offered."""
    offered = chat["model"] in admission.offered_models
    return _NewMessage(
        id=admission.reply_id,
        chat=chat["id"],
        owner=admission.owner,
        parent=parent,
        role="assistant",
        content="",
        status="streaming",
        model=chat["model"] if offered else admission.default_model,
        created_at=stamp,
        task_id=admission.task_id,
        instance=admission.instance,
    )


class _NewMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message row to insert: every column of ``message`` that is written."""

    id: UUID
    chat: UUID
    owner: int
    parent: UUID | None
    role: str
    content: str
    status: str
    created_at: datetime
    model: str | None = None
    completed_at: datetime | None = None
    task_id: UUID | None = None
    instance: str | None = None
    reasoning: str = ""
    usage_estimated: bool = False


# Every send inserts two messages, makes the reply the chat's active leaf and later
# stores the reply's end: as constant SQL, without Piccolo's query builder, which costs
# more CPU than these statements (docs/performance.md, "Per-reply costs"). Each names
# every column it writes; the values bind as Piccolo's would (the same sqlite3 adapters).
_MESSAGE_SQL = _column_list(_MESSAGE_COLUMNS)
_NEW_MESSAGE_SQL, _NEW_MESSAGE_ROW = _columns_and_row(_NewMessage)
_LEAD_TO_REPLY = (
    "UPDATE chat SET updated_at = {}, active_leaf = {} WHERE id = {} "  # noqa: S608
    f"RETURNING {_CHAT_SQL}"
)
_END_REPLY = (
    "UPDATE message SET content = {}, reasoning = {}, status = {}, prompt_tokens = {}, "  # noqa: S608
    "completion_tokens = {}, usage_estimated = {}, finish_reason = {}, error_code = {}, "
    f"completed_at = {{}}, tool_calls = {{}} WHERE id = {{}} RETURNING {_MESSAGE_SQL}"
)
_TOUCH_CHAT = "UPDATE chat SET updated_at = {} WHERE id = {}"
_OWNED_CHAT = f"SELECT {_CHAT_SQL} FROM chat WHERE id = {{}} AND owner = {{}}"  # noqa: S608


async def _insert_messages(*messages: _NewMessage) -> list[_Row]:
    values = [value for message in messages for value in msgspec.structs.astuple(message)]
    return await Message.raw(
        f"INSERT INTO message ({_NEW_MESSAGE_SQL}) "  # noqa: S608 (column names and placeholders)
        f"VALUES {', '.join(_NEW_MESSAGE_ROW for _ in messages)} RETURNING {_MESSAGE_SQL}",
        *values,
    )


@contextlib.asynccontextmanager
async def _admitted(admission: Admission, chat_id: UUID | None) -> AsyncGenerator[None]:
    """A write transaction that admits one more reply of the owner's (``admission.admit``)
    against the replies streaming on every live instance, the user's row locked, and
    within the owner's and the chat's token budgets (``admission.quota``: the one place
    they are checked, before any upstream call)."""
    owner, live_after, per_user_cap = admission.owner, admission.live_after, admission.per_user_cap
    engine = current_engine()
    # On PostgreSQL a user's sends queue here rather than on their row's lock (KeyedTurns).
    one_per_user = (
        _ADMISSIONS.turn(owner, seconds=engine.write_seconds)
        if isinstance(engine, ServerPostgresEngine)
        else contextlib.nullcontext()
    )
    async with one_per_user, write_transaction(engine):
        await lock_user(engine, owner)
        running = await Message.raw(_RUNNING_FOR_OWNER, owner, live_after)
        admit([row["chat"] for row in running], chat_id, per_user_cap)
        if (quota := admission.quota) is not None:
            # The chat's sum reads every reply of the chat: only when there is a chat budget.
            counted = chat_id if quota.chat is not None else None
            quota.check(await spent(owner, quota.day[0], counted))
        yield


# Admission runs these for every message sent: as constant SQL they cost a few
# microseconds to prepare, where Piccolo's query builder takes a quarter of a
# millisecond for the join and subquery (tests/bench/admission.py).
#: The chats of the owner's replies streaming on a live instance: by the index
#: ``message (owner, status)``, a few rows, however many other users' replies stream.
_RUNNING_FOR_OWNER = (
    "SELECT chat FROM message WHERE owner = {} AND status = 'streaming' "
    "AND instance IN (SELECT id FROM instance WHERE heartbeat_at > {})"
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
    owner: int,
    status: MessageStatus,
    content: str,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    finish_reason: str | None,
    error_code: ErrorCode | None,
    tool_calls: list[dict[str, Any]] | None = None,
    reasoning: str = "",
    usage_estimated: bool = False,
) -> MessageRecord | None:
    """The one final write of a reply: its text, reasoning, status, usage and tool calls
    (``name``, ``arguments``, ``result`` each); the chat's ``updated_at``; its tokens in
    ``owner``'s day. It goes before other queued writes: an abort, and every follower,
    waits for it."""
    stamp = now()
    calls = msgspec.json.encode(tool_calls).decode() if tool_calls else None
    async with write_transaction(current_engine(), urgent=True):
        rows = await Message.raw(
            _END_REPLY,
            content,
            reasoning,
            status,
            prompt_tokens,
            completion_tokens,
            usage_estimated,
            finish_reason,
            error_code,
            stamp,
            calls,
            message_id,
        )
        await Chat.raw(_TOUCH_CHAT, stamp, chat_id)
        if not rows:
            return None
        # On the transaction's connection: read after the commit, it waited for a pooled
        # one behind a burst's reads, as long again as the write (docs/performance.md).
        (reply,) = await _with_siblings(chat_id, [_message(rows[0])])
        # Last: the user's row of the day is locked (on PostgreSQL) from here to the commit,
        # and the user's other replies that end meanwhile wait for it.
        await add_spent(owner, reply.created_at, (prompt_tokens or 0) + (completion_tokens or 0))
        return reply


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
    if not rows:
        return None
    message = _message(rows[0])
    return (await _with_siblings(message.chat, [message]))[0]


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


#: The root alone, as the JSON text a JSONB column takes (both drivers bind it as text).
_EMPTY_ROOT = msgspec.json.encode(empty_root()).decode()


async def create_tree(chat_id: UUID) -> None:
    """An empty tree (the root alone, version 0); nothing when the chat has one."""
    await ChatTree.raw(_INSERT_TREE, chat_id, _EMPTY_ROOT)


#: Constant SQL: every reply's prompt reads the tree (see ``_SIBLINGS``).
_TREE = "SELECT version, root FROM chat_tree WHERE chat = {}"


async def get_tree(chat_id: UUID) -> TreeRecord:
    """The chat's tree; a chat from before trees gets an empty one."""
    rows = await ChatTree.raw(_TREE, chat_id)
    if not rows:
        await create_tree(chat_id)
        rows = await ChatTree.raw(_TREE, chat_id)
    version, root = rows[0]["version"], rows[0]["root"]
    return TreeRecord(version=version, root=_json(root))


def _json(value: Any) -> Any:
    """A JSONB column's value: both drivers give its JSON text (or null)."""
    return msgspec.json.decode(value) if isinstance(value, str | bytes) else value


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
        if rows:
            await _estimate_usage([row["id"] for row in rows])
        await Instance.delete().where(gone_leases)
    return [InterruptedReply(**row) for row in rows]


#: The completion of replies whose process stopped before storing their end, estimated from
#: the text saved (``CHARS_PER_TOKEN``); their prompt was not kept, so it stays unknown.
_ESTIMATE_USAGE = (
    "UPDATE message SET usage_estimated = {}, completion_tokens = "  # noqa: S608 (constants only)
    f"(LENGTH(content) + LENGTH(reasoning) + {CHARS_PER_TOKEN - 1}) / {CHARS_PER_TOKEN} "
    "WHERE completion_tokens IS NULL AND id IN ({})"
)


async def _estimate_usage(message_ids: list[UUID]) -> None:
    marks = ", ".join("{}" for _ in message_ids)
    await Message.raw(_ESTIMATE_USAGE.replace("IN ({})", f"IN ({marks})"), True, *message_ids)
