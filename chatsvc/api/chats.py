"""``/api/chats`` and ``/api/users/{user_id}/chats``: thin handlers over :class:`Chats`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any
from uuid import UUID

import anyio
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.enums import MediaType
from litestar.exceptions import ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from chatsvc.api.openapi import PROTECTED, errors
from chatsvc.api.problems import invalid_patch
from chatsvc.api.security import AuthUser
from chatsvc.chats import Chats, sampling_of
from chatsvc.errors import InternalError, NotFound, NotRunning
from chatsvc.events import ChatEvents, Event, Subscriber
from chatsvc.generation import Generation, Generations, Launcher, NewChat
from chatsvc.settings import Settings
from chatsvc.trees import Trees
from chatsvc.wire import (
    DEFAULT_TITLE,
    NO_NUL,
    AbortResult,
    ActiveBranch,
    Chat,
    ChatCreate,
    ChatPage,
    ChatReply,
    ChatUpdate,
    ChatWithMessages,
    Message,
    MessageCreate,
    MessagePage,
    MessageReply,
    ModelList,
    Tree,
    TreePatch,
)

_MODEL_NOT_OFFERED = (
    "`model` is not one of `GET /api/models`, or `max_tokens` is over the server's "
    "`LLM_MAX_TOKENS_LIMIT` (`invalid_message`); nothing was stored."
)

#: Events an SSE client may fall behind by before its stream is ended (the reply goes on);
#: their bytes are bounded by `WS_OUTBOX_BYTES`.
SSE_BUFFER = 4096
#: Bytes of a tree patch request (each op's value is bounded by `TREE_OP_MAX_BYTES`).
TREE_PATCH_MAX_BYTES = 512_000

AuthRequest = Request[AuthUser, Any, Any]
ChatId = Annotated[UUID, PathParameter(description="The chat's UUID.")]
MessageId = Annotated[UUID, PathParameter(description="The message's UUID.")]
Limit = Annotated[int, QueryParameter(ge=1, le=200, description="Items per page, 1-200.")]
CursorParam = Annotated[
    str | None, QueryParameter(max_length=200, description="`next_cursor` of the previous page.")
]
Query = Annotated[
    str | None,
    QueryParameter(
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="Text searched in titles and messages.",
    ),
]


class ChatController(Controller):
    path = "/api/chats"
    tags = ["chats"]  # noqa: RUF012 (Litestar reads it as a class attribute)

    @post(
        "/",
        operation_id="createChat",
        summary="Create a chat",
        status_code=201,
        # As for sending a message: the handler says event-stream (Litestar lets it override
        # a streamed response's own), the JSON answers name their media type.
        media_type="text/event-stream",
        responses={
            201: ResponseSpec(
                data_container=Chat,
                media_type=MediaType.JSON,
                description="The new chat (no `content`).",
            ),
            200: ResponseSpec(
                data_container=ChatReply,
                media_type=MediaType.JSON,
                description="With `content`: the chat and the finished reply, as sending a "
                "message answers; with `Accept: text/event-stream`, the reply's events as "
                "Server-Sent Events (`chat_created` first).",
            ),
            **errors(
                *PROTECTED,
                400,
                409,
                413,
                415,
                422,
                502,
                504,
                meaning={
                    409: "You have `MAX_CHATS_PER_USER` chats already (`limit_reached`).",
                    413: "`content` over `MAX_MESSAGE_CHARS`, or longer than the model's context "
                    "takes (`too_large`).",
                    422: _MODEL_NOT_OFFERED,
                },
            ),
        },
    )
    async def create_chat(
        self,
        request: AuthRequest,
        data: JSONBody[ChatCreate],
        chats: NamedDependency[Chats],
        launcher: NamedDependency[Launcher],
        events: NamedDependency[ChatEvents],
        settings: NamedDependency[Settings],
    ) -> Response[Chat]:
        """Create a chat. With `content`, start it with that message: the answer is then the
        chat and the reply, as sending a message answers (waiting, or Server-Sent Events
        with `Accept: text/event-stream`, `chat_created` first); the title, unless given,
        is the message's first line."""
        owner, content = request.user.id, data.content
        if content is None:
            chat = await chats.create(owner, data)
            return Response(chat, status_code=201, media_type=MediaType.JSON)
        chats.check_settings(data)
        new_chat = NewChat(
            title=None if data.title == DEFAULT_TITLE else data.title,
            system_prompt=data.system_prompt,
            model=data.model,
            sampling=sampling_of(data),
        )

        async def start(subscriber: Subscriber | None) -> Generation:
            return await launcher.start(owner, content, new_chat=new_chat, subscriber=subscriber)

        if _wants_stream(request):
            # Documented by the route's description; the annotation is the plain answer's.
            return _stream(await _streaming(start, events, settings), 200)  # pyright: ignore[reportReturnType]
        generation = await start(None)
        reply = await _finished(generation)
        chat = await chats.get(owner, generation.chat_id)
        answer = ChatReply(
            chat=chat, message=reply, chat_id=generation.chat_id, message_id=reply.id
        )
        return Response(answer, status_code=200, media_type=MediaType.JSON)  # pyright: ignore[reportReturnType]

    @get(
        "/",
        operation_id="listChats",
        summary="List your chats",
        response_description="A page of chats; `next_cursor` fetches the next one.",
        responses=errors(*PROTECTED, 400),
    )
    async def list_chats(
        self,
        request: AuthRequest,
        chats: NamedDependency[Chats],
        limit: Limit = 50,
        cursor: CursorParam = None,
        q: Query = None,
    ) -> ChatPage:
        """Your chats, newest `updated_at` first; `q` searches titles and message text."""
        return await chats.list(request.user.id, limit=limit, cursor=cursor, q=q)

    @get(
        "/{chat_id:str}",
        operation_id="getChat",
        summary="Get a chat and its newest messages",
        response_description="The chat with its newest messages; `messages_next_cursor` "
        "fetches older ones from `GET /api/chats/{chat_id}/messages`.",
        responses=errors(*PROTECTED, 400, 404),
    )
    async def get_chat(
        self,
        request: AuthRequest,
        chat_id: ChatId,
        chats: NamedDependency[Chats],
        limit: Limit = 100,
    ) -> ChatWithMessages:
        """A chat with the newest `limit` messages of its active branch, oldest first;
        `messages_next_cursor`, passed as `before` to `GET /api/chats/{chat_id}/messages`,
        pages back towards its first message."""
        return await chats.get_with_messages(request.user.id, chat_id, limit=limit)

    @get(
        "/{chat_id:str}/messages",
        operation_id="listMessages",
        summary="List a chat's messages",
        response_description="A page of messages, oldest first.",
        responses=errors(*PROTECTED, 400, 404),
    )
    async def list_messages(
        self,
        request: AuthRequest,
        chat_id: ChatId,
        chats: NamedDependency[Chats],
        limit: Limit = 100,
        before: CursorParam = None,
        whole_tree: Annotated[
            bool,
            QueryParameter(
                name="all",
                description="Every message of the chat, every branch, newest first by "
                "creation; else the active branch.",
            ),
        ] = False,
    ) -> MessagePage:
        """The newest messages of the active branch (oldest first in the page); `before`
        pages back towards its first message. With `all=true`, every message of the chat
        (each with `parent_id`), oldest first in the page, `before` paging back in time."""
        return await chats.messages(
            request.user.id, chat_id, limit=limit, before=before, whole_tree=whole_tree
        )

    @put(
        "/{chat_id:str}/active",
        operation_id="setActiveBranch",
        summary="Switch the chat's active branch",
        response_description="The chat, with its new `active_leaf_id`.",
        responses=errors(*PROTECTED, 400, 404, 415),
    )
    async def set_active(
        self,
        request: AuthRequest,
        chat_id: ChatId,
        data: JSONBody[ActiveBranch],
        chats: NamedDependency[Chats],
    ) -> Chat:
        """Make the newest branch under `message_id` the one shown and continued; the chat's
        subscribers get `chat_updated`."""
        return await chats.set_active(request.user.id, chat_id, data.message_id)

    @post(
        "/{chat_id:str}/messages/{message_id:str}/regenerate",
        operation_id="regenerateReply",
        summary="Generate a reply again, as a new branch",
        status_code=200,
        media_type="text/event-stream",
        responses={
            200: ResponseSpec(
                data_container=MessageReply,
                media_type=MediaType.JSON,
                description="The finished new reply; with `Accept: text/event-stream`, its "
                "events as Server-Sent Events (`chat_updated`, `started`, ...).",
            ),
            **errors(
                *PROTECTED,
                400,
                404,
                409,
                502,
                504,
                meaning={
                    400: "`message_id` is not an assistant message (`invalid_message`).",
                    409: "A reply is already being generated in the chat (`busy`).",
                },
            ),
        },
    )
    async def regenerate(
        self,
        request: AuthRequest,
        chat_id: ChatId,
        message_id: MessageId,
        launcher: NamedDependency[Launcher],
        events: NamedDependency[ChatEvents],
        settings: NamedDependency[Settings],
    ) -> Response[MessageReply]:
        """A new reply in place of the assistant message `message_id` (whatever its status):
        its sibling, answering the same user message with the same history, and the
        chat's active branch from now on. Waits, or streams as sending a message does."""
        owner = request.user.id

        async def start(subscriber: Subscriber | None) -> Generation:
            return await launcher.regenerate(owner, chat_id, message_id, subscriber=subscriber)

        return await _reply(request, start, events, settings)

    @patch(
        "/{chat_id:str}",
        operation_id="updateChat",
        summary="Rename or reconfigure a chat",
        response_description="The chat as it is now.",
        responses=errors(*PROTECTED, 400, 404, 415, 422, meaning={422: _MODEL_NOT_OFFERED}),
    )
    async def update_chat(
        self,
        request: AuthRequest,
        chat_id: ChatId,
        data: JSONBody[ChatUpdate],
        chats: NamedDependency[Chats],
    ) -> Chat:
        """Change the title, system prompt, model or sampling settings (`temperature`,
        `top_p`, `max_tokens`); fields left out stay as they are, `null` returns one to the
        server's default. An invalid value changes nothing."""
        return await chats.update(request.user.id, chat_id, data)

    @get(
        "/{chat_id:str}/tree",
        operation_id="getTree",
        summary="Get a chat's workspace tree",
        response_description="The tree and its version.",
        responses=errors(*PROTECTED, 400, 404),
    )
    async def get_tree(
        self, request: AuthRequest, chat_id: ChatId, trees: NamedDependency[Trees]
    ) -> Tree:
        """The chat's workspace tree (docs/protocol.md section 5): the root node and its version."""
        return await trees.get(request.user.id, chat_id)

    @patch(
        "/{chat_id:str}/tree",
        operation_id="patchTree",
        summary="Change a chat's workspace tree",
        response_description="The tree after the change, with its new version.",
        responses=errors(
            *PROTECTED,
            400,
            415,
            404,
            409,
            413,
            422,
            meaning={
                409: "`version` is not the current one (`stale_version`), or the user's "
                "trees together would pass `TREE_MAX_BYTES_PER_USER` (`limit_reached`); "
                "nothing changed.",
                413: f"The patch is over {TREE_PATCH_MAX_BYTES} bytes (`too_large`).",
                422: "The patch breaks a rule or a limit of the tree, or an op is malformed; "
                "nothing changed (`invalid_patch`).",
            },
        ),
        request_max_body_size=TREE_PATCH_MAX_BYTES,
        exception_handlers={ValidationException: invalid_patch},
    )
    async def patch_tree(
        self,
        request: AuthRequest,
        chat_id: ChatId,
        data: JSONBody[TreePatch],
        trees: NamedDependency[Trees],
    ) -> Tree:
        """Apply an RFC 6902 JSON Patch (paths start with `/root`) against `version`: all of
        it or nothing. Every subscriber of the chat gets the change as `tree_update`."""
        return await trees.patch(request.user.id, chat_id, data)

    @post(
        "/{chat_id:str}/messages",
        operation_id="sendMessage",
        summary="Send a message and get the reply",
        status_code=200,
        # Litestar lets a handler's media type override a streamed response's own, so the
        # handler says event-stream and the waiting answer names JSON on its Response.
        media_type="text/event-stream",
        responses={
            200: ResponseSpec(
                data_container=MessageReply,
                media_type=MediaType.JSON,
                description="The finished reply; with `Accept: text/event-stream`, the events "
                "of docs/protocol.md section 4.2 as Server-Sent Events.",
            ),
            **errors(
                *PROTECTED,
                400,
                415,
                404,
                409,
                413,
                502,
                504,
                meaning={
                    409: "A reply is already being generated in the chat (`busy`).",
                    413: "Content over `MAX_MESSAGE_CHARS`, or longer than the model's "
                    "context takes (`too_large`).",
                },
            ),
        },
    )
    async def post_message(
        self,
        request: AuthRequest,
        chat_id: ChatId,
        data: JSONBody[MessageCreate],
        launcher: NamedDependency[Launcher],
        events: NamedDependency[ChatEvents],
        settings: NamedDependency[Settings],
    ) -> Response[MessageReply]:
        """Send a message and generate the reply.

        With `Accept: text/event-stream` the answer is a stream of Server-Sent Events
        (`event:` the type, `data:` the same JSON as the WebSocket event) that ends with
        the reply's `done`, `aborted` or `error`. Otherwise the answer waits for the end.
        Disconnecting does not stop the reply.
        """
        owner, content, parent_id = request.user.id, data.content, data.parent_id

        async def start(subscriber: Subscriber | None) -> Generation:
            return await launcher.start(
                owner, content, chat_id=chat_id, parent_id=parent_id, subscriber=subscriber
            )

        return await _reply(request, start, events, settings)

    @post(
        "/{chat_id:str}/abort",
        operation_id="abortReply",
        summary="Stop the reply being generated",
        status_code=200,
        response_description="The stopped task and its stored partial reply.",
        responses=errors(
            *PROTECTED,
            400,
            404,
            409,
            meaning={409: "No reply is being generated in the chat (`not_running`)."},
        ),
    )
    async def abort(
        self,
        request: AuthRequest,
        chat_id: ChatId,
        chats: NamedDependency[Chats],
        generations: NamedDependency[Generations],
    ) -> AbortResult:
        """Stop the reply being generated in the chat (started by any of your sockets or
        requests); answers with the stored partial reply, or `409 not_running`."""
        await chats.get(request.user.id, chat_id)
        stopped = await generations.stop(request.user.id, chat_id, by="rest")
        if stopped is None:
            raise NotRunning("no reply is being generated in this chat")
        task_id, message = stopped
        return AbortResult(task_id=task_id, message=message)

    @delete(
        "/{chat_id:str}",
        operation_id="deleteChat",
        summary="Delete a chat",
        status_code=204,
        response_description="Deleted.",
        responses=errors(*PROTECTED, 400, 404),
    )
    async def delete_chat(
        self, request: AuthRequest, chat_id: ChatId, chats: NamedDependency[Chats]
    ) -> None:
        """Delete a chat and its messages."""
        await chats.delete(request.user.id, chat_id)


