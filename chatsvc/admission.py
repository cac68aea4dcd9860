"""Who may start a reply: one per chat, and at most a cap per user, with the answers given.

The one place of the rule and its messages. It is checked twice with the same
words: by the registry against the replies running on this process (no await
between the check and the registration), and by the store in the transaction
that records the exchange, against the replies streaming on every live instance.
"""

from __future__ import annotations

from collections.abc import Collection
from uuid import UUID

from chatsvc.errors import Busy, RateLimited


def admit(running_chats: Collection[UUID], chat_id: UUID | None, cap: int) -> None:
    """Refuse a reply in ``chat_id`` when the user's replies already run in ``running_chats``.

    ``Busy`` when one of them runs in that chat, ``RateLimited`` when there are ``cap``.
    """
    if chat_id is not None and chat_id in running_chats:
        raise Busy("a reply is already being generated in this chat")
    if len(running_chats) >= cap:
        raise RateLimited(f"at most {cap} replies may be generated at once; wait for one")
