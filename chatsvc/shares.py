"""Share links (issue 17, point 3): read-only snapshots of a chat, readable without login.

``POST /api/chats/{id}/share`` copies the chat's title and its active branch as it
is at that moment (role, text, model and time of each finished message) into the
link's row: later edits, regenerations or branch switches never change what the
link shows. A reply still streaming is left out (it is not finished: share again
once it is), as are messages with no text (a reply that failed before writing).

The token is ``shr_`` and 43 characters of ``secrets.token_urlsafe(32)`` (256
random bits), shown once; the database keeps its SHA-256 and its first
characters, as for API keys (:mod:`chatsvc.keys`). Guessing a token is hopeless,
so the public route needs no limit of its own beyond the per-address one of
every route. A revoked link, one of a deleted chat (the row goes with the chat)
and an unknown token all answer the same 404.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from uuid import UUID

import msgspec

from chatsvc import share_store, store
from chatsvc.audit import audit
from chatsvc.bearer import new_secret, secret_hash
from chatsvc.errors import NotFound, TooLarge
from chatsvc.records import MessageRecord, ShareRecord
from chatsvc.wire import NewShare, Share, SharedChat, SharedMessage, ShareList

#: What every token starts with: tells it apart (and lets the logs redact it anywhere).
TOKEN_PREFIX = "shr_"
#: Characters of the token shown in lists: the prefix and 8 of the secret (48 bits of 256).
SHOWN = len(TOKEN_PREFIX) + 8
#: The length of every token we make: a path segment of any other length is none of ours.
TOKEN_LENGTH = len(TOKEN_PREFIX) + 43
#: Unrevoked links one chat may have (docs/protocol.md section 3.4).
MAX_SHARES_PER_CHAT = 50
#: The most messages a snapshot copies (the active branch, oldest first).
MAX_SHARED_MESSAGES = 2_000
#: Where the read-only page of a token is, on this server.
PAGE_PATH = "/share/"

_encode_messages = msgspec.json.Encoder().encode
_decode_messages = msgspec.json.Decoder(list[SharedMessage]).decode


def _is_token(token: str) -> bool:
    return len(token) == TOKEN_LENGTH and token.startswith(TOKEN_PREFIX)


class Shares:
    """The share link use cases of the REST API, the public page and the admin."""

    def __init__(self, *, clock: Callable[[], datetime]) -> None:
        self._clock = clock

    async def create(self, owner: int, chat_id: UUID) -> NewShare:
        """Snapshot the owner's chat now; :class:`NotFound` for another user's chat."""
        chat = await store.get_chat(owner, chat_id)
        if chat is None:
            raise NotFound("chat not found")
        branch = await store.branch_messages(chat_id, limit=MAX_SHARED_MESSAGES + 1)
        if len(branch) > MAX_SHARED_MESSAGES:
            raise TooLarge(
                f"the conversation has more than {MAX_SHARED_MESSAGES} messages, too many to share"
            )
        messages = [_shared(m) for m in branch if m.status != "streaming" and m.content]
        token = new_secret(TOKEN_PREFIX)
        record = await share_store.create_share(
            owner,
            chat_id,
            prefix=token[:SHOWN],
            token_hash=secret_hash(token),
            title=chat.title,
            messages=_encode_messages(messages).decode(),
            created_at=self._clock(),
            max_shares=MAX_SHARES_PER_CHAT,
        )
        audit(
            "share_created",
            "share link created",
            user_id=owner,
            chat_id=str(chat_id),
            share_id=str(record.id),
            prefix=record.prefix,
        )
        return NewShare(**msgspec.structs.asdict(_wire(record)), token=token, url=PAGE_PATH + token)

    async def list(self, owner: int, chat_id: UUID | None = None) -> ShareList:
        """The owner's unrevoked links (of one chat: :class:`NotFound` when not theirs)."""
        if chat_id is not None and await store.get_chat(owner, chat_id) is None:
            raise NotFound("chat not found")
        return ShareList(items=[_wire(r) for r in await share_store.list_shares(owner, chat_id)])

    async def revoke(self, share_id: UUID, *, owner: int | None, by: str) -> None:
        """Revoke the link (``owner``'s own, or any with ``None``: the admin);
        :class:`NotFound` when there is none, another user's, or revoked already."""
        user_id = await share_store.revoke_share(share_id, self._clock(), owner=owner)
        if user_id is None:
            raise NotFound(f"no share link {share_id}")
        audit("share_revoked", "share link revoked", user_id=user_id, share_id=str(share_id), by=by)

    async def shared(self, token: str) -> SharedChat:
        """What the link shows; the same :class:`NotFound` for every link that shows nothing."""
        found = await share_store.snapshot(secret_hash(token)) if _is_token(token) else None
        if found is None:
            raise NotFound(SHARE_NOT_FOUND)
        return SharedChat(
            title=found.title,
            shared_at=found.created_at,
            messages=_decode_messages(found.messages),
        )


#: The one answer of every link that shows nothing: unknown, revoked, or its chat deleted.
SHARE_NOT_FOUND = "no such shared conversation (the link is wrong, revoked or deleted)"


def _shared(message: MessageRecord) -> SharedMessage:
    return SharedMessage(
        role=message.role,
        content=message.content,
        model=message.model,
        created_at=message.created_at,
    )


def _wire(record: ShareRecord) -> Share:
    return Share(
        id=record.id,
        chat_id=record.chat,
        prefix=record.prefix,
        title=record.title,
        created_at=record.created_at,
    )
