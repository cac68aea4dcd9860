"""One reply, shown as it streams: its events printed until the one that ends it.

The reply to a message sent, or a new version of one (``regenerate``): the same events.
``assistant:`` is printed once it has started; an error before that (``busy``, say) is
one line of its own. Ctrl-C during a reply asks the server to abort it
(:meth:`Reply.interrupt`); a second Ctrl-C stops waiting for the server.
"""

from __future__ import annotations

import asyncio
import uuid

from chatsvc.terminal.connection import Closed, Connection, GiveUp, Queued
from chatsvc.terminal.frames import CHAT_CREATED, END_TYPES, Loose
from chatsvc.terminal.screen import CUT_NOTES, Output, printable
from chatsvc.wire import (
    Abort,
    Aborted,
    ChatCreated,
    Done,
    ErrorEvent,
    Message,
    MessageEvent,
    ReasoningEvent,
    ServerFrame,
    Started,
    TokenEvent,
)

HEADER = "assistant: "


class Reply:
    """The reply to the frame sent with ``request_id``; ``chat`` is set when it created
    one (a message sent with no chat), ``message_id`` once it started, ``question`` to
    the user message stored, ``final`` to the reply stored at its end."""

    def __init__(
        self, request_id: str, events: asyncio.Queue[Queued], socket: Connection, out: Output
    ) -> None:
        self.request_id = request_id
        self.chat: tuple[uuid.UUID, str] | None = None
        self.message_id: uuid.UUID | None = None
        self.question: Message | None = None
        self.final: Message | None = None
        self._header = False
        self._events = events
        self._socket = socket
        self._out = out
        self._task_id: uuid.UUID | None = None
        self._abort_requested = False
        self._shown: list[str] = []
        self._thinking = False

    def interrupt(self) -> None:
        """Ctrl-C: abort the reply; a second time, stop waiting for its end."""
        if not self._abort_requested:
            self._abort_requested = True
            if self._task_id is not None:  # else sent on `started`
                self._socket.send_soon(Abort(task_id=self._task_id))
        else:
            self._events.put_nowait(GiveUp())

    async def show(self) -> None:
        """Print the reply as it streams, until its end."""
        while True:
            event = await self._events.get()
            if isinstance(event, Closed):
                if event.ended is not None:  # not lost: the server ended the session
                    raise event.ended
                self._end("[connection lost: /history shows how the reply ended]")
                return
            if isinstance(event, GiveUp):
                self._end(
                    "[no longer waiting for the server: the reply may go on; "
                    "/history shows how it ended]"
                )
                return
            if isinstance(event, Loose):
                if self._handle_loose(event):
                    return
                continue
            if self._handle(event):
                return

    def _handle(self, event: ServerFrame) -> bool:
        """Show one event; ``True`` once it ended the reply."""
        out = self._out
        mine = self._task_id is not None and getattr(event, "task_id", None) == self._task_id
        if isinstance(event, ChatCreated) and event.request_id == self.request_id:
            self.chat = event.chat.id, event.chat.title
        elif isinstance(event, MessageEvent) and event.request_id == self.request_id:
            self.question = event.message
        elif isinstance(event, Started) and event.request_id == self.request_id:
            self._task_id, self.message_id = event.task_id, event.message_id
            self._show_header()
            if self._abort_requested:
                self._socket.send_soon(Abort(task_id=event.task_id))
        elif isinstance(event, TokenEvent) and mine:
            if self._thinking:
                self._thinking = False
                out.write("\n")
            self._shown.append(event.token)
            out.write(printable(event.token))
        elif isinstance(event, ReasoningEvent) and mine:
            if not self._thinking and not self._shown:
                self._thinking = True
                out.write("(thinking...)")
        elif isinstance(event, Done) and mine:
            self._finish(event.message)
            out.say()
            if note := CUT_NOTES.get(event.finish_reason or ""):
                out.say(note)
            return True
        elif isinstance(event, Aborted) and mine:
            self._finish(event.message)
            out.say("\n[stopped: the reply was aborted; its text so far is kept]")
            return True
        elif isinstance(event, ErrorEvent) and (
            event.request_id == self.request_id or (mine and event.code != "not_running")
        ):
            if self._header:
                out.say(f"\n[error: {printable(event.message)} ({event.code})]")
            else:  # refused before it started: nothing was stored
                out.say(f"! {printable(event.message)} ({event.code})")
            return True
        return False

    def _show_header(self) -> None:
        if not self._header:
            self._header = True
            self._out.write(HEADER)

    def _end(self, line: str) -> None:
        """The reply's last line, below its text."""
        self._out.say(f"\n{line}" if self._header else line)

    def _finish(self, message: Message) -> None:
        """Print what the stored reply holds beyond the tokens shown (normally nothing)."""
        self.final = message
        self._show_header()
        shown = "".join(self._shown)
        if message.content.startswith(shown):
            self._out.write(printable(message.content[len(shown) :]))

    def _handle_loose(self, event: Loose) -> bool:
        if event.type == CHAT_CREATED and event.request_id == self.request_id and event.chat:
            self.chat = event.chat.id, event.chat.title
        mine = event.request_id == self.request_id or (
            self._task_id is not None and event.task_id == self._task_id
        )
        if event.type in END_TYPES and mine:
            self._end(f"[the reply ended ({event.type}); /history shows it]")
            return True
        return False
