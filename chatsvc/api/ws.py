"""WebSocket ``/ws`` (docs/protocol.md section 4.2): a Litestar listener, one writer per socket.

Litestar's ``WebsocketListener`` reads the frames, one at a time; each is decoded
with msgspec straight into the ``ClientFrame`` union (Litestar would only parse
the JSON, not validate a union) and acted on: a reply is started in the
``Generations`` task group, an abort cancels the reply's scope, and the handler
returns, so an ``abort`` is read while replies stream. Everything sent to the
client goes through one bounded outbox drained by a single writer, which lives
in the connection's lifespan with the per-user socket cap, so frames never
interleave. Generations reach this socket as a chat subscriber, so a disconnect
stops nothing but this socket.

A socket gets every event of the chats it follows except ``debug`` events: those
only for the chats it subscribed to with ``"debug": true``, and only when the
server runs in development or the user is staff (docs/protocol.md section 5).

A socket lasts no longer than its right to exist: it closes with 4401 when its
token (or API key) expires or its key is revoked, and when
:class:`~chatsvc.access.AccessWatch` finds its user deactivated, no longer staff,
or its token revoked (docs/protocol.md).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import msgspec
from litestar import WebSocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect
from litestar.handlers import WebsocketListener, WebsocketListenerRouteHandler, websocket_listener
from litestar.security.jwt import Token
from litestar.types import Receive, ReceiveMessage

from chatsvc.access import AccessWatch, SocketCounter
from chatsvc.api.doorbell import Doorbell
from chatsvc.api.security import WS_UNAUTHORIZED, AuthUser, KeyAuth, credential_end
from chatsvc.api.services import Services
from chatsvc.chats import Chats
from chatsvc.errors import ChatsvcError
from chatsvc.events import ChatEvents, Event
from chatsvc.generation import Aborting, Generations, Launcher
from chatsvc.telemetry import Telemetry
from chatsvc.wire import (
    Abort,
    ClientFrame,
    ErrorEvent,
    Limits,
    Ping,
    Pong,
    Ready,
    Regenerate,
    SendMessage,
    Subscribe,
    Unsubscribe,
    decode_client_frame,
    decode_request_id,
    encode_frame,
)

log = logging.getLogger("chatsvc.ws")

#: Past ``WS_OUTBOX_EVENTS`` events waiting for a slow client, its socket is closed with this.
CLOSE_TOO_SLOW = 1013


class FrameBudget:
    """A token bucket: ``rate`` frames a second, bursts of twice that."""

    __slots__ = ("_at", "_tokens", "capacity", "rate")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = 2 * rate
        self._tokens = self.capacity
        self._at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


CLOSE_TOO_MANY_SOCKETS = 1008
#: How long a socket's writer waits for the next frame before it ends: a streaming reply
#: keeps one writer, an idle socket none. Only a writer started within this long of the
#: previous one's end lingers: a socket that has sent `ready` and nothing since ends its
#: first writer at once (5,000 sockets opening together would otherwise hold 5,000
#: waiting writers, about 2.6 KB each, for the linger; docs/performance.md).
WRITER_LINGER_SECONDS = 5.0


class _ChatIdOnly(msgspec.Struct):
    chat_id: uuid.UUID


_decode_chat_id = msgspec.json.Decoder(_ChatIdOnly).decode


class SocketSession:
    """One connected client: its outbox, its subscriptions, its frames."""

    # Slots: thousands of idle sockets each hold one (docs/performance.md, idle sockets).
    __slots__ = (
        "_closed",
        "_debug_chats",
        "_doorbell",
        "_expires_at",
        "_key_id",
        "_last_writer_end",
        "_may_debug",
        "_outbox",
        "_outbox_bytes",
        "_outbox_frames",
        "_task_group",
        "_writing",
        "access",
        "budget",
        "chats",
        "counter",
        "events",
        "generations",
        "launcher",
        "revoked",
        "settings",
        "socket",
        "telemetry",
        "too_slow",
        "user",
    )

    def __init__(self, socket: WebSocket[AuthUser, Any, Any], services: Services) -> None:
        self.socket = socket
        self.user: AuthUser = socket.user
        self.generations: Generations = services.generations
        self.launcher: Launcher = services.launcher
        self.events: ChatEvents = services.events
        self.chats: Chats = services.chats
        self.settings = services.settings
        self.budget = FrameBudget(services.settings.ws_frames_per_second)
        self.counter: SocketCounter = services.sockets
        self.access: AccessWatch = services.access
        self.telemetry: Telemetry = services.telemetry
        self._expires_at, self._key_id = credential_end(socket.auth)
        # A list rather than a memory stream: the writer takes every frame waiting at
        # once, and posting never awaits. The writer runs while there is something to
        # send (and lingers a little, waiting on the doorbell): an idle socket has no task
        # of its own. A list, not a deque: an empty deque holds a block of 64 slots
        # (0.7 KB), an empty list none. The counts cover the frames waiting, including
        # those the writer took and has not begun to send.
        self._outbox: list[bytes] = []
        self._outbox_frames = 0
        self._outbox_bytes = 0
        self._writing = False
        self._last_writer_end = -math.inf  # time.monotonic()
        self._doorbell = Doorbell(WRITER_LINGER_SECONDS)
        self._closed = False
        self._task_group: anyio.abc.TaskGroup | None = None
        self.too_slow = False
        self.revoked: str | None = None  # why the socket lost its right to stay open
        # `debug` events: allowed in development and to staff; wanted for these chats.
        self._may_debug = self.settings.environment == "development" or self.user.staff
        self._debug_chats: set[uuid.UUID] = set()

    # What the access watch reads and calls.
    @property
    def user_id(self) -> int:
        return self.user.id

    @property
    def token_version(self) -> int:
        return self.user.token_version

    @property
    def staff(self) -> bool:
        return self.user.staff

    @property
    def expires_at(self) -> float:
        return self._expires_at

    @property
    def key_id(self) -> uuid.UUID | None:
        return self._key_id

    def revoke(self, reason: str) -> None:
        """End the socket: it closes with 4401 and ``reason``; its replies go on."""
        if self.revoked is None:
            self.revoked = reason
        self._end()

    def _end(self) -> None:
        self._closed = True
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    # The events hub calls this for every event of a chat this socket follows.
    def deliver(self, event: Event) -> None:
        if event.type == "debug" and not self._wants_debug(event):
            return
        self.post(event.data)

    def _wants_debug(self, event: Event) -> bool:
        """Whether this socket subscribed with ``debug`` to the chat of a ``debug`` event."""
        if not self._debug_chats:
            return False
        try:
            return _decode_chat_id(event.data).chat_id in self._debug_chats
        except (msgspec.ValidationError, msgspec.DecodeError):
            return False

    def post(self, data: bytes) -> None:
        if self._closed:
            return
        self._outbox_bytes += len(data)
        if (
            self._outbox_frames >= self.settings.ws_outbox_events
            or self._outbox_bytes > self.settings.ws_outbox_bytes
        ):
            self.too_slow = True
            self._end()
            return
        self._outbox.append(data)
        self._outbox_frames += 1
        if self._writing:
            self._doorbell.ring()
        else:
            self._start_writer()

    def send(self, frame: msgspec.Struct) -> None:
        self.post(encode_frame(frame))

    @asynccontextmanager
    async def open(self) -> AsyncGenerator[None]:
        """The connection's lifespan: the listener reads frames while the body runs.

        The per-user socket cap, ``ready``, the writer and the expiry timer live here;
        ending the socket (revoked, too slow) cancels the task group, and with it the
        listener's wait for the next frame.
        """
        await self.socket.accept()
        if not self.counter.enter(self.user.id):
            limit = self.counter.limit
            message = f"at most {limit} sockets per user are open at once"
            await self.socket.send_data(
                encode_frame(ErrorEvent(code="rate_limited", message=message)), mode="text"
            )
            await self.socket.close(code=CLOSE_TOO_MANY_SOCKETS, reason="too many sockets")
            self._closed = True
            with anyio.CancelScope() as refused:
                refused.cancel()  # the listener reads no frame: it leaves at once
                yield
            return
        self.telemetry.sockets.inc()
        self.access.watch(self)
        try:
            self.send(self._ready())
            self.events.join(self.user.id, self)  # the user's chat events, after `ready`
            try:
                async with anyio.create_task_group() as task_group:
                    self._task_group = task_group
                    if self._closed:  # revoked before it could start
                        task_group.cancel_scope.cancel()
                    self._start_writer()  # `ready` waits in the outbox
                    try:
                        yield  # the listener's read loop
                    except WebSocketDisconnect:
                        pass  # the client closed the socket
                    finally:
                        task_group.cancel_scope.cancel()
            except* (WebSocketDisconnect, OSError):
                pass  # the client went away (uvicorn raises ClientDisconnected, an OSError)
            finally:
                self._closed = True
                self._task_group = None
                self.events.unsubscribe_all(self)
            if self.revoked is not None:
                with anyio.move_on_after(1, shield=True):
                    await self.socket.close(code=WS_UNAUTHORIZED, reason=self.revoked)
            elif self.too_slow:
                with anyio.move_on_after(1, shield=True):
                    await self.socket.close(code=CLOSE_TOO_SLOW, reason="client too slow")
        finally:
            self.events.leave(self.user.id, self)
            self.access.forget(self)
            self.counter.leave(self.user.id)
            self.telemetry.sockets.dec()
            if self.too_slow:
                self.telemetry.slow_consumers.inc()

    def _ready(self) -> Ready:
        settings = self.settings
        return Ready(
            session_id=str(uuid.uuid4()),
            user_id=self.user.id,
            limits=Limits(
                max_message_chars=settings.max_message_chars,
                max_frame_bytes=settings.max_frame_bytes,
                max_concurrent_generations=settings.max_concurrent_generations,
            ),
        )

    def _start_writer(self) -> None:
        if self._task_group is not None and self._outbox and not self._writing:
            self._writing = True
            self._task_group.start_soon(self._write)

    async def _write(self) -> None:
        """Send what the outbox holds; wait ``WRITER_LINGER_SECONDS`` for more, then end
        (the next ``post`` starts a writer again). A writer started long after the last
        one ended (the socket's first, or after a quiet spell) does not wait: it ends once
        the outbox is empty."""
        linger = time.monotonic() - self._last_writer_end < WRITER_LINGER_SECONDS
        try:
            while True:
                while self._outbox:
                    frames, self._outbox = self._outbox, []
                    for data in frames:
                        self._outbox_frames -= 1  # a frame being sent waits no more
                        self._outbox_bytes -= len(data)
                        await self.socket.send_data(data, mode="text")
                if not linger:
                    return  # nothing says more frames come soon
                if not await self._doorbell.wait() and not self._outbox:
                    return  # idle for the linger (a frame posted as it ended is sent)
        finally:
            self._writing = False
            self._last_writer_end = time.monotonic()
            self._doorbell.stop()

    async def receive(self, text: str, *, binary: bool) -> None:
        """Answer one frame; its work starts elsewhere, so this returns at once.

        Nothing raises out of here: an error in one frame is that frame's answer,
        and the socket and its replies go on.
        """
        if self._closed:
            return  # read after the socket ended, before the listener saw it
        if not self.budget.take():
            self.send(ErrorEvent(code="rate_limited", message="too many frames; slow down"))
            return
        if binary:
            self.send(ErrorEvent(code="invalid_message", message="frames must be JSON text"))
            return
        try:
            frame = decode_client_frame(text)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self.send(
                ErrorEvent(code="invalid_message", message=str(exc), request_id=_request_id(text))
            )
            return
        except RecursionError:
            self.send(ErrorEvent(code="invalid_message", message="JSON nested too deeply"))
            return
        try:
            await self._handle(frame)
        except Exception:  # this frame's error boundary: the socket and its replies go on
            log.exception("frame %s failed", type(frame).__name__)
            self.send(ErrorEvent(code="internal", message="the server could not do that"))

    async def _handle(self, frame: ClientFrame) -> None:
        match frame:
            case SendMessage():
                try:
                    await self.launcher.start(
                        self.user.id,
                        frame.content,
                        chat_id=frame.chat_id,
                        parent_id=frame.parent_id,
                        request_id=frame.request_id,
                        subscriber=self,
                    )
                except ChatsvcError as exc:
                    self._error(exc, chat_id=frame.chat_id, request_id=frame.request_id)
            case Regenerate():
                try:
                    await self.launcher.regenerate(
                        self.user.id,
                        frame.chat_id,
                        frame.message_id,
                        request_id=frame.request_id,
                        subscriber=self,
                    )
                except ChatsvcError as exc:
                    self._error(exc, chat_id=frame.chat_id, request_id=frame.request_id)
            case Abort():
                try:
                    aborting = await self.generations.abort(
                        self.user.id, task_id=frame.task_id, chat_id=frame.chat_id, by="socket"
                    )
                except ChatsvcError as exc:
                    self._error(exc, chat_id=frame.chat_id, task_id=frame.task_id)
                    return
                if self.events.is_subscribed(aborting.chat_id, self):
                    aborting.forget()  # the end comes with the chat's events
                else:
                    assert self._task_group is not None
                    self._task_group.start_soon(self._tell_end, aborting)
            case Subscribe():
                try:
                    await self.chats.get(self.user.id, frame.chat_id)
                except ChatsvcError as exc:
                    self._error(exc, chat_id=frame.chat_id)
                    return
                # Without the right to them, `debug` is ignored: still a plain subscribe.
                if frame.debug and self._may_debug:
                    self._debug_chats.add(frame.chat_id)
                else:
                    self._debug_chats.discard(frame.chat_id)
                snapshot = await self.generations.follow(frame.chat_id, self.user.id, self)
                if snapshot is not None:
                    self.send(snapshot)
            case Unsubscribe():
                self._debug_chats.discard(frame.chat_id)
                self.events.unsubscribe(frame.chat_id, self)
            case Ping():
                self.send(Pong())

    async def _tell_end(self, aborting: Aborting) -> None:
        """An abort from a socket that does not follow the chat still hears how it ended."""
        with anyio.move_on_after(self.settings.shutdown_timeout):
            self.post((await aborting.ended()).data)

    def _error(
        self,
        exc: ChatsvcError,
        *,
        chat_id: uuid.UUID | None = None,
        task_id: uuid.UUID | None = None,
        request_id: str | None = None,
    ) -> None:
        self.send(
            ErrorEvent(
                code=exc.code,
                message=exc.message,
                chat_id=chat_id,
                task_id=task_id,
                request_id=request_id,
                retry_after=exc.retry_after,
                quota=exc.quota,
            )
        )


def _request_id(text: str) -> str | None:
    """The ``request_id`` of a frame that failed validation, when it has a readable one."""
    try:
        return decode_request_id(text).request_id
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None


class FrameSocket(WebSocket[AuthUser, Token | KeyAuth, Any]):
    """The socket of ``/ws``: Litestar's, and it notes whether the frame just read was binary.

    The listener receives in text mode, where Litestar hands a binary frame over as
    ``""``, like an empty text frame; the contract answers a binary frame with its own
    error (docs/protocol.md section 4.2).
    """

    binary = False
    chat_session: SocketSession | None = None

    def receive_wrapper(self, receive: Receive) -> Receive:
        litestar_receive = super().receive_wrapper(receive)

        async def noting_binary() -> ReceiveMessage:
            message = await litestar_receive()
            self.binary = message["type"] == "websocket.receive" and message.get("text") is None
            return message

        return noting_binary


class ChatSocket(WebsocketListener):
    """``/ws``: Litestar's listener reads the frames, one at a time, into :meth:`on_receive`.

    Each frame's work starts (a reply in the ``Generations`` task group) or stops (an
    abort cancels the reply's scope) and the handler returns, so an ``abort`` is read
    while a reply streams. The connection's lifespan (:meth:`SocketSession.open`) holds
    the socket cap, the writer and the expiry timer.
    """

    path = "/ws"
    receive_mode = "text"
    websocket_class = FrameSocket

    def to_handler(self) -> WebsocketListenerRouteHandler:
        # The class form passes only on_accept/on_disconnect on; the writer needs a task
        # group around the read loop, which only a connection lifespan gives.
        handler = websocket_listener(
            self.path,
            connection_lifespan=self.connection,
            receive_mode=self.receive_mode,
            websocket_class=FrameSocket,
        )(self.on_receive)
        handler.owner = self._owner
        return handler

    def connection(
        self, socket: FrameSocket, services: NamedDependency[Services]
    ) -> AbstractAsyncContextManager[None]:
        """The connection's lifespan: its session's (one context manager fewer held for
        the socket's life than wrapping it in another)."""
        session = SocketSession(socket, services)
        socket.chat_session = session
        return session.open()

    async def on_receive(self, data: str, socket: FrameSocket) -> None:
        assert socket.chat_session is not None  # set by the connection lifespan
        await socket.chat_session.receive(data, binary=socket.binary)
