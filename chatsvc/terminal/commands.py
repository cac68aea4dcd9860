"""The commands of the prompt: one table, shown by ``/help`` and ``chatsvc chat --help``.

No imports beyond the standard library: the command line reads it to build its help.
"""

from __future__ import annotations

PROMPT = "you> "

#: Every command and what it does, in the order ``/help`` lists them.
COMMANDS = (
    ("/chats", "list your chats and switch to one"),
    ("/new", "start a new chat (created with your next message)"),
    ("/history", "show the messages of this chat"),
    ("/retry", "a new reply in place of the last one (the old one is kept)"),
    ("/edit", "change your last message and send it again (the old one is kept)"),
    ("/branches", "list the versions of your last message and of its reply"),
    ("/branch N", "switch to reply N; /branch message N: to your message N"),
    ("/set", "show this chat's model, temperature, top_p, max_tokens and system prompt"),
    ("/set NAME VALUE", "change one of them (/set temperature 0.3); VALUE default: the server's"),
    ("/help", "show these commands"),
    ("/quit", "leave (also Ctrl-D, or Ctrl-C at the prompt)"),
)
#: What leaves, at the prompt and when choosing a chat.
LEAVE = ("/quit", "/exit")


def is_command(text: str) -> bool:
    """A line starting with ``/`` is a command; ``//x`` sends the message ``/x``."""
    return text.startswith("/") and not text.startswith("//")


def help_lines() -> list[str]:
    """The commands, one line each, and how to send a message."""
    width = max(len(command) for command, _ in COMMANDS)
    lines = [f"  {command:<{width}}  {meaning}" for command, meaning in COMMANDS]
    return [*lines, "  anything else is sent as a message (start it with // to send a /)"]
