"""The search queries (issue 17): a user's chat titles and messages that match, ranked.

PostgreSQL reads the generated ``search`` columns (``tsvector``, config ``simple``) through
their GIN indexes, ranks with ``ts_rank`` and marks snippets with ``ts_headline``; SQLite
reads the FTS5 tables ``chat_search`` and ``message_search``, ranks with ``bm25`` (negated:
higher is better on both) and marks with ``snippet``/``highlight``. Both are kept in step
by the database (migration ``2026-12-06T20:30:00``). Every hit is joined to its chat and
filtered on the chat's owner: another user's text is never read out. Snippets are made for
the page's hits only, after ranking.
"""

# Piccolo's raw queries answer rows typed as unknown dicts; they become records here.
# pyright: reportUnknownMemberType=false, reportUnknownVariableType=false
# pyright: reportUnknownArgumentType=false

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import anyio
import asyncpg
from msgspec import Struct

from chatsvc.database import current_engine
from chatsvc.errors import Overloaded
from chatsvc.tables import Message
from chatsvc.wire import MessageRole


class HitRow(Struct, frozen=True, kw_only=True):
    """One hit as ranked: ``message_id`` ``None`` for a title; ``snippet`` still marked."""

    chat_id: UUID
    chat_title: str
    message_id: UUID | None
    hit_id: UUID
    role: MessageRole | None
    created_at: datetime
    snippet: str
    score: float


#: Keyset filter on (score descending, id ascending): the hits strictly after a page's last.
_AFTER = "WHERE score < {} OR (score = {} AND hit_id > {})"

#: The tsquery is written out at each use, not read from a CTE: PostgreSQL then estimates
#: how many rows its words match (the GIN index's statistics) and picks the plan, the
#: user's chats' messages for a word in most of them, the GIN index for a rarer one.
_POSTGRES = """
WITH hits AS (
    SELECT c.id AS chat_id, NULL::uuid AS message_id, c.id AS hit_id,
           ts_rank(c.search, websearch_to_tsquery('simple', {{}}), 1)::float8 AS score
    FROM chat c WHERE c.owner = {{}} AND c.search @@ websearch_to_tsquery('simple', {{}})
    UNION ALL
    SELECT m.chat, m.id, m.id, ts_rank(m.search, websearch_to_tsquery('simple', {{}}), 1)::float8
    FROM message m JOIN chat c ON c.id = m.chat
    WHERE c.owner = {{}} AND m.search @@ websearch_to_tsquery('simple', {{}})
),
page AS (SELECT * FROM hits {after} ORDER BY score DESC, hit_id LIMIT {{}})
SELECT p.chat_id, p.message_id, p.hit_id, p.score, c.title AS chat_title, m.role,
       COALESCE(m.created_at, c.created_at) AS created_at,
       CASE WHEN m.id IS NULL OR length(m.content) <= {short}
            THEN ts_headline('simple', COALESCE(m.content, c.title),
                             websearch_to_tsquery('simple', {{}}), {{}})
            ELSE ts_headline('simple', m.content, websearch_to_tsquery('simple', {{}}), {{}})
       END AS snippet
FROM page p JOIN chat c ON c.id = p.chat_id LEFT JOIN message m ON m.id = p.message_id
ORDER BY p.score DESC, p.hit_id
"""

