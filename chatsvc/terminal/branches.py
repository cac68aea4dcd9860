"""The end of a chat's active branch, and its versions: what ``/retry``, ``/edit``,
``/branches`` and ``/branch`` work on (docs/protocol.md section 3.1).

The end is the last user message of the branch and its reply; each says its place
among its siblings (``sibling_index``, ``sibling_count``, ``sibling_ids``). A chat from
before trees is one branch, every message the only version of itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from chatsvc.terminal.rest import Api
from chatsvc.terminal.screen import place
from chatsvc.wire import ActiveBranch, Chat, Message, MessagePage

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
