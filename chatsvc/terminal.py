"""The terminal client, ``chatsvc chat``: talk to a running chatsvc server from a shell.

It is a client like any other: REST for the account and the chat list, one
WebSocket (``/ws``) for the replies, frames decoded with the msgspec types of
:mod:`chatsvc.wire`. It imports nothing of the server side.

One event loop does everything. The prompt waits on standard input with
``loop.add_reader`` (a read only happens once a line is there), and a
background task reads the WebSocket all the time, so the server's pings are
answered while the user thinks. ``SIGINT`` goes through ``loop.add_signal_handler``:
during a reply, Ctrl-C sends ``abort`` for it and the client goes on (a second
Ctrl-C stops waiting for the server); at a prompt, Ctrl-C or Ctrl-D leaves.
POSIX only (signal handlers and readers on the loop).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO, TypeVar

import aiohttp
import msgspec

from chatsvc import __version__
from chatsvc.wire import (
    Abort,
    Aborted,
    AccessToken,
    Chat,
    ChatCreated,
    ChatPage,
    ChatWithMessages,
    Done,
    ErrorEvent,
    Limits,
    LoginRequest,
    Message,
    MessagePage,
    Ready,
    ReasoningEvent,
    SendMessage,
    ServerFrame,
    Started,
    TokenEvent,
    User,
)

#: The commands of the prompt; ``chatsvc chat --help`` lists the same (tests check it).
COMMANDS = (
    ("/chats", "list your chats and switch to one"),
    ("/new", "start a new chat (created with your next message)"),
    ("/history", "show the messages of this chat"),
    ("/help", "show these commands"),
    ("/quit", "leave (also Ctrl-D, or Ctrl-C at the prompt)"),
)
PROMPT = "you> "
#: Exit status when Ctrl-C interrupts something other than a prompt or a reply.
EXIT_INTERRUPTED = 130

REQUEST_SECONDS = 30
#: Largest frame accepted from the server: a `done` event carries the whole reply.
MAX_FRAME_BYTES = 64 * 1024 * 1024
CONNECT_SECONDS = 15
CHATS_SHOWN = 20
HISTORY_SHOWN = 50

T = TypeVar("T")


class ClientError(Exception):
    """Ends the client with this one-line message (exit status 1)."""


class Unauthorized(ClientError):
    """The server refused the token: nothing else will work."""


class RequestFailed(ClientError):
    """One request failed; in a session, the client says so and goes on."""


# --- output --------------------------------------------------------------------------

# Text from the server (model output, titles) reaches the terminal: its control characters
# are shown in caret notation, never obeyed (no escape sequences from a model).
_CONTROL: dict[int, str | None] = {c: f"^{chr(c + 64)}" for c in range(32)}
_CONTROL.update({ord("\n"): "\n", ord("\t"): "\t", ord("\r"): None, 0x7F: "^?"})
_CONTROL.update({c: "\ufffd" for c in range(0x80, 0xA0)})


def printable(text: str) -> str:
    return text.translate(_CONTROL)


# --- standard input ------------------------------------------------------------------


class LineReader:
    """Lines of a file descriptor, read without blocking the event loop.

    A terminal in canonical mode (the default) edits the line itself and hands it
    over on Enter; ``add_reader`` wakes us then. A regular file cannot be watched
    (epoll refuses it), but reading one never blocks, so it is read directly.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._buffer = ""
        self._eof = False
        self._waiter: asyncio.Future[str | None] | None = None

    @property
    def waiting(self) -> bool:
        return self._waiter is not None and not self._waiter.done()

    async def readline(self) -> str | None:
        """The next line without its end, or ``None`` at end of input or on :meth:`interrupt`."""
        line = self._take()
        if line is not None or self._eof:
            return line
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        watched = True
        try:
            loop.add_reader(self._fd, self._on_readable)
        except PermissionError:
            watched = False
            while not self._waiter.done():
                self._on_readable()
        try:
            return await self._waiter
        finally:
            if watched:
                loop.remove_reader(self._fd)
            self._waiter = None

    def interrupt(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the terminal went away (EIO): as good as the end of input
            data = b""
        if data:
            self._buffer += self._decoder.decode(data)
        else:
            self._eof = True
            self._buffer += self._decoder.decode(b"", final=True)
        line = self._take()
        if (line is not None or self._eof) and self._waiter is not None:
            if not self._waiter.done():
                self._waiter.set_result(line)
            elif line is not None:  # interrupted meanwhile: keep the line for the next prompt
                self._buffer = line + "\n" + self._buffer

    def _take(self) -> str | None:
        if "\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition("\n")
            return line.removesuffix("\r")
        if self._eof and self._buffer:
            line, self._buffer = self._buffer, ""
            return line
        return None


def read_line(prompt: str, fd: int = 0, out: TextIO | None = None) -> str | None:
    """Ask for one line before the client runs (the username), byte by byte.

    Reading the descriptor directly leaves the rest of the input to the prompt's
    :class:`LineReader`, where ``sys.stdin`` would buffer it away. ``None`` at the end.
    """
    out = out or sys.stdout
    out.write(prompt)
    out.flush()
    data = bytearray()
    while True:
        byte = os.read(fd, 1)
        if not byte:
            if not data:
                return None
            break
        if byte == b"\n":
            break
        data += byte
    return data.decode("utf-8", "replace").removesuffix("\r")


# --- HTTP ----------------------------------------------------------------------------


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
        raise ClientError(f"--url must start with http:// or https:// (got {url!r})")
    return url


def _connection_problem(base: str, exc: BaseException) -> ClientError:
    if isinstance(exc, TimeoutError):
        return RequestFailed(f"{base} did not answer in time")
    reason = str(exc)
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError):
        reason = os.strerror(os_error.errno) if os_error.errno else str(os_error)
    return RequestFailed(f"cannot reach {base} (is the server running?): {reason}")


