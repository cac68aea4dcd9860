"""``/api/chats`` and ``/api/users/{user_id}/chats``: thin handlers over :class:`Chats`."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import Parameter

from chatsvc.api.security import AuthUser
from chatsvc.chats import Chats
from chatsvc.errors import NotFound
from chatsvc.wire import (
    Chat,
    ChatCreate,
    ChatPage,
    ChatUpdate,
    ChatWithMessages,
    MessagePage,
)

AuthRequest = Request[AuthUser, Any, Any]
ChatId = Annotated[UUID, Parameter(description="The chat's UUID.")]
Limit = Annotated[int, Parameter(ge=1, le=200, description="Items per page, 1-200.")]
CursorParam = Annotated[
    str | None, Parameter(max_length=200, description="`next_cursor` of the previous page.")
]
Query = Annotated[
    str | None,
    Parameter(min_length=1, max_length=200, description="Text searched in titles and messages."),
]


class ChatController(Controller):
    path = "/api/chats"
    tags = ["chats"]  # noqa: RUF012 (Litestar reads it as a class attribute)

    @post("/", status_code=201)
    async def create_chat(self, request: AuthRequest, data: ChatCreate, chats: Chats) -> Chat:
        """Create a chat."""
        return await chats.create(request.user.id, data)

    @get("/")
    async def list_chats(
        self,
        request: AuthRequest,
        chats: Chats,
        limit: Limit = 50,
        cursor: CursorParam = None,
        q: Query = None,
    ) -> ChatPage:
        """Your chats, newest `updated_at` first; `q` searches titles and message text."""
        return await chats.list(request.user.id, limit=limit, cursor=cursor, q=q)

    @get("/{chat_id:str}")
    async def get_chat(
        self, request: AuthRequest, chat_id: ChatId, chats: Chats
    ) -> ChatWithMessages:
        """A chat with all its messages, oldest first."""
        return await chats.get_with_messages(request.user.id, chat_id)

    @get("/{chat_id:str}/messages")
    async def list_messages(
        self,
        request: AuthRequest,
        chat_id: ChatId,
        chats: Chats,
        limit: Limit = 100,
        before: CursorParam = None,
    ) -> MessagePage:
        """The newest messages (oldest first in the page); `before` pages back in time."""
        return await chats.messages(request.user.id, chat_id, limit=limit, before=before)

    @patch("/{chat_id:str}")
    async def update_chat(
        self, request: AuthRequest, chat_id: ChatId, data: ChatUpdate, chats: Chats
    ) -> Chat:
        """Change the title, system prompt or model; fields left out stay as they are."""
        return await chats.update(request.user.id, chat_id, data)

    @delete("/{chat_id:str}", status_code=204)
    async def delete_chat(self, request: AuthRequest, chat_id: ChatId, chats: Chats) -> None:
        """Delete a chat and its messages."""
        await chats.delete(request.user.id, chat_id)


@get("/api/users/{user_id:str}/chats", tags=["chats"])
async def list_user_chats(
    request: AuthRequest,
    user_id: Annotated[int, Parameter(ge=1, le=2**31 - 1, description="The user's id.")],
    chats: Chats,
    limit: Limit = 50,
    cursor: CursorParam = None,
    q: Query = None,
) -> ChatPage:
    """The same list as `GET /api/chats`; another user's id is `404`."""
    if user_id != request.user.id:
        raise NotFound("user not found")
    return await chats.list(user_id, limit=limit, cursor=cursor, q=q)
