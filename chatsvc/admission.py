"""Who may start a reply: one per chat, and at most a cap per user, with the answers given.

The one place of the rule and its messages. It is checked twice with the same
words: by the registry against the replies running on this process (no await
between the check and the registration), and by the store in the transaction
that records the exchange, against the replies streaming on every live instance.
``Admission`` is what that transaction is given about the reply it admits.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from uuid import UUID

from msgspec import Struct

from chatsvc.errors import Busy, RateLimited
from chatsvc.quota_rules import QuotaRule


class Admission(Struct, frozen=True, kw_only=True):
    """A reply asking to be stored ``streaming``: whose, its ids, where it runs, and the
    rules it is stored under (the same for a sent message's reply and a regenerated one)."""

    owner: int
    task_id: UUID
    reply_id: UUID
    instance: str
    live_after: datetime  # the replies of instances whose lease is fresher count as running
    per_user_cap: int
    default_model: str  # the reply's model when the chat's is not offered
    offered_models: frozenset[str]
    #: The token budgets it starts under (``quota_rules``); None: none are checked.
    quota: QuotaRule | None = None


def admit(running_chats: Collection[UUID], chat_id: UUID | None, cap: int) -> None:
    """Refuse a reply in ``chat_id`` when the user's replies already run in ``running_chats``.

    ``Busy`` when one of them runs in that chat, ``RateLimited`` when there are ``cap``.
    """
    if chat_id is not None and chat_id in running_chats:
        raise Busy("a reply is already being generated in this chat")
    if len(running_chats) >= cap:
        raise RateLimited(f"at most {cap} replies may be generated at once; wait for one")
