"""The tokens a user and a chat have spent, and the user's budget override: one statement.

Read in the transaction that admits a reply (``store._admitted``) and by ``GET /api/me``;
a reply's tokens are added to its user's day as its end is stored (``add_spent``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

from chatsvc.quota_rules import Spent
from chatsvc.tables import DailySpend, Message

# Constant SQL, as the admission's other statements. The day's tokens are one row of
# `daily_spend` (each reply's added as it ends, `add_spent`); the chat's sum reads one chat's
# messages by the `message (chat, created_at)` index, only if the chat is the owner's.
_SPENT = """
SELECT
  (SELECT COUNT(*) FROM user_quota WHERE account = {}) AS overridden,
  (SELECT MAX(daily_token_budget) FROM user_quota WHERE account = {}) AS override,
  (SELECT tokens FROM daily_spend WHERE id = {}) AS today,
  (SELECT COALESCE(SUM(COALESCE(m.prompt_tokens, 0) + COALESCE(m.completion_tokens, 0)), 0)
     FROM message m JOIN chat c ON c.id = m.chat
     WHERE m.chat = {} AND c.owner = {} AND m.role = 'assistant') AS in_chat
"""
_ADD_SPENT = (
    "INSERT INTO daily_spend (id, account, day, tokens) VALUES ({}, {}, {}, {}) "
    "ON CONFLICT (id) DO UPDATE SET tokens = daily_spend.tokens + excluded.tokens"
)


async def spent(owner: int, since: datetime, chat_id: UUID | None = None) -> Spent:
    """The owner's tokens in replies started on the UTC day that begins at ``since``, the
    chat's (0 without one, or for another user's: its refusal is ``not_found``, as
    everywhere), and the owner's override of the daily budget."""
    raw = Message.raw(_SPENT, owner, owner, _day_id(owner, _day_of(since)), chat_id, owner)
    # Piccolo types raw rows as unknown; this one is read field by field into `Spent`.
    row = cast("list[dict[str, Any]]", await raw)[0]
    return Spent(
        today=int(row["today"] or 0),
        in_chat=int(row["in_chat"] or 0),
        overridden=bool(row["overridden"]),
        override=None if row["override"] is None else int(row["override"]),
    )


async def add_spent(owner: int, started_at: datetime, tokens: int) -> None:
    """Count a reply's tokens in its owner's day, the UTC day it started (as the budget and
    the usage views count it); in the caller's transaction, the one that stores its end."""
    if tokens > 0:
        day = _day_of(started_at)
        await DailySpend.raw(_ADD_SPENT, _day_id(owner, day), owner, day, tokens)


def _day_of(moment: datetime) -> str:
    """The UTC day ``moment`` is in, ``2026-12-07``: one rule for the row read and the row
    written."""
    return moment.astimezone(UTC).date().isoformat()


def _day_id(owner: int, day: str) -> str:
    """The row of ``owner``'s day: ``12/2026-12-07``, as the admin's daily usage names it."""
    return f"{owner}/{day}"
