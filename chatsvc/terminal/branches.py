"""The commands on a chat's tree: ``/retry``, ``/edit``, ``/branches`` and ``/branch``
(docs/protocol.md section 3.1).

They work on the end of the active branch: its last user message and the reply to
it, each saying its place among its siblings (``sibling_index``, ``sibling_count``,
``sibling_ids``). A chat from before trees is one branch, every message the only
version of itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import msgspec
from msgspec import UNSET, UnsetType

from chatsvc.terminal.current import Current
from chatsvc.terminal.reply import Reply
from chatsvc.terminal.rest import Api
from chatsvc.terminal.screen import place, printable
from chatsvc.wire import ActiveBranch, Chat, Message, MessagePage, Regenerate

Level = Literal["message", "reply"]
#: What ``/branch`` takes before the number to pick a version of the user's message.
MESSAGE_WORDS = ("message", "msg", "m")
BRANCH_USAGE = "/branch N picks reply N; /branch message N picks your message N"


@dataclass(frozen=True)
class BranchEnd:
    """The last user message of the active branch and the reply after it (either may lack)."""

    message: Message | None
    reply: Message | None

    def at(self, level: Level) -> Message | None:
        return self.message if level == "message" else self.reply


async def branch_end(api: Api, chat_id: uuid.UUID) -> BranchEnd:
    """The end of the chat's active branch: its newest messages, read over REST."""
    page = await api.call("GET", f"/api/chats/{chat_id}/messages", MessagePage, params={"limit": 2})
    reply = page.items[-1] if page.items and page.items[-1].role == "assistant" else None
    message = next((m for m in reversed(page.items) if m.role == "user"), None)
    return BranchEnd(message, reply)


def versions(message: Message) -> list[uuid.UUID]:
    """The ids of the message's versions, oldest first (``sibling_ids`` is left out
    of a message without siblings)."""
    return message.sibling_ids or [message.id]


def version_lines(end: BranchEnd) -> list[str]:
    """What ``/branches`` prints."""
    lines = ["Versions at the end of this chat:"]
    if end.message is not None:
        lines.append(f"  your message {place(end.message)}")
    if end.reply is not None:
        lines.append(f"  reply {place(end.reply)}")
    counts = [m.sibling_count for m in (end.message, end.reply) if m is not None]
    if all(count == 1 for count in counts):
        lines.append("This chat has one version: /retry or /edit make another.")
    else:
        lines.append(BRANCH_USAGE)
    return lines


def parse_choice(words: list[str]) -> tuple[Level, int] | None:
    """``/branch``'s arguments: ``N`` (a reply) or ``message N``; ``None`` when neither."""
    if len(words) == 1 and words[0].isdigit():
        return "reply", int(words[0])
    if len(words) == 2 and words[0].lower() in MESSAGE_WORDS and words[1].isdigit():
        return "message", int(words[1])
    return None


async def switch(api: Api, chat_id: uuid.UUID, message_id: uuid.UUID) -> Chat:
    """Make the newest branch under ``message_id`` the active one."""
    return await api.call(
        "PUT", f"/api/chats/{chat_id}/active", Chat, body=ActiveBranch(message_id=message_id)
    )


class Session(Protocol):
    """What the commands use of the client (:class:`chatsvc.terminal.client.ChatClient`)."""

    chat: Current

    @property
    def api(self) -> Api: ...

    def say(self, text: str = "") -> None: ...

    async def ask(self, prompt: str) -> str | None: ...

    async def send(
        self, content: str, *, parent: uuid.UUID | UnsetType | None = UNSET
    ) -> Reply | None: ...

    async def follow_reply(self, frame: Callable[[str], msgspec.Struct]) -> Reply: ...

    async def history(self, _args: list[str] | None = None) -> None: ...


class BranchCommands:
    """``/retry``, ``/edit``, ``/branches`` and ``/branch``, each given its arguments."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def _end(self) -> BranchEnd | None:
        """The end of the open chat's branch; ``None`` while it has no messages."""
        chat_id = self._session.chat.id
        if chat_id is None:
            return None
        end = await branch_end(self._session.api, chat_id)
        return None if end.message is None and end.reply is None else end

    async def retry(self, _args: list[str]) -> None:
        """A new reply in place of the last one (``regenerate``), shown as it streams."""
        session = self._session
        end = await self._end()
        chat_id = session.chat.id
        if chat_id is None or end is None or end.reply is None:
            session.say("! no reply to retry yet")
            return
        message_id = end.reply.id
        reply = await session.follow_reply(
            lambda request_id: Regenerate(
                chat_id=chat_id, message_id=message_id, request_id=request_id
            )
        )
        self._say_version("reply", reply.final)

    async def edit(self, _args: list[str]) -> None:
        """The last user message, changed and sent again after the same parent.

        The terminal edits a line itself (canonical mode): no line can be put there to
        edit, so the old text is shown and the new one asked for.
        """
        session = self._session
        end = await self._end()
        if end is None or end.message is None:
            session.say("! no message of yours to edit yet")
            return
        session.say("Your last message:")
        session.say("  " + printable(end.message.content).replace("\n", "\n  "))
        text = await session.ask("New text (Enter alone cancels): ")
        if text is None or not text.strip():
            session.say("Edit cancelled: nothing was sent.")
            return
        reply = await session.send(text.strip(), parent=end.message.parent_id)
        self._say_version("your message", reply.question if reply else None)

    async def branches(self, _args: list[str]) -> None:
        end = await self._end()
        if end is None:
            self._session.say("This chat has no messages yet.")
            return
        for line in version_lines(end):
            self._session.say(line)

    async def branch(self, args: list[str]) -> None:
        """Switch to version N of the reply, or of the user's message, and show the branch."""
        session = self._session
        choice = parse_choice(args)
        if choice is None:
            session.say(f"! {BRANCH_USAGE}")
            return
        level, number = choice
        end = await self._end()
        message = end.at(level) if end else None
        chat_id = session.chat.id
        if chat_id is None or message is None:
            session.say(f"! this chat has no {level} to switch yet")
            return
        ids = versions(message)
        if not 1 <= number <= len(ids):
            session.say(f"! pick a version from 1 to {len(ids)}")
            return
        session.chat.open(await switch(session.api, chat_id, ids[number - 1]))
        await session.history()

    def _say_version(self, what: str, message: Message | None) -> None:
        if message is not None and message.sibling_count > 1:
            self._session.say(f"[{what} {place(message)}: /branches lists the versions]")
