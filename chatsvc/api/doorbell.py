"""``Doorbell``: what a socket's writer waits on between two frames.

A streaming reply posts a frame every few tens of milliseconds, and between two of
them its socket's writer waits; a socket left idle for ``linger`` seconds ends its
writer, so an idle socket holds no task. anyio's way to wait for either (an ``Event``
under ``move_on_after``) costs a backend lookup, a cancel scope and a timer per wait:
with paced streams that was twice the CPU of sending the frame (docs/performance.md,
"The socket writer and the upstream request"). Here a wait is one asyncio future, and
one timer serves every wait of ``linger`` seconds. asyncio, not anyio: uvicorn always
runs asyncio, and anyio's cancel scopes cancel a task awaiting a plain future as they
cancel any other.
"""

from __future__ import annotations

import asyncio


class Doorbell:
    """One waiter at a time: :meth:`wait` returns True when :meth:`ring` is called,
    False once it has waited ``linger`` seconds with no ring."""

    __slots__ = ("_idle_since", "_linger", "_timer", "_waiter")

    def __init__(self, linger: float) -> None:
        self._linger = linger
        self._waiter: asyncio.Future[bool] | None = None
        self._idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None

    async def wait(self) -> bool:
        """Wait for the next ring, or for ``linger`` seconds from now without one."""
        loop = asyncio.get_running_loop()
        self._idle_since = loop.time()
        if self._timer is None:
            self._timer = loop.call_at(self._idle_since + self._linger, self._check)
        self._waiter = waiter = loop.create_future()
        try:
            return await waiter
        finally:
            self._waiter = None

    def ring(self) -> None:
        """Wake the waiter, if one waits (a busy writer looks for more work by itself)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def stop(self) -> None:
        """The writer ends: no timer outlives it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        # One timer per writer: set at its first wait, later waits only move `_idle_since`.
        loop = asyncio.get_running_loop()  # a timer's callback runs on its loop
        now = loop.time()
        waiter = self._waiter
        if waiter is None:  # the writer is sending: look again a linger from now
            self._timer = loop.call_at(now + self._linger, self._check)
        elif now < (due := self._idle_since + self._linger):
            self._timer = loop.call_at(due, self._check)
        else:
            self._timer = None
            if not waiter.done():
                waiter.set_result(False)
