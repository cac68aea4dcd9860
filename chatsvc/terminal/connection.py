"""The terminal client's WebSocket: opened, read all the time, written frame by frame.

A background task reads every frame (so the server's pings are answered while the
user thinks) into a queue; the reply being shown takes its events from there. A
``chat_updated`` goes to a callback instead: the client shows it between replies.
The socket follows the open chat (``subscribe``), so it hears what other clients do there.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec

from chatsvc.terminal.frames import Loose, decode, encode
from chatsvc.terminal.rest import (
    Api,
    ClientError,
    RequestFailed,
    Unauthorized,
    connection_problem,
)
from chatsvc.terminal.screen import printable
from chatsvc.wire import (
    ChatUpdated,
    ErrorEvent,
    Limits,
    Ready,
    ServerFrame,
    Subscribe,
    Unsubscribe,
)

#: Largest frame accepted from the server: a `done` event carries the whole reply.
MAX_FRAME_BYTES = 64 * 1024 * 1024
CONNECT_SECONDS = 15
#: The close code of a socket whose access token expired or was revoked.
CLOSE_UNAUTHORIZED = 4401


class Closed:
    """Queued by the socket reader when the WebSocket ends; ``ended`` when the server
    closed it because the session has ended (its token could not be renewed)."""

    def __init__(self, ended: Unauthorized | None = None) -> None:
        self.ended = ended


class GiveUp:
    """Queued by a second Ctrl-C: stop waiting for the end of the reply."""


Queued = ServerFrame | Loose | Closed | GiveUp


class _Refused(Exception):
    """The server refused the socket's access token."""


class Connection:
    """One WebSocket at a time to ``/ws``, opened again when the last one ended."""

    def __init__(self, api: Api, on_update: Callable[[ChatUpdated], None]) -> None:
        self._api = api
        self._on_update = on_update
        self.limits: Limits | None = None
        #: The chat this socket follows, and follows again once opened anew.
        self.following: uuid.UUID | None = None
        self.events: asyncio.Queue[Queued] = asyncio.Queue()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._token: str | None = None  # the access token the socket was opened with
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        """Open the socket (up to its ``ready`` frame) and start reading it; a refused
        access token is renewed once."""
        try:
            await self._open()
        except _Refused:
            await self._api.renew(self._token)
            try:
                await self._open()
            except _Refused:
                raise Unauthorized(
                    "the server refused the token on /ws (expired or invalid): "
                    "run `chatsvc chat` again to log in"
                ) from None

    async def _open(self) -> None:
        base = self._api.base
        self._token = self._api.token
        try:
            async with asyncio.timeout(CONNECT_SECONDS):
                ws = await self._api.http.ws_connect(
                    base + "/ws",
                    headers=self._api.auth,
                    heartbeat=30,  # notices a server gone silent while the user thinks
                    max_msg_size=MAX_FRAME_BYTES,
                )
                first = await ws.receive()
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise _Refused() from None
            raise RequestFailed(f"the server refused the WebSocket (HTTP {exc.status})") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise connection_problem(base, exc) from None
        ready = decode(first.data) if first.type is aiohttp.WSMsgType.TEXT else None
        if first.type is aiohttp.WSMsgType.CLOSE and first.data == CLOSE_UNAUTHORIZED:
            raise _Refused()  # refused after the handshake: an expired or revoked token
        if not isinstance(ready, Ready):
            await ws.close()
            if isinstance(ready, ErrorEvent):  # e.g. too many sockets open for this user
                raise RequestFailed(
                    f"the server refused the WebSocket: {printable(ready.message)} ({ready.code})"
                )
            raise RequestFailed(f"unexpected first frame on {base}/ws: {first.type.name}")
        self.limits = ready.limits
        self._ws = ws
        self.events = asyncio.Queue()
        self._reader = asyncio.create_task(self._read(ws, self.events))
        if self.following is not None:
            await self.send(Subscribe(chat_id=self.following))

    async def follow(self, chat_id: uuid.UUID | None) -> None:
        """Follow this chat's events from now on (``None``: none), and no other's."""
        if chat_id == self.following:
            return
        if self.following is not None:
            await self.send(Unsubscribe(chat_id=self.following))
        self.following = chat_id
        if chat_id is not None:
            await self.send(Subscribe(chat_id=chat_id))

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse, events: asyncio.Queue[Queued]
    ) -> None:
        """Reads every frame (so pings are answered) until the socket ends, then queues
        ``Closed``. After a close for its token (4401), first opens a new socket with a
        renewed token; when the session has ended instead, ``Closed`` says so, and a reply
        waiting on the socket ends the client as a refused request would."""
        token = self._token
        ended: Unauthorized | None = None
        try:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    event = decode(message.data)
                    if isinstance(event, ChatUpdated):
                        self._on_update(event)
                    elif event is not None:
                        events.put_nowait(event)
                elif message.type is aiohttp.WSMsgType.ERROR:
                    break
            if ws.close_code == CLOSE_UNAUTHORIZED:
                try:
                    await self._api.renew(token)
                    async with self._opening:
                        if self._ws is ws:
                            self._ws = None
                            await self.open()
                except Unauthorized as exc:
                    ended = exc
                except ClientError:
                    pass  # the next request says why
        finally:
            events.put_nowait(Closed(ended))

    async def fresh_events(self) -> asyncio.Queue[Queued]:
        """The queue of an open socket, rid of what other tabs did in the meantime.

        A socket opened with an access token renewed since is opened anew first: the old
        token ends soon, and with it the socket (4401), which would cut a reply short.
        """
        async with self._opening:
            if self._ws is None or self._ws.closed or self._token != self._api.token:
                await self.close()
                await self.open()
        events = self.events
        while not events.empty():
            if isinstance(event := events.get_nowait(), Closed):  # but not a socket that ended
                events.put_nowait(event)
                break
        return events

    async def close(self) -> None:
        ws, reader = self._ws, self._reader
        self._ws = self._reader = None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await ws.close()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def send(self, frame: msgspec.Struct) -> None:
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await self._ws.send_str(encode(frame).decode())  # a text frame

    def send_soon(self, frame: msgspec.Struct) -> None:
        """Send from a signal handler: in a task of its own."""
        task = asyncio.get_running_loop().create_task(self.send(frame))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