@get(
    "/api/users/{user_id:str}/chats",
    tags=["chats"],
    operation_id="listUserChats",
    summary="List a user's chats",
    response_description="A page of chats; `next_cursor` fetches the next one.",
    responses=errors(*PROTECTED, 400, 404),
)
async def list_user_chats(
    request: AuthRequest,
    user_id: Annotated[int, PathParameter(ge=1, le=2**31 - 1, description="The user's id.")],
    chats: NamedDependency[Chats],
    limit: Limit = 50,
    cursor: CursorParam = None,
    q: Query = None,
) -> ChatPage:
    """The same list as `GET /api/chats`; another user's id is `404`."""
    if user_id != request.user.id:
        raise NotFound("user not found")
    return await chats.list(user_id, limit=limit, cursor=cursor, q=q)


@get(
    "/api/models",
    tags=["chats"],
    operation_id="listModels",
    summary="List the models a chat may use",
    response_description="The models offered, and the default of chats whose `model` is null.",
    responses=errors(*PROTECTED),
)
async def list_models(chats: NamedDependency[Chats]) -> ModelList:
    """The values `model` of a chat may take (the server's `MODELS`); any other is `422`."""
    return chats.models()


Start = Callable[[Subscriber | None], Awaitable[Generation]]


def _wants_stream(request: AuthRequest) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


