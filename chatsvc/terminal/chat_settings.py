"""``/set``: show or change the open chat's generation settings with ``PATCH
/api/chats/{id}`` (docs/protocol.md section 3, "Generation settings").

``/set`` alone shows them; ``/set temperature 0.3``, ``/set top_p 0.9``, ``/set max_tokens
500``, ``/set model NAME`` and ``/set system TEXT`` (the system prompt, the rest of the
line) change one; ``default`` returns it to the server's. The server checks the values:
its refusal is the one line shown.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from chatsvc.terminal.current import Current
from chatsvc.terminal.rest import Api
from chatsvc.terminal.screen import printable
from chatsvc.wire import Chat, ChatUpdate, ChatWithMessages

SET_USAGE = (
    "/set NAME VALUE: NAME is temperature (0-2), top_p (over 0, at most 1), max_tokens, "
    "model or system (the system prompt); VALUE default returns it to the server's"
)
#: The word that returns a setting to the server's default (``null``).
DEFAULT = "default"
#: What ``/set`` takes, the field each one changes, and how its value is read.
_NUMBERS: dict[str, type[float] | type[int]] = {
    "temperature": float,
    "top_p": float,
    "max_tokens": int,
}
_NAMES = {"system": "system_prompt", "system_prompt": "system_prompt", "model": "model"}


class _Session(Protocol):
    """What ``/set`` needs of the client."""

    chat: Current

    @property
    def api(self) -> Api: ...

    def say(self, text: str = "") -> None: ...


def parse(text: str) -> ChatUpdate:
    """``NAME VALUE`` as the change it asks for; ``ValueError`` says what is wrong."""
    name, _, value = text.strip().partition(" ")
    name, value = name.lower(), value.strip()
    if name not in _NUMBERS and name not in _NAMES:
        raise ValueError(SET_USAGE)
    if not value:
        raise ValueError(f"/set {name} needs a value, or {DEFAULT}")
    reset = value.lower() == DEFAULT
    field = _NAMES.get(name, name)
    chosen: Any = value
    if reset:
        chosen = "" if field == "system_prompt" else None
    elif name in _NUMBERS:
        kind = _NUMBERS[name]
        try:
            chosen = kind(value)
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise ValueError(f"{name}: {noun}, or {DEFAULT}") from None
    try:  # the wire type's bounds, checked here too: the server's words, before a request
        return msgspec.convert({field: chosen}, ChatUpdate)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{name}: {str(exc).split(' - at ')[0]}") from None


def setting_lines(chat: Chat) -> list[str]:
    """The chat's settings, ``default`` for each the server decides."""

    def shown(value: object) -> str:
        return DEFAULT if value is None else printable(str(value))

    prompt = chat.system_prompt
    return [
        f"  model        {shown(chat.model)}",
        f"  temperature  {shown(chat.temperature)}",
        f"  top_p        {shown(chat.top_p)}",
        f"  max_tokens   {shown(chat.max_tokens)}",
        f"  system       {printable(prompt) if prompt else DEFAULT}",
    ]


async def set_command(session: _Session, text: str) -> None:
    """Run ``/set`` with the rest of its line."""
    chat_id = session.chat.id
    if chat_id is None:
        session.say("! this chat is created with your next message; /set works once it exists")
        return
    if not text.strip():
        chat = await session.api.call(
            "GET", f"/api/chats/{chat_id}", ChatWithMessages, params={"limit": 1}
        )
        session.say("This chat's settings (default: the server's):")
    else:
        try:
            change = parse(text)
        except ValueError as exc:
            session.say(f"! {exc}")
            return
        chat = await session.api.call("PATCH", f"/api/chats/{chat_id}", Chat, body=change)
        session.say("Saved; the next reply uses them:")
    for line in setting_lines(chat):
        session.say(line)
