"""The chat at the prompt as the client last saw it, and what a ``chat_updated`` changes.

The server sends ``chat_updated`` when the model names a chat and when its active
branch moves (a regenerate, an edit, ``PUT .../active``; docs/protocol.md section 3.1).
The client applies them only between its own requests (at a prompt, or once a reply
or a switch of its own has ended), when it knows where its branch ends: its own
moves are then no news, and the others are worth a line.
"""

from __future__ import annotations

import uuid

from chatsvc.terminal.screen import chat_title
from chatsvc.wire import Chat

SWITCHED_ELSEWHERE = "[another client switched this chat to another branch: /history shows it]"


class Current:
    """The open chat: ``id`` (``None``: a new chat, created with the next message), its
    title, and ``leaf``, the end of its active branch as last seen (``None``: unknown)."""

    def __init__(self) -> None:
        self.id: uuid.UUID | None = None
        self.title = ""
        self.leaf: uuid.UUID | None = None

    def open(self, chat: Chat) -> None:
        self.id, self.title, self.leaf = chat.id, chat.title, chat.active_leaf_id

    def start_new(self) -> None:
        self.id, self.title, self.leaf = None, "", None

    def update(self, chat: Chat) -> list[str]:
        """Take the chat as the server now has it; the lines worth showing about it."""
        if chat.id != self.id:
            return []
        notes: list[str] = []
        if chat.title != self.title:
            self.title = chat.title
            notes.append(f"[chat title: {chat_title(chat.title)}]")
        leaf = chat.active_leaf_id
        if leaf is not None and leaf != self.leaf:
            notes.append(SWITCHED_ELSEWHERE)
            self.leaf = leaf
        return notes