async def _reply(
    request: AuthRequest, start: Start, events: ChatEvents, settings: Settings
) -> Response[MessageReply]:
    """A reply's answer: its events as Server-Sent Events, or the finished reply."""
    if _wants_stream(request):
        # The annotation documents the waiting answer in OpenAPI; the stream is
        # documented by the route's `responses`.
        return _stream(await _streaming(start, events, settings), 200)  # pyright: ignore[reportReturnType]
    generation = await start(None)
    reply = await _finished(generation)
    answer = MessageReply(message=reply, chat_id=generation.chat_id, message_id=reply.id)
    return Response(answer, media_type=MediaType.JSON)


async def _streaming(start: Start, events: ChatEvents, settings: Settings) -> _EventStream:
    stream = _EventStream(events, max_bytes=settings.ws_outbox_bytes)
    try:
        stream.ends_with(await start(stream))
    except BaseException:
        stream.discard()  # refused (busy, quota_exceeded...): no response will read it
        raise
    return stream


def _stream(stream: _EventStream, status_code: int) -> ServerSentEvent:
    return ServerSentEvent(stream.messages(), status_code=status_code)


async def _finished(generation: Generation) -> Message:
    """The stored reply once it ends; the error that ended it, if one did."""
    await generation.finished.wait()
    if generation.error is not None or generation.reply is None:
        raise generation.error or InternalError("the reply was interrupted")
    return generation.reply


