"""A real WebSocket client of ``/ws``, with helpers to read its events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.support.users import User

Frame = dict[str, Any]
TERMINAL = ("done", "aborted", "error")


class Socket:
    """A real WebSocket client of ``/ws``, with helpers to read events."""

    def __init__(self, user: User) -> None:
        self.user = user
        # No high-water mark: past `max_queue` unread frames websockets stops reading, and
        # a test that leaves a reply's frames unread then waited `close_timeout` (10 s) in
        # `close()` for the server's close frame behind them.
        self._connection = connect(
            f"{user.server.ws_url}?token={user.token}", max_size=None, max_queue=None
        )
        self.ws: ClientConnection = self._connection.__enter__()
        #: Every frame received, also those that ``start`` and ``until`` passed over.
        self.received: list[Frame] = []
        self.ready = self.recv()
        assert self.ready["type"] == "ready", self.ready

    def send(self, **frame: Any) -> None:
        self.ws.send(json.dumps(frame))

    def send_raw(self, data: str | bytes) -> None:
        self.ws.send(data)

    def recv(self, timeout: float = 20) -> Frame:
        frame: Frame = json.loads(self.ws.recv(timeout=timeout))
        self.received.append(frame)
        return frame

    def until(self, stop: Callable[[Frame], bool], timeout: float = 30) -> list[Frame]:
        """Every frame up to and including the first one ``stop`` accepts."""
        frames: list[Frame] = []
        deadline = time.monotonic() + timeout
        while True:
            frames.append(self.recv(timeout=max(0.1, deadline - time.monotonic())))
            if stop(frames[-1]):
                return frames

    def until_end(self, task_id: str, timeout: float = 30) -> list[Frame]:
        return self.until(lambda f: f.get("task_id") == task_id and f["type"] in TERMINAL, timeout)

    def start(self, content: str, **fields: Any) -> Frame:
        """Send a message and read up to its ``started`` event."""
        self.send(action="send_message", content=content, **fields)
        frames = self.until(lambda f: f["type"] in ("started", "error"))
        assert frames[-1]["type"] == "started", frames
        return frames[-1]

    def close(self) -> None:
        self._connection.__exit__(None, None, None)

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def tokens_of(frames: list[Frame], task_id: str) -> list[Frame]:
    return [f for f in frames if f["type"] == "token" and f["task_id"] == task_id]
