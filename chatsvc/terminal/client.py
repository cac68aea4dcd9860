"""The terminal client, ``chatsvc chat``: talk to a running chatsvc server from a shell.

It is a client like any other: REST for the account and the chat list (:mod:`.rest`),
one WebSocket (``/ws``) for the replies (:mod:`.connection`), frames decoded with the
msgspec types of :mod:`chatsvc.wire` (:mod:`.frames`). It imports nothing of the
server side.

One event loop does everything. The prompt waits on standard input (:mod:`.stdin`),
and a background task reads the WebSocket all the time, so the server's pings are
answered while the user thinks. ``/retry``, ``/edit`` and ``/branch`` work on the chat's
tree (:mod:`.branches`); ``chat_updated`` events are shown between replies
(:mod:`.current`). ``SIGINT`` goes through ``loop.add_signal_handler``:
during a reply, Ctrl-C sends ``abort`` for it and the client goes on (a second
Ctrl-C stops waiting for the server); at a prompt, Ctrl-C or Ctrl-D leaves.
POSIX only (signal handlers and readers on the loop).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import Callable
from typing import Any, TextIO

import aiohttp
import msgspec
from msgspec import UNSET, UnsetType

from chatsvc import __version__
from chatsvc.terminal.branches import BranchCommands
from chatsvc.terminal.chat_settings import set_command
from chatsvc.terminal.commands import LEAVE, PROMPT, help_lines, is_command
from chatsvc.terminal.connection import Connection
from chatsvc.terminal.current import Current
from chatsvc.terminal.reply import Reply
from chatsvc.terminal.rest import Api, RequestFailed, Tokens
from chatsvc.terminal.screen import Output, chat_title, message_line, printable, when
from chatsvc.terminal.stdin import LineReader
from chatsvc.wire import (
    Chat,
    ChatPage,
    ChatUpdated,
    ChatWithMessages,
    MessagePage,
    SendMessage,
    User,
)

#: Exit status when Ctrl-C interrupts something other than a prompt or a reply.
EXIT_INTERRUPTED = 130
CHATS_SHOWN = 20
HISTORY_SHOWN = 50


def run(url: str, tokens: Tokens, chat_id: uuid.UUID | None = None) -> int:
    """Run the interactive client until the user leaves; returns the exit status."""
    return asyncio.run(ChatClient(url, tokens).run(chat_id))


class ChatClient:
    """The interactive session: the prompt, its commands, and one reply at a time."""

    def __init__(
        self, url: str, tokens: Tokens, *, stdin_fd: int = 0, out: TextIO | None = None
    ) -> None:
        self.base = url
        self.tokens = tokens
        self.output = Output(out or sys.stdout)
        self.lines = LineReader(stdin_fd)
        self.chat = Current()
        self._api: Api | None = None
        self._socket: Connection | None = None
        self._reply: Reply | None = None
        self._main: asyncio.Task[Any] | None = None
        self._updates: list[Chat] = []  # `chat_updated` events not shown yet
        self._asking = ""  # the question on screen while waiting for a line
        self._versions = BranchCommands(self)

    def say(self, text: str = "") -> None:
        self.output.say(text)

    async def ask(self, prompt: str) -> str | None:
        self._show_updates()
        self._asking = prompt
        self.output.write(prompt)
        return await self.lines.readline()

    def _on_update(self, event: ChatUpdated) -> None:
        """A ``chat_updated``: shown at once at a prompt, else before the next one."""
        self._updates.append(event.chat)
        if self._reply is None and self.lines.waiting:
            self._show_updates(reprompt=True)

    def _show_updates(self, *, reprompt: bool = False) -> None:
        notes = [note for chat in self._updates for note in self.chat.update(chat)]
        self._updates.clear()
        if notes:
            if reprompt:  # below what the prompt line shows, and the question again
                self.output.write("\n")
            for note in notes:
                self.say(note)
            if reprompt:
                self.output.write(self._asking)

    # -- life cycle

    async def run(self, chat_id: uuid.UUID | None = None) -> int:
        loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        loop.add_signal_handler(signal.SIGINT, self._interrupt)  # POSIX only
        try:
            async with aiohttp.ClientSession(
                headers={"User-Agent": f"chatsvc-chat/{__version__}"}
            ) as http:
                self._api = Api(http, self.base, self.tokens)
                self._socket = Connection(self._api, self._on_update)
                renewals = asyncio.create_task(self._api.keep_fresh())
                try:
                    return await self._session(chat_id)
                finally:
                    renewals.cancel()
                    await self._socket.close()
        except asyncio.CancelledError:
            if self._main is not None and self._main.uncancel() == 0:
                self.say("\ninterrupted")
                return EXIT_INTERRUPTED
            raise
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    async def _session(self, chat_id: uuid.UUID | None) -> int:
        me = await self.api.call("GET", "/api/me", User)
        await self._require_socket().open()
        self.say(
            f"chatsvc {__version__}: connected to {self.base} as {printable(me.username)}. "
            "Ctrl-C stops a reply; /help lists the commands."
        )
        if chat_id is not None:
            await self._open(chat_id)
        elif not await self._choose_chat(first=True):
            return 0
        return await self._converse()

    @property
    def api(self) -> Api:
        assert self._api is not None, "run() sets the API up"
        return self._api

    def _require_socket(self) -> Connection:
        assert self._socket is not None, "run() sets the socket up"
        return self._socket

    def _interrupt(self) -> None:
        """SIGINT: abort the reply; at a prompt, leave; elsewhere, stop and leave."""
        if self._reply is not None:
            self._reply.interrupt()
        elif self.lines.waiting:
            self.lines.interrupt()
        elif self._main is not None:
            self._main.cancel()

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
                if is_command(text):
                    if not await self._command(text):
                        return 0
                else:
                    await self.send(text.removeprefix("/"))  # `//x` sends `/x`
            except RequestFailed as exc:  # one request; a refused token (Unauthorized) ends it all
                self.say(f"! {exc}")

    async def _command(self, text: str) -> bool:
        """Run one /command; ``False`` to leave."""
        name, *args = text.split()
        name = name.lower()
        if name in LEAVE:
            return False
        if name == "/chats":
            return await self._choose_chat(first=False)
        if name == "/set":  # the rest of the line as typed: a system prompt keeps its spaces
            await set_command(self, text.strip()[len(name) :])
            return True
        handlers: dict[str, Callable[[list[str]], Any]] = {
            "/help": self._help,
            "/new": self._new,
            "/history": self.history,
            "/retry": self._versions.retry,
            "/edit": self._versions.edit,
            "/branches": self._versions.branches,
            "/branch": self._versions.branch,
        }
        handler = handlers.get(name)
        if handler is None:
            self.say(f"! unknown command {printable(name)}: /help lists the commands")
        else:
            await handler(args)
        return True

    async def _help(self, _args: list[str]) -> None:
        for line in help_lines():
            self.say(line)

    async def _new(self, _args: list[str]) -> None:
        self.chat.start_new()
        await self._require_socket().follow(None)
        self.say("New chat: it is created with your next message.")

    async def _list_chats(self) -> list[Chat]:
        page = await self.api.call("GET", "/api/chats", ChatPage, params={"limit": CHATS_SHOWN})
        return page.items

    async def _choose_chat(self, *, first: bool) -> bool:
        """List the chats and let the user pick one; ``False`` when they leave instead."""
        chats = await self._list_chats()
        if not chats:
            self.say("No chats yet: your first message starts one.")
            return True
        self.say("Your chats (most recent first):")
        for number, chat in enumerate(chats, 1):
            mark = "*" if chat.id == self.chat.id else " "
            self.say(f" {mark}{number:>3}. {chat_title(chat.title)}  ({when(chat.updated_at)})")
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
            if answer.lower() in LEAVE:
                return False
            if not answer:
                if first:
                    self.chat.start_new()
                    self.say("New chat: it is created with your first message.")
                return True
            if answer.isdigit() and 1 <= int(answer) <= len(chats):
                chosen = chats[int(answer) - 1]
                self.chat.open(chosen)
                await self._require_socket().follow(chosen.id)
                self.say(f"Chat: {chat_title(chosen.title)}  (/history shows its messages)")
                return True
            self.say(f"! pick a number from 1 to {len(chats)}")

    async def _open(self, chat_id: uuid.UUID) -> None:
        chat = await self.api.call(
            "GET", f"/api/chats/{chat_id}", ChatWithMessages, params={"limit": HISTORY_SHOWN}
        )
        self.chat.open(chat)
        await self._require_socket().follow(chat.id)
        if chat.messages_next_cursor is None:
            count = f"{len(chat.messages)} messages; /history shows them"
        else:  # the server sends a long chat's newest page only
            count = f"over {HISTORY_SHOWN} messages; /history shows the last {HISTORY_SHOWN}"
        self.say(f"Chat: {chat_title(chat.title)}  ({count})")

    async def history(self, _args: list[str] | None = None) -> None:
        if self.chat.id is None:
            self.say("This chat has no messages yet.")
            return
        page = await self.api.call(
            "GET",
            f"/api/chats/{self.chat.id}/messages",
            MessagePage,
            params={"limit": HISTORY_SHOWN},
        )
        self.say(f"--- {chat_title(self.chat.title)}")
        if page.next_cursor is not None:
            self.say(f"(older messages not shown: the last {HISTORY_SHOWN} follow)")
        for message in page.items:
            self.say(message_line(message))
        if not page.items:
            self.say("(no messages yet)")
        self.say("---")

    # -- one reply

    async def send(
        self, content: str, *, parent: uuid.UUID | UnsetType | None = UNSET
    ) -> Reply | None:
        """Send a message (after ``parent``: edit and resend) and show its reply."""
        socket = self._require_socket()
        if socket.limits is not None and len(content) > socket.limits.max_message_chars:
            self.say(
                f"! too long: {len(content)} characters, "
                f"the server takes {socket.limits.max_message_chars} at most"
            )
            return None
        chat_id = self.chat.id
        return await self.follow_reply(
            lambda request_id: SendMessage(
                content=content, chat_id=chat_id, request_id=request_id, parent_id=parent
            )
        )

    async def follow_reply(self, frame: Callable[[str], msgspec.Struct]) -> Reply:
        """Send the frame made for a new request id, and show the reply it starts."""
        socket = self._require_socket()
        events = await socket.fresh_events()
        reply = Reply(uuid.uuid4().hex, events, socket, self.output)
        self._reply = reply
        try:
            await socket.send(frame(reply.request_id))
            await reply.show()
        finally:
            self._reply = None
            if reply.chat is not None:  # the server follows the chat it created for us
                self.chat.id, self.chat.title = reply.chat
                socket.following = self.chat.id
            if reply.message_id is not None:
                self.chat.leaf = reply.message_id
        return reply
