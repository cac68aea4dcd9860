"""The tokens a user and a chat have spent, and the user's budget override: one statement.

Read in the transaction that admits a reply (``store._admitted``) and by ``GET /api/me``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast
from uuid import UUID

from chatsvc.quota_rules import Spent
from chatsvc.tables import Message

# Constant SQL, as the admission's other statements. The day's sum walks the owner's chats
# changed since the day started (`chat (owner, updated_at)`: a reply stored today moved
# its chat's `updated_at` to today), then their messages of the day (`message (chat,
# created_at)`); the chat's sum reads one chat's messages by the same index, only if the
# chat is the owner's.
_SPENT = """
SELECT
  (SELECT COUNT(*) FROM user_quota WHERE account = {}) AS overridden,
  (SELECT MAX(daily_token_budget) FROM user_quota WHERE account = {}) AS override,
  (SELECT COALESCE(SUM(COALESCE(m.prompt_tokens, 0) + COALESCE(m.completion_tokens, 0)), 0)
     FROM message m JOIN chat c ON c.id = m.chat
     WHERE c.owner = {} AND c.updated_at >= {} AND m.created_at >= {}
       AND m.role = 'assistant') AS today,
  (SELECT COALESCE(SUM(COALESCE(m.prompt_tokens, 0) + COALESCE(m.completion_tokens, 0)), 0)
     FROM message m JOIN chat c ON c.id = m.chat
     WHERE m.chat = {} AND c.owner = {} AND m.role = 'assistant') AS in_chat
"""


async def spent(owner: int, since: datetime, chat_id: UUID | None = None) -> Spent:
    """The owner's tokens in replies started since ``since``, the chat's (0 without one, or
    for another user's: its refusal is ``not_found``, as everywhere), and the owner's
    override of the daily budget."""
    raw = Message.raw(_SPENT, owner, owner, owner, since, since, chat_id, owner)
    # Piccolo types raw rows as unknown; this one is read field by field into `Spent`.
    row = cast("list[dict[str, Any]]", await raw)[0]
    return Spent(
        today=int(row["today"] or 0),
        in_chat=int(row["in_chat"] or 0),
        overridden=bool(row["overridden"]),
        override=None if row["override"] is None else int(row["override"]),
    )
