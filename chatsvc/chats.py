"""Chat use cases shared by the REST API, the WebSocket and the SSE transport."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Protocol
from uuid import UUID

import msgspec
from msgspec import UNSET

from chatsvc import feedback_store, store
from chatsvc.errors import InvalidInput, ModelNotOffered, NotFound, SettingRefused
from chatsvc.events import ChatEvents, event_of
from chatsvc.mappers import chat_from_record, message_from_record
from chatsvc.records import Sampling
from chatsvc.telemetry import AbortedBy
from chatsvc.wire import (
    DEFAULT_TITLE,
    Chat,
    ChatCreate,
    ChatCreated,
    ChatPage,
    ChatUpdate,
    ChatUpdated,
    ChatWithMessages,
    MessagePage,
    ModelInfo,
    ModelList,
)

_Keyset = tuple[datetime, UUID]
_cursor_decoder = msgspec.json.Decoder(tuple[datetime, UUID])
#: The title of a chat created without one.


def encode_cursor(keyset: _Keyset) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(keyset)).decode().rstrip("=")


def decode_cursor(cursor: str, field: str) -> _Keyset:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return _cursor_decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise InvalidInput(f"{field}: not a cursor returned by this API") from exc


def sampling_of(data: ChatCreate) -> Sampling:
    """The sampling settings a new chat was given."""
    return Sampling(temperature=data.temperature, top_p=data.top_p, max_tokens=data.max_tokens)


class ReplyStopper(Protocol):
    """What deleting a chat needs of the generation registry (``Generations`` has it)."""

    async def stop(self, owner: int, chat_id: UUID, *, by: AbortedBy) -> object:
        """Abort the reply running in the chat, if any, and return once it is stored."""
        ...


class Chats:
    """Everything a user can do to their chats; other users' chats are :class:`NotFound`."""

    def __init__(
        self,
        replies: ReplyStopper | None = None,
        *,
        models: tuple[str, ...],
        max_chats: int,
        max_tokens_limit: int,
        events: ChatEvents | None = None,
    ) -> None:
        """``replies``: stops a chat's reply before the chat is deleted;
        ``models``: what a chat may choose (``Settings.model_choices``), the default first;
        ``max_chats``: how many chats a user may keep; ``max_tokens_limit``: the most
        ``max_tokens`` a chat may set (``LLM_MAX_TOKENS_LIMIT``); ``events``: where a
        change of the chat (its settings, its active branch) is told (``chat_updated``)."""
        self._replies = replies
        self._models = models
        self._max_chats = max_chats
        self._max_tokens_limit = max_tokens_limit
        self._events = events

    def models(self) -> ModelList:
        return ModelList(default=self._models[0], models=[ModelInfo(id=m) for m in self._models])

    def check_model(self, model: str | None) -> None:
        """Only the operator's models reach the upstream, billed to the operator's key."""
        if model is not None and model not in self._models:
            raise ModelNotOffered(
                f"model: {model!r} is not offered here; choose one of GET /api/models, "
                "or null for the default"
            )

    def check_max_tokens(self, max_tokens: int | None) -> None:
        """A reply's length, and so its cost, is the operator's to bound (issue 16)."""
        if max_tokens is not None and max_tokens > self._max_tokens_limit:
            raise SettingRefused(
                f"max_tokens: {max_tokens} is more than this server allows "
                f"({self._max_tokens_limit}, LLM_MAX_TOKENS_LIMIT); ask for fewer, or null "
                "for the default"
            )

    def check_settings(self, data: ChatCreate | ChatUpdate) -> None:
        """What a chat may set beyond the wire's bounds: an offered model, a length the
        server allows. Checked before anything is stored."""
        if data.model is not UNSET:
            self.check_model(data.model)
        if data.max_tokens is not UNSET:
            self.check_max_tokens(data.max_tokens)

    async def create(self, owner: int, data: ChatCreate) -> Chat:
        """A chat left with the default title is the model's to name after its first reply."""
        self.check_settings(data)
        chat = await store.create_chat(
            owner,
            title=data.title,
            system_prompt=data.system_prompt,
            model=data.model,
            sampling=sampling_of(data),
            max_chats=self._max_chats,
            title_source="placeholder" if data.title == DEFAULT_TITLE else "user",
        )
        created = chat_from_record(chat)
        if self._events is not None:  # the owner's other tabs list it
            self._events.publish_to_owner(owner, created.id, event_of(ChatCreated(chat=created)))
        return created

    async def list(
        self, owner: int, *, limit: int, cursor: str | None = None, q: str | None = None
    ) -> ChatPage:
        after = decode_cursor(cursor, "cursor") if cursor else None
        # One row more than asked tells whether another page exists.
        chats = await store.list_chats(owner, limit=limit + 1, after=after, search=q)
        page, more = chats[:limit], len(chats) > limit
        next_cursor = encode_cursor((page[-1].updated_at, page[-1].id)) if more else None
        return ChatPage(items=[chat_from_record(c) for c in page], next_cursor=next_cursor)

    async def get(self, owner: int, chat_id: UUID) -> Chat:
        chat = await store.get_chat(owner, chat_id)
        if chat is None:
            raise NotFound("chat not found")
        return chat_from_record(chat)

    async def get_with_messages(self, owner: int, chat_id: UUID, *, limit: int) -> ChatWithMessages:
        """The chat and the newest page of its active branch (never the whole of a long chat)."""
        chat = await self.get(owner, chat_id)
        page = await self._branch_page(chat_id, limit=limit, before=None)
        return ChatWithMessages(
            **msgspec.structs.asdict(chat),
            messages=page.items,
            messages_next_cursor=page.next_cursor,
        )

    async def messages(
        self,
        owner: int,
        chat_id: UUID,
        *,
        limit: int,
        before: str | None = None,
        whole_tree: bool = False,
    ) -> MessagePage:
        """A page of the active branch, or with ``whole_tree`` of every message."""
        await self.get(owner, chat_id)
        if whole_tree:
            return await self._tree_page(chat_id, limit=limit, before=before)
        return await self._branch_page(chat_id, limit=limit, before=before)

    async def _branch_page(self, chat_id: UUID, *, limit: int, before: str | None) -> MessagePage:
        """Up the active branch: the cursor names the oldest message shown, and the next
        page is what is above it (its ancestors never change)."""
        keyset = decode_cursor(before, "before") if before else None
        start = keyset[1] if keyset is not None else None
        messages = await store.branch_messages(chat_id, limit=limit + 1, before=start)
        more = len(messages) > limit
        page = await feedback_store.with_feedback(messages[1:] if more else messages)
        next_cursor = encode_cursor((page[0].created_at, page[0].id)) if more else None
        return MessagePage(items=[message_from_record(m) for m in page], next_cursor=next_cursor)

    async def _tree_page(self, chat_id: UUID, *, limit: int, before: str | None) -> MessagePage:
        keyset = decode_cursor(before, "before") if before else None
        messages = await store.list_messages(chat_id, limit=limit + 1, before=keyset)
        more = len(messages) > limit
        # oldest first: drop the extra, oldest one
        page = await feedback_store.with_feedback(messages[1:] if more else messages)
        next_cursor = encode_cursor((page[0].created_at, page[0].id)) if more else None
        return MessagePage(items=[message_from_record(m) for m in page], next_cursor=next_cursor)

    async def update(self, owner: int, chat_id: UUID, data: ChatUpdate) -> Chat:
        self.check_settings(data)
        values = {
            field: value
            for field in data.__struct_fields__
            if (value := getattr(data, field)) is not UNSET
        }
        if "title" in values:  # the user's title: the server never renames the chat again
            values["title_source"] = "user"
        record = await store.update_chat(owner, chat_id, values)
        if record is None:
            raise NotFound("chat not found")
        chat = chat_from_record(record)
        self._announce(owner, chat)
        return chat

    async def set_active(self, owner: int, chat_id: UUID, message_id: UUID) -> Chat:
        """Make the newest branch under ``message_id`` the active one; the chat's
        subscribers and its owner's sockets get ``chat_updated``."""
        leaf = await store.descendant_leaf(owner, chat_id, message_id)
        if leaf is None:
            await self.get(owner, chat_id)  # an unknown chat says so
            raise NotFound("message_id: no such message in this chat")
        record = await store.set_active_leaf(owner, chat_id, leaf)
        if record is None:
            raise NotFound("chat not found")
        chat = chat_from_record(record)
        self._announce(owner, chat)
        return chat

    def _announce(self, owner: int, chat: Chat) -> None:
        """``chat_updated`` to the chat's subscribers and every socket of its owner."""
        if self._events is not None:
            self._events.publish_to_owner(owner, chat.id, event_of(ChatUpdated(chat=chat)))

    async def delete(self, owner: int, chat_id: UUID) -> None:
        """Delete a chat and its messages; a reply still streaming there is aborted first."""
        await self.get(owner, chat_id)
        if self._replies is not None:
            await self._replies.stop(owner, chat_id, by="delete")
        if not await store.delete_chat(owner, chat_id):
            raise NotFound("chat not found")
