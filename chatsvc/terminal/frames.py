"""The server's WebSocket frames as the terminal client reads them.

A frame is decoded into the ``ServerFrame`` union of :mod:`chatsvc.wire`; one that a
newer server sends and the union cannot read still says what matters (:class:`Loose`).
Event names come from the wire types' tags, never spelled out here.
"""

from __future__ import annotations

import uuid

import msgspec

from chatsvc.wire import Aborted, ChatCreated, Done, ErrorEvent, ServerFrame


def tag(event: type[msgspec.Struct]) -> str:
    """An event type's name on the wire (its ``type`` field)."""
    return str(event.__struct_config__.tag)


#: The events that end a reply.
END_EVENTS = (Done, Aborted, ErrorEvent)
END_TYPES = frozenset(tag(event) for event in END_EVENTS)
CHAT_CREATED = tag(ChatCreated)


class _ChatRef(msgspec.Struct):
    id: uuid.UUID
    title: str = ""


class Loose(msgspec.Struct):
    """A frame of a newer server that ``ServerFrame`` cannot read: what still matters."""

    type: str = ""
    task_id: uuid.UUID | None = None
    request_id: str | None = None
    chat: _ChatRef | None = None


_decode_frame = msgspec.json.Decoder(ServerFrame).decode
_decode_loose = msgspec.json.Decoder(Loose).decode
encode = msgspec.json.Encoder().encode


def decode(data: str | bytes) -> ServerFrame | Loose | None:
    """The frame, as much of it as can be read; ``None`` when it is no JSON object."""
    try:
        return _decode_frame(data)
    except msgspec.DecodeError:
        try:
            return _decode_loose(data)
        except msgspec.DecodeError:
            return None