_SQLITE = """
WITH hits AS (
    SELECT c.id AS chat_id, NULL AS message_id, c.id AS hit_id, -bm25(chat_search) AS score
    FROM chat_search JOIN chat c ON c.rowid = chat_search.rowid
    WHERE chat_search MATCH {{}} AND c.owner = {{}}
    UNION ALL
    SELECT m.chat, m.id, m.id, -bm25(message_search)
    FROM message_search JOIN message m ON m.rowid = message_search.rowid
    JOIN chat c ON c.id = m.chat
    WHERE message_search MATCH {{}} AND c.owner = {{}}
)
SELECT h.chat_id, h.message_id, h.hit_id, h.score, c.title AS chat_title, m.role,
       COALESCE(m.created_at, c.created_at) AS created_at
FROM (SELECT * FROM hits {after} ORDER BY score DESC, hit_id LIMIT {{}}) h
JOIN chat c ON c.id = h.chat_id LEFT JOIN message m ON m.id = h.message_id
ORDER BY h.score DESC, h.hit_id
"""
#: For this transaction only (docs/performance.md, "Search"): plan each run with its words
#: (how common they are decides the plan; a generic plan, which asyncpg's prepared
#: statements get from the sixth run, took 5-10 times longer), and price random reads as
#: SSDs and cached data cost (with PostgreSQL's 4 a common word scanned every user's rows).
#: A search ends on the server after ``SEARCH_SECONDS`` (its transaction is shielded from
#: cancellation: a cancelled Piccolo transaction leaks its pool connection).
SEARCH_SECONDS = 5.0
_PLANNER = (
    "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), "
    "set_config('random_page_cost', '1.1', true), "
    f"set_config('statement_timeout', '{round(SEARCH_SECONDS * 1000)}', true)"
)
#: SQLite's snippets, for the page's hits only: FTS5's auxiliary functions need the MATCH.
#: ``CROSS JOIN`` keeps SQLite's join order: the page's rows first, each looked up in the
#: index by rowid, not every row the words match.
_SQLITE_MESSAGE_SNIPPETS = (
    "SELECT m.id AS id, snippet(message_search, 0, {{}}, {{}}, '…', 32) AS snippet "
    "FROM message m CROSS JOIN message_search ON message_search.rowid = m.rowid "
    "WHERE message_search MATCH {{}} AND m.id IN ({ids})"
)
_SQLITE_TITLE_SNIPPETS = (
    "SELECT c.id AS id, highlight(chat_search, 0, {{}}, {{}}) AS snippet "
    "FROM chat c CROSS JOIN chat_search ON chat_search.rowid = c.rowid "
    "WHERE chat_search MATCH {{}} AND c.id IN ({ids})"
)
#: ``ts_headline`` options: a long message shows up to two fragments around the matches, a
#: title or a message of up to ``SHORT`` characters all of itself. The markers are bound
#: parameters, quoted for the options' syntax.
SHORT = 240
_HEADLINE = (
    'StartSel="{}", StopSel="{}", MaxWords=32, MinWords=12, MaxFragments=2, FragmentDelimiter=" … "'
)
_TITLE_HEADLINE = 'StartSel="{}", StopSel="{}", HighlightAll=true'


async def search(
    owner: int,
    *,
    websearch: str,
    fts5: str,
    after: tuple[float, UUID] | None,
    limit: int,
    markers: tuple[str, str],
) -> list[HitRow]:
    """At most ``limit`` hits of ``owner``'s, best first (ties by id), after the keyset."""
    start, stop = markers
    keyset: tuple[Any, ...] = (after[0], after[0], after[1]) if after else ()
    engine = current_engine()
    if engine.engine_type == "postgres":
        sql = _POSTGRES.format(after=_AFTER if after else "", short=SHORT)
        q = websearch
        try:
            with anyio.fail_after(2 * SEARCH_SECONDS, shield=True):
                async with engine.transaction():  # pyright: ignore[reportUnknownMemberType] (Piccolo's *args)
                    await Message.raw(_PLANNER)
                    rows = await Message.raw(
                        sql,
                        q,
                        owner,
                        q,
                        q,
                        owner,
                        q,
                        *keyset,
                        limit,
                        q,
                        _TITLE_HEADLINE.format(start, stop),
                        q,
                        _HEADLINE.format(start, stop),
                    )
        except (TimeoutError, asyncpg.QueryCanceledError) as exc:
            raise Overloaded("the search took too long; try fewer or rarer words") from exc
        return [_hit(row, row["snippet"]) for row in rows]
    sql = _SQLITE.format(after=_AFTER if after else "")
    keyset = (after[0], after[0], str(after[1])) if after else ()
    rows = await Message.raw(sql, fts5, owner, fts5, owner, *keyset, limit)
    snippets: dict[str, str] = {}
    for template, kind in ((_SQLITE_MESSAGE_SNIPPETS, True), (_SQLITE_TITLE_SNIPPETS, False)):
        ids = [str(row["hit_id"]) for row in rows if (row["message_id"] is not None) == kind]
        if ids:
            sql = template.format(ids=", ".join("{}" for _ in ids))
            for found in await Message.raw(sql, start, stop, fts5, *ids):
                snippets[str(found["id"])] = found["snippet"]
    return [_hit(row, snippets.get(str(row["hit_id"]), "")) for row in rows]


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _hit(row: dict[str, Any], snippet: str) -> HitRow:
    created_at = row["created_at"]
    if not isinstance(created_at, datetime):  # SQLite gives computed columns as text
        created_at = datetime.fromisoformat(str(created_at))
    message_id = row["message_id"]
    return HitRow(
        chat_id=_uuid(row["chat_id"]),
        chat_title=row["chat_title"],
        message_id=None if message_id is None else _uuid(message_id),
        hit_id=_uuid(row["hit_id"]),
        role=row["role"],
        created_at=created_at,
        snippet=snippet,
        score=float(row["score"]),
    )
