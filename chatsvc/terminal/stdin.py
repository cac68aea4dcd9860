"""Standard input for the terminal client: lines read without blocking the event loop.

The prompt waits on standard input with ``loop.add_reader`` (a read only happens
once a line is there), so the client's other tasks (the WebSocket reader) run while
the user thinks. POSIX only.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import sys
from typing import TextIO


class LineReader:
    """Lines of a file descriptor, read without blocking the event loop.

    A terminal in canonical mode (the default) edits the line itself and hands it
    over on Enter; ``add_reader`` wakes us then. A regular file cannot be watched
    (epoll refuses it), but reading one never blocks, so it is read directly.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._buffer = ""
        self._eof = False
        self._waiter: asyncio.Future[str | None] | None = None

    @property
    def waiting(self) -> bool:
        return self._waiter is not None and not self._waiter.done()

    async def readline(self) -> str | None:
        """The next line without its end, or ``None`` at end of input or on :meth:`interrupt`."""
        line = self._take()
        if line is not None or self._eof:
            return line
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        watched = True
        try:
            loop.add_reader(self._fd, self._on_readable)
        except PermissionError:
            watched = False
            while not self._waiter.done():
                self._on_readable()
        try:
            return await self._waiter
        finally:
            if watched:
                loop.remove_reader(self._fd)
            self._waiter = None

    def interrupt(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the terminal went away (EIO): as good as the end of input
            data = b""
        if data:
            self._buffer += self._decoder.decode(data)
        else:
            self._eof = True
            self._buffer += self._decoder.decode(b"", final=True)
        line = self._take()
        if (line is not None or self._eof) and self._waiter is not None:
            if not self._waiter.done():
                self._waiter.set_result(line)
            elif line is not None:  # interrupted meanwhile: keep the line for the next prompt
                self._buffer = line + "\n" + self._buffer

    def _take(self) -> str | None:
        if "\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition("\n")
            return line.removesuffix("\r")
        if self._eof and self._buffer:
            line, self._buffer = self._buffer, ""
            return line
        return None


def read_line(prompt: str, fd: int = 0, out: TextIO | None = None) -> str | None:
    """Ask for one line before the client runs (the username), byte by byte.

    Reading the descriptor directly leaves the rest of the input to the prompt's
    :class:`LineReader`, where ``sys.stdin`` would buffer it away. ``None`` at the end.
    """
    stream = out or sys.stdout
    stream.write(prompt)
    stream.flush()
    data = bytearray()
    while True:
        byte = os.read(fd, 1)
        if not byte:
            if not data:
                return None
            break
        if byte == b"\n":
            break
        data += byte
    return data.decode("utf-8", "replace").removesuffix("\r")
