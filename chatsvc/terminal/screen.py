"""What the terminal client prints: server text made safe to show, chats and messages.

Text from the server (model output, titles) reaches the terminal: its control
characters are shown in caret notation, never obeyed (no escape sequences from a model).
"""

from __future__ import annotations

from datetime import datetime
from typing import TextIO

from chatsvc.wire import Message

_CONTROL: dict[int, str | None] = {c: f"^{chr(c + 64)}" for c in range(32)}
_CONTROL.update({ord("\n"): "\n", ord("\t"): "\t", ord("\r"): None, 0x7F: "^?"})
_CONTROL.update({c: "\ufffd" for c in range(0x80, 0xA0)})

#: Replies stored complete that the model did not finish, by finish reason (issue 13, point 5).
CUT_NOTES = {
    "length": "[cut off: the reply reached the length limit; send `continue` for the rest]",
    "tool_rounds_exceeded": "[cut off: the reply reached the limit of workspace tree tool rounds]",
}
#: The same in ``/history``, after the status.
_CUT_MARKS = {
    "length": " [cut off: length limit]",
    "tool_rounds_exceeded": " [cut off: tool limit]",
}


def printable(text: str) -> str:
    return text.translate(_CONTROL)


def chat_title(text: str) -> str:
    """A chat's title on one line."""
    return printable(text.replace("\n", " ")) or "(untitled)"


def when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def place(message: Message) -> str:
    """``2/3``: the message is the second of three versions (siblings)."""
    return f"{message.sibling_index + 1}/{message.sibling_count}"


def message_line(message: Message) -> str:
    """A message as ``/history`` shows it: who, how it ended if not plainly, which version
    it is when it has several (``2/3``), and its text."""
    who = "you" if message.role == "user" else "assistant"
    if message.status == "complete":
        status = _CUT_MARKS.get(message.finish_reason or "", "")
    else:
        status = f" [{message.status}]"
    if message.sibling_count > 1:
        status += f" ({place(message)})"
    return f"{who}{status}: {printable(message.content)}"


class Output:
    """The terminal: every write is flushed at once, so tokens show as they come."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    def say(self, text: str = "") -> None:
        self.write(text + "\n")