def _error_text(status: int, body: bytes) -> str:
    try:
        detail = msgspec.json.decode(body).get("detail")
    except (msgspec.DecodeError, AttributeError):
        detail = None
    return f"{printable(str(detail)) if detail else 'the server answered'} (HTTP {status})"


class Api:
    """The REST calls of the client; every failure is a one-line :class:`ClientError`."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str | None = None) -> None:
        self.http = http
        self.base = base
        self.token = token

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def call(
        self,
        method: str,
        path: str,
        answer: type[T],
        *,
        body: msgspec.Struct | None = None,
        params: dict[str, str | int] | None = None,
    ) -> T:
        headers = dict(self.auth)
        data = None
        if body is not None:
            data = msgspec.json.encode(body)
            headers["Content-Type"] = "application/json"
        try:
            async with self.http.request(
                method,
                self.base + path,
                data=data,
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=REQUEST_SECONDS),
            ) as response:
                status, payload = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _connection_problem(self.base, exc) from None
        if status == 401:
            raise Unauthorized(
                "the server refused the token (expired or invalid): "
                "run `chatsvc chat` again to log in"
            )
        if status >= 400:
            raise RequestFailed(_error_text(status, payload))
        try:
            return msgspec.json.decode(payload, type=answer)
        except msgspec.DecodeError as exc:
            raise RequestFailed(f"unexpected answer from {self.base}{path}: {exc}") from None


async def _probe(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.get(
                base + "/health", timeout=aiohttp.ClientTimeout(total=REQUEST_SECONDS)
            ) as response:
                status = response.status
                health = await response.json(content_type=None) if status == 200 else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _connection_problem(base, exc) from None
        except ValueError:
            health = None
    if not isinstance(health, dict) or health.get("status") != "ok":
        raise ClientError(f"no chatsvc server at {base} (GET /health answered {status})")


def check_server(url: str) -> None:
    """Fail with one line when nothing (or not chatsvc) answers at ``url``."""
    asyncio.run(_probe(url))


async def _login(base: str, username: str, password: str) -> str:
    if not username:
        raise ClientError("no username given")
    if not password:
        raise ClientError("no password given")
    async with aiohttp.ClientSession() as http:
        try:
            answer = await Api(http, base).call(
                "POST",
                "/api/auth/login",
                AccessToken,
                body=LoginRequest(username=username, password=password),
            )
        except Unauthorized:
            raise ClientError("login failed: wrong username or password") from None
        except RequestFailed as exc:
            raise ClientError(f"login failed: {exc}") from None
    return answer.access_token


def login(url: str, username: str, password: str) -> str:
    """A bearer token for these credentials, or a one-line :class:`ClientError`."""
    return asyncio.run(_login(url, username, password))


def run(url: str, token: str, chat_id: uuid.UUID | None = None) -> int:
    """Run the interactive client until the user leaves; returns the exit status."""
    return asyncio.run(ChatClient(url, token).run(chat_id))


# --- the client ----------------------------------------------------------------------


class _Closed:
    """Queued by the socket reader when the WebSocket ends."""


class _GiveUp:
    """Queued by a second Ctrl-C: stop waiting for the end of the reply."""


class _ChatRef(msgspec.Struct):
    id: uuid.UUID
    title: str = ""


class _Loose(msgspec.Struct):
    """A frame of a newer server that ``ServerFrame`` cannot read: what still matters."""

    type: str = ""
    task_id: uuid.UUID | None = None
    request_id: str | None = None
    chat: _ChatRef | None = None


_decode_frame = msgspec.json.Decoder(ServerFrame).decode
_decode_loose = msgspec.json.Decoder(_Loose).decode
_encode = msgspec.json.Encoder().encode
_END_TYPES = ("done", "aborted", "error")
#: Replies stored complete that the model did not finish, by finish reason (issue 13, point 5).
_CUT_NOTES = {
    "length": "[cut off: the reply reached the length limit; send `continue` for the rest]",
    "tool_rounds_exceeded": "[cut off: the reply reached the limit of workspace tree tool rounds]",
}
#: The same in ``/history``, after the status.
_CUT_MARKS = {
    "length": " [cut off: length limit]",
    "tool_rounds_exceeded": " [cut off: tool limit]",
}


def _decode(data: str | bytes) -> ServerFrame | _Loose | None:
    try:
        return _decode_frame(data)
    except msgspec.DecodeError:
        try:
            return _decode_loose(data)
        except msgspec.DecodeError:
            return None


Queued = ServerFrame | _Loose | _Closed | _GiveUp


@dataclass
class _Reply:
    """The reply being streamed: Ctrl-C aborts it."""

    request_id: str
    events: asyncio.Queue[Queued]
    task_id: uuid.UUID | None = None
    abort_requested: bool = False
    shown: list[str] = field(default_factory=list)
    thinking: bool = False


class ChatClient:
    def __init__(
        self, url: str, token: str, *, stdin_fd: int = 0, out: TextIO | None = None
    ) -> None:
        self.base = url
        self.token = token
        self.out = out or sys.stdout
        self.lines = LineReader(stdin_fd)
        self.chat_id: uuid.UUID | None = None  # None: a new chat, created with the next message
        self.title = ""
        self.limits: Limits | None = None
        self._api: Api | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._events: asyncio.Queue[Queued] = asyncio.Queue()
        self._socket_reader: asyncio.Task[None] | None = None
        self._reply: _Reply | None = None
        self._main: asyncio.Task[Any] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # -- output

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def say(self, text: str = "") -> None:
        self.write(text + "\n")

    async def ask(self, prompt: str) -> str | None:
        self.write(prompt)
        return await self.lines.readline()

    # -- life cycle

    async def run(self, chat_id: uuid.UUID | None = None) -> int:
        loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        loop.add_signal_handler(signal.SIGINT, self._interrupt)  # POSIX only
        try:
            async with aiohttp.ClientSession(
                headers={"User-Agent": f"chatsvc-chat/{__version__}"}
            ) as http:
                self._api = Api(http, self.base, self.token)
                try:
                    return await self._session(http, chat_id)
                finally:
                    await self._disconnect()
        except asyncio.CancelledError:
            if self._main is not None and self._main.uncancel() == 0:
                self.say("\ninterrupted")
                return EXIT_INTERRUPTED
            raise
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    async def _session(self, http: aiohttp.ClientSession, chat_id: uuid.UUID | None) -> int:
        api = self._require_api()
        me = await api.call("GET", "/api/me", User)
        await self._connect(http)
        self.say(
            f"chatsvc {__version__}: connected to {self.base} as {printable(me.username)}. "
            "Ctrl-C stops a reply; /help lists the commands."
        )
        if chat_id is not None:
            await self._open(chat_id)
        elif not await self._choose_chat(first=True):
            return 0
        return await self._converse()

    def _require_api(self) -> Api:
        assert self._api is not None, "run() sets the API up"
        return self._api

    def _interrupt(self) -> None:
        """SIGINT: abort the reply; at a prompt, leave; elsewhere, stop and leave."""
        if self._reply is not None:
            self._interrupt_reply(self._reply)
        elif self.lines.waiting:
            self.lines.interrupt()
        elif self._main is not None:
            self._main.cancel()

    # -- the WebSocket

    async def _connect(self, http: aiohttp.ClientSession) -> None:
        try:
            async with asyncio.timeout(CONNECT_SECONDS):
                ws = await http.ws_connect(
                    self.base + "/ws",
                    headers=self._require_api().auth,
                    heartbeat=30,  # notices a server gone silent while the user thinks
                    max_msg_size=MAX_FRAME_BYTES,
                )
                first = await ws.receive()
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise Unauthorized(
                    "the server refused the token on /ws (expired or invalid): "
                    "run `chatsvc chat` again to log in"
                ) from None
            raise RequestFailed(f"the server refused the WebSocket (HTTP {exc.status})") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _connection_problem(self.base, exc) from None
        ready = _decode(first.data) if first.type is aiohttp.WSMsgType.TEXT else None
        if not isinstance(ready, Ready):
            await ws.close()
            if isinstance(ready, ErrorEvent):  # e.g. too many sockets open for this user
                raise RequestFailed(
                    f"the server refused the WebSocket: {printable(ready.message)} ({ready.code})"
                )
            raise RequestFailed(f"unexpected first frame on {self.base}/ws: {first.type.name}")
        self.limits = ready.limits
        self._ws = ws
        self._events = asyncio.Queue()
        self._socket_reader = asyncio.create_task(self._read_socket(ws, self._events))

    async def _read_socket(
        self, ws: aiohttp.ClientWebSocketResponse, events: asyncio.Queue[Queued]
    ) -> None:
        """Reads every frame (so pings are answered) until the socket ends."""
        try:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    event = _decode(message.data)
                    if event is not None:
                        events.put_nowait(event)
                elif message.type is aiohttp.WSMsgType.ERROR:
                    break
        finally:
            events.put_nowait(_Closed())

    async def _ensure_socket(self) -> None:
        if self._ws is None or self._ws.closed:
            await self._disconnect()
            await self._connect(self._require_api().http)

    async def _disconnect(self) -> None:
        ws, reader = self._ws, self._socket_reader
        self._ws = self._socket_reader = None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await ws.close()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    def _send_soon(self, frame: msgspec.Struct) -> None:
        """Send from a signal handler: in a task of its own."""
        task = asyncio.get_running_loop().create_task(self._send_frame(frame))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send_frame(self, frame: msgspec.Struct) -> None:
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await self._ws.send_str(_encode(frame).decode())  # a text frame

    # -- the conversation

    async def _converse(self) -> int:
        while True:
            line = await self.ask(PROMPT)
            if line is None:  # Ctrl-C or Ctrl-D at the prompt
                self.say()
                return 0
            text = line.strip()
            if not text:
                continue
            try:
                if text.startswith("/") and not text.startswith("//"):
                    if not await self._command(text):
                        return 0
                else:
                    await self._send(text.removeprefix("/"))  # `//x` sends `/x`
            except RequestFailed as exc:  # one request; a refused token (Unauthorized) ends it all
                self.say(f"! {exc}")

    async def _command(self, text: str) -> bool:
        """Run one /command; ``False`` to leave."""
        name = text.split()[0].lower()
        if name in ("/quit", "/exit"):
            return False
        if name == "/help":
            width = max(len(command) for command, _ in COMMANDS)
            for command, meaning in COMMANDS:
                self.say(f"  {command:<{width}}  {meaning}")
            self.say("  Anything else is sent as a message (start it with // to send a /).")
        elif name == "/new":
            self.chat_id = None
            self.say("New chat: it is created with your next message.")
        elif name == "/chats":
            return await self._choose_chat(first=False)
        elif name == "/history":
            await self._history()
        else:
            self.say(f"! unknown command {printable(name)}: /help lists the commands")
        return True

    async def _list_chats(self) -> list[Chat]:
        page = await self._require_api().call(
            "GET", "/api/chats", ChatPage, params={"limit": CHATS_SHOWN}
        )
        return page.items

    async def _choose_chat(self, *, first: bool) -> bool:
        """List the chats and let the user pick one; ``False`` when they leave instead."""
        chats = await self._list_chats()
        if not chats:
            self.say("No chats yet: your first message starts one.")
            return True
        self.say("Your chats (most recent first):")
        for number, chat in enumerate(chats, 1):
            mark = "*" if chat.id == self.chat_id else " "
            self.say(f" {mark}{number:>3}. {_title(chat.title)}  ({_when(chat.updated_at)})")
        question = (
            "Open a chat (number), or Enter for a new one: "
            if first
            else "Switch to (number), or Enter to stay: "
        )
        while True:
            answer = await self.ask(question)
            if answer is None:
                self.say()
                return False
            answer = answer.strip()
            if answer.lower() in ("/quit", "/exit"):
                return False
            if not answer:
                if first:
                    self.chat_id = None
                    self.say("New chat: it is created with your first message.")
                return True
            if answer.isdigit() and 1 <= int(answer) <= len(chats):
                chosen = chats[int(answer) - 1]
                self.chat_id, self.title = chosen.id, chosen.title
                self.say(f"Chat: {_title(self.title)}  (/history shows its messages)")
                return True
            self.say(f"! pick a number from 1 to {len(chats)}")

    async def _open(self, chat_id: uuid.UUID) -> None:
        chat = await self._require_api().call(
            "GET", f"/api/chats/{chat_id}", ChatWithMessages, params={"limit": HISTORY_SHOWN}
        )
        self.chat_id, self.title = chat.id, chat.title
        if chat.messages_next_cursor is None:
            count = f"{len(chat.messages)} messages; /history shows them"
        else:  # the server sends a long chat's newest page only
            count = f"over {HISTORY_SHOWN} messages; /history shows the last {HISTORY_SHOWN}"
        self.say(f"Chat: {_title(chat.title)}  ({count})")

    async def _history(self) -> None:
        if self.chat_id is None:
            self.say("This chat has no messages yet.")
            return
        page = await self._require_api().call(
            "GET",
            f"/api/chats/{self.chat_id}/messages",
            MessagePage,
            params={"limit": HISTORY_SHOWN},
        )
        self.say(f"--- {_title(self.title)}")
        if page.next_cursor is not None:
            self.say(f"(older messages not shown: the last {HISTORY_SHOWN} follow)")
        for message in page.items:
            self.say(_format_message(message))
        if not page.items:
            self.say("(no messages yet)")
        self.say("---")

    # -- one reply

    async def _send(self, content: str) -> None:
        if self.limits is not None and len(content) > self.limits.max_message_chars:
            self.say(
                f"! too long: {len(content)} characters, "
                f"the server takes {self.limits.max_message_chars} at most"
            )
            return
        await self._ensure_socket()
        events = self._events
        while not events.empty():  # what other tabs did in the meantime
            if isinstance(events.get_nowait(), _Closed):  # but not a socket that just ended
                events.put_nowait(_Closed())
                break
        reply = _Reply(request_id=uuid.uuid4().hex, events=events)
        self._reply = reply
        try:
            frame = SendMessage(
                content=content,
                chat_id=self.chat_id,
                request_id=reply.request_id,
            )
            await self._send_frame(frame)
            self.write("assistant: ")
            await self._stream(reply)
        finally:
            self._reply = None

    def _interrupt_reply(self, reply: _Reply) -> None:
        if not reply.abort_requested:
            reply.abort_requested = True
            if reply.task_id is not None:  # else sent on `started`
                self._send_soon(Abort(task_id=reply.task_id))
        else:
            reply.events.put_nowait(_GiveUp())

    async def _stream(self, reply: _Reply) -> None:
        """Print the reply as it streams, until its end."""
        while True:
            event = await reply.events.get()
            if isinstance(event, _Closed):
                self.say("\n[connection lost: /history shows how the reply ended]")
                return
            if isinstance(event, _GiveUp):
                self.say(
                    "\n[no longer waiting for the server: the reply may go on; "
                    "/history shows how it ended]"
                )
                return
            if isinstance(event, _Loose):
                if self._handle_loose(reply, event):
                    return
                continue
            if self._handle(reply, event):
                return

    def _handle(self, reply: _Reply, event: ServerFrame) -> bool:
        """Show one event; ``True`` once it ended the reply."""
        mine = reply.task_id is not None and getattr(event, "task_id", None) == reply.task_id
        if isinstance(event, ChatCreated) and event.request_id == reply.request_id:
            self.chat_id, self.title = event.chat.id, event.chat.title
        elif isinstance(event, Started) and event.request_id == reply.request_id:
            reply.task_id = event.task_id
            if reply.abort_requested:
                self._send_soon(Abort(task_id=event.task_id))
        elif isinstance(event, TokenEvent) and mine:
            if reply.thinking:
                reply.thinking = False
                self.write("\n")
            reply.shown.append(event.token)
            self.write(printable(event.token))
        elif isinstance(event, ReasoningEvent) and mine:
            if not reply.thinking and not reply.shown:
                reply.thinking = True
                self.write("(thinking...)")
        elif isinstance(event, Done) and mine:
            self._finish(reply, event.message)
            self.say()
            if note := _CUT_NOTES.get(event.finish_reason or ""):
                self.say(note)
            return True
        elif isinstance(event, Aborted) and mine:
            self._finish(reply, event.message)
            self.say("\n[stopped: the reply was aborted; its text so far is kept]")
            return True
        elif isinstance(event, ErrorEvent) and (
            event.request_id == reply.request_id or (mine and event.code != "not_running")
        ):
            self.say(f"\n[error: {printable(event.message)} ({event.code})]")
            return True
        return False

    def _finish(self, reply: _Reply, message: Message) -> None:
        """Print what the stored reply holds beyond the tokens shown (normally nothing)."""
        shown = "".join(reply.shown)
        if message.content.startswith(shown):
            self.write(printable(message.content[len(shown) :]))

    def _handle_loose(self, reply: _Reply, event: _Loose) -> bool:
        if event.type == "chat_created" and event.request_id == reply.request_id and event.chat:
            self.chat_id, self.title = event.chat.id, event.chat.title
        mine = event.request_id == reply.request_id or (
            reply.task_id is not None and event.task_id == reply.task_id
        )
        if event.type in _END_TYPES and mine:
            self.say(f"\n[the reply ended ({event.type}); /history shows it]")
            return True
        return False


def _title(title: str) -> str:
    return printable(title.replace("\n", " ")) or "(untitled)"


def _when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def _format_message(message: Message) -> str:
    who = "you" if message.role == "user" else "assistant"
    if message.status == "complete":
        status = _CUT_MARKS.get(message.finish_reason or "", "")
    else:
        status = f" [{message.status}]"
    return f"{who}{status}: {printable(message.content)}"
