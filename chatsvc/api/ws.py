"""WebSocket ``/ws``: authenticated by header or ``?token=`` (see :mod:`chatsvc.api.security`).

This first version greets with ``ready`` and answers ``ping``; every frame it
cannot decode gets an ``invalid_message`` error and the socket stays open.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import WebSocket, websocket
from litestar.datastructures import State
from litestar.exceptions import WebSocketDisconnect

from chatsvc.api.security import AuthUser
from chatsvc.wire import (
    ErrorEvent,
    Limits,
    Ping,
    Pong,
    Ready,
    ServerFrame,
    decode_client_frame,
    encode_frame,
)


@websocket("/ws")
async def chat_socket(socket: WebSocket[AuthUser, Any, Any], state: State) -> None:
    settings = state.settings
    await socket.accept()

    async def send(frame: ServerFrame) -> None:
        await socket.send_data(encode_frame(frame))

    await send(
        Ready(
            session_id=str(uuid.uuid4()),
            user_id=socket.user.id,
            limits=Limits(
                max_message_chars=settings.max_message_chars,
                max_frame_bytes=settings.max_frame_bytes,
                max_concurrent_generations=settings.max_concurrent_generations,
            ),
        )
    )
    try:
        while True:
            event = await socket.receive()
            if event["type"] == "websocket.disconnect":
                return
            text = event.get("text")
            if text is None:
                await send(ErrorEvent(code="invalid_message", message="frames must be JSON text"))
                continue
            try:
                frame = decode_client_frame(text)
            except msgspec.DecodeError as exc:
                await send(ErrorEvent(code="invalid_message", message=str(exc)))
                continue
            if isinstance(frame, Ping):
                await send(Pong())
    except WebSocketDisconnect:
        return
