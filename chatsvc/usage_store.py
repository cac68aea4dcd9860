"""The usage queries (issue 16): tokens of a user's replies that ended, summed by the
database, in all and by UTC day, chat or model; and whether a user may read others'.

A reply counts from the day it started (``message.created_at``, UTC). Replies still
streaming are not counted yet: their figures come with their end.
"""

# Piccolo's raw queries answer rows typed as unknown dicts; they become records here.
# pyright: reportUnknownMemberType=false, reportUnknownVariableType=false
# pyright: reportUnknownArgumentType=false

from __future__ import annotations

from datetime import datetime
from typing import Any

from msgspec import Struct
from piccolo.apps.user.tables import BaseUser

from chatsvc.database import current_engine
from chatsvc.tables import Message
from chatsvc.wire import UsageGrouping


class UsageRow(Struct, frozen=True, kw_only=True):
    """The sums of one group (``key`` ``None``: of every reply counted)."""

    key: str | None
    title: str | None
    prompt_tokens: int
    completion_tokens: int
    replies: int
    estimated_replies: int


#: The UTC day a reply started, as ``YYYY-MM-DD``: SQLite keeps Piccolo's timestamps as UTC
#: text (``2026-12-06 17:41:07.123456+00:00``), PostgreSQL as ``timestamptz``.
_DAY = {
    "postgres": "to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "sqlite": "substr(m.created_at, 1, 10)",
}
_TOTAL = "COALESCE(SUM(m.prompt_tokens), 0) + COALESCE(SUM(m.completion_tokens), 0)"
#: One query for every grouping: the chat's index on owner finds the user's chats, the
#: message index on (chat, created_at) their replies in the range; the sums are the database's.
_SUMS = (
    "SELECT {key} AS key, {title} AS title, "
    "COALESCE(SUM(m.prompt_tokens), 0) AS prompt_tokens, "
    "COALESCE(SUM(m.completion_tokens), 0) AS completion_tokens, "
    "COUNT(*) AS replies, COUNT(CASE WHEN m.usage_estimated THEN 1 END) AS estimated_replies "
    "FROM message m JOIN chat c ON c.id = m.chat "
    "WHERE c.owner = {{}} AND m.role = 'assistant' AND m.status <> 'streaming' "
    "AND m.created_at >= {{}} AND m.created_at < {{}}"
)


def _grouped(group_by: UsageGrouping, engine: str) -> str:
    if group_by == "day":
        day = _DAY[engine]
        query = _SUMS.format(key=day, title="NULL")
        return f"{query} GROUP BY {day} ORDER BY {day} LIMIT {{}}"
    if group_by == "chat":
        query = _SUMS.format(key="m.chat", title="c.title")
        return f"{query} GROUP BY m.chat, c.title ORDER BY {_TOTAL} DESC, m.chat LIMIT {{}}"
    model = "COALESCE(m.model, '')"
    query = _SUMS.format(key=model, title="NULL")
    return f"{query} GROUP BY {model} ORDER BY {_TOTAL} DESC, {model} LIMIT {{}}"


async def usage_of(
    owner: int, start: datetime, end: datetime, group_by: UsageGrouping, limit: int
) -> tuple[UsageRow, list[UsageRow]]:
    """The sums of ``owner``'s replies that started in ``[start, end)``: in all, and of
    at most ``limit`` groups (days oldest first; chats and models largest first)."""
    engine = "postgres" if current_engine().engine_type == "postgres" else "sqlite"
    totals = await Message.raw(_SUMS.format(key="NULL", title="NULL"), owner, start, end)
    groups = await Message.raw(_grouped(group_by, engine), owner, start, end, limit)
    return _row(totals[0]), [_row(row) for row in groups]


def _row(row: dict[str, Any]) -> UsageRow:
    key = row["key"]
    return UsageRow(
        key=None if key is None else str(key),
        title=row["title"],
        prompt_tokens=int(row["prompt_tokens"]),
        completion_tokens=int(row["completion_tokens"]),
        replies=int(row["replies"]),
        estimated_replies=int(row["estimated_replies"]),
    )


async def superuser(user_id: int) -> bool | None:
    """Whether the user is a superuser; ``None``: no such user."""
    rows = await BaseUser.select(BaseUser.superuser).where(BaseUser.id == user_id)
    return bool(rows[0]["superuser"]) if rows else None