class _EventStream:
    """A chat subscriber that feeds one SSE response until its reply ends.

    ``deliver`` puts each event in a memory stream that ``messages`` reads with
    a plain ``async for``. The stream is closed (and the response ends once the
    events before are sent) when its reply's terminal event is delivered, when
    the reply finishes without one (a server stop interrupts it), or when the
    events waiting exceed the byte bound: the client is too slow, and the reply
    itself goes on.
    """

    def __init__(self, events: ChatEvents, *, max_bytes: int) -> None:
        self._events = events
        self._send, self._receive = anyio.create_memory_object_stream[Event](SSE_BUFFER)
        self._bytes = 0  # of the events waiting
        self._max_bytes = max_bytes
        self._task_id: UUID | None = None

    def ends_with(self, generation: Generation) -> None:
        """End with this reply: at its terminal event, or when it finishes without one."""
        self._task_id = generation.task_id
        self._events.when_set(generation.finished, self._send.close)

    def deliver(self, event: Event) -> None:
        if event.type == "debug":
            return  # for WebSockets that ask for them only (docs/protocol.md section 5)
        self._bytes += len(event.data)
        try:
            if self._bytes > self._max_bytes:
                raise anyio.WouldBlock
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self._send.close()  # too slow: end this stream; the reply itself goes on
        except anyio.ClosedResourceError:
            pass
        if event.ends_task and event.task_id == self._task_id:
            self._send.close()

    def discard(self) -> None:
        """Close both ends: the reply did not start, so ``messages`` is never read."""
        self._events.unsubscribe_all(self)
        self._send.close()
        self._receive.close()

    async def messages(self) -> AsyncIterator[ServerSentEventMessage]:
        """The reply's events, up to the end ``deliver`` or ``ends_with`` closes the stream at."""
        try:
            async with self._receive:
                async for event in self._receive:
                    self._bytes -= len(event.data)
                    yield ServerSentEventMessage(event=event.type, data=event.data.decode())
        finally:
            self._events.unsubscribe_all(self)
            self._send.close()
