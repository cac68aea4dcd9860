"""The event bus between instances (chatsvc/bus.py) on real Redis and real PostgreSQL
LISTEN/NOTIFY: a reader skips what it cannot read (another program's message on the
channel, a malformed or stray chunk) and goes on reading; chunks of too many unfinished
messages do not pile up. The instances' own traffic is tests/test_scale_out.py's."""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from chatsvc.bus import ASSEMBLING, AccountChanged, BusMessage, EventBus, chat_channel
from tests.support import PG_ADMIN_URL

REDIS_URL = "redis://127.0.0.1:6379/0"
BUSES = {"redis": REDIS_URL, "postgres": PG_ADMIN_URL}
SECONDS = 10

#: Puts raw text on a channel of a bus, as another program on the same Redis or
#: database could.
Raw = Callable[[str, str], Awaitable[None]]


@asynccontextmanager
async def raw_publisher(url: str, bus: EventBus) -> AsyncGenerator[Raw]:
    if url.startswith("redis://"):
        redis = Redis.from_url(url)  # pyright: ignore[reportUnknownMemberType]
        try:

            async def publish(channel: str, text: str) -> None:
                name = bus.channel_name(channel)
                await redis.publish(name, text)  # pyright: ignore[reportUnknownMemberType]

            yield publish
        finally:
            await redis.aclose()
    else:
        connection = await asyncpg.connect(url)
        try:

            async def notify(channel: str, text: str) -> None:
                name = bus.channel_name(channel)
                await connection.execute("SELECT pg_notify($1, $2)", name, text)

            yield notify
        finally:
            await connection.close()


class Reader:
    """What one instance's ``listen`` on a channel yields, as it comes."""

    def __init__(self, bus: EventBus, channel: str) -> None:
        self.bus = bus
        self.channel = channel
        self.ready = anyio.Event()
        self.received: list[BusMessage] = []
        self._arrived = anyio.Event()

    async def run(self) -> None:
        async for message in self.bus.listen(self.channel, self.ready):
            self.received.append(message)
            self._arrived.set()
            self._arrived = anyio.Event()

    async def next_after(self, count: int) -> BusMessage:
        """The message after the first ``count`` ones."""
        with anyio.fail_after(SECONDS):
            while len(self.received) <= count:
                await self._arrived.wait()
        return self.received[count]


@asynccontextmanager
async def reading(url: str, channel: str) -> AsyncGenerator[tuple[Reader, EventBus, Raw]]:
    """A reader on ``channel`` (subscription live), another instance, and a raw publisher."""
    async with (
        EventBus.from_url(url, instance="reader") as reader_bus,
        EventBus.from_url(url, instance="writer") as writer,
        raw_publisher(url, reader_bus) as raw,
        anyio.create_task_group() as tasks,
    ):
        reader = Reader(reader_bus, channel)
        tasks.start_soon(reader.run)
        with anyio.fail_after(SECONDS):
            await reader.ready.wait()
        yield reader, writer, raw
        tasks.cancel_scope.cancel()


def chunk(origin: str, message_id: str, index: int, count: int, part: bytes) -> str:
    body = {
        "k": "chunk",
        "origin": origin,
        "id": message_id,
        "index": index,
        "count": count,
        "part": base64.b64encode(part).decode(),
    }
    return msgspec.json.encode(body).decode()


def account(user_id: int, origin: str = "writer") -> AccountChanged:
    return AccountChanged(origin=origin, user_id=user_id)


@pytest.mark.parametrize("bus", list(BUSES))
async def test_a_reader_skips_what_it_cannot_read_and_reads_on(
    bus: str, caplog: pytest.LogCaptureFixture
) -> None:
    channel = chat_channel(uuid.uuid4())
    whole = msgspec.json.encode(account(7))
    caplog.set_level(logging.WARNING, logger="chatsvc.bus")
    async with reading(BUSES[bus], channel) as (reader, writer, raw):
        await raw(channel, "not a message of ours")
        await raw(channel, '{"k": "nonsense", "origin": "elsewhere"}')
        await raw(channel, chunk("writer", "a", 0, 0, whole))  # a count no message has
        await raw(channel, chunk("writer", "b", 5, 2, whole))  # an index past the count
        await raw(channel, chunk("writer", "c", 1, 2, b"}"))  # its other half never comes
        writer.publish(channel, account(1))
        assert await reader.next_after(0) == account(1)
        # A message in two chunks still comes whole, after all that.
        half = len(whole) // 2
        await raw(channel, chunk("writer", "d", 1, 2, whole[half:]))
        await raw(channel, chunk("writer", "d", 0, 2, whole[:half]))
        assert await reader.next_after(1) == account(7)
        # The reader's own messages are not handed back to it.
        reader.bus.publish(channel, account(2, origin="reader"))
        writer.publish(channel, account(3))
        assert await reader.next_after(2) == account(3)
    assert reader.received == [account(1), account(7), account(3)]
    unreadable = [r for r in caplog.records if "ignored an unreadable message" in r.message]
    assert len(unreadable) == 2  # the text, and the unknown kind; bad chunks are dropped quietly


async def test_unfinished_chunked_messages_are_dropped_oldest_first() -> None:
    """At most ``ASSEMBLING`` messages are being put together at once: past that the oldest
    is forgotten (a writer that died half-way leaves no lasting trace)."""
    channel = chat_channel(uuid.uuid4())
    whole = msgspec.json.encode(account(9))
    half = len(whole) // 2
    async with reading(REDIS_URL, channel) as (reader, writer, raw):
        for n in range(ASSEMBLING + 1):
            await raw(channel, chunk("writer", f"m{n}", 0, 2, whole[:half]))
        await raw(channel, chunk("writer", "m1", 1, 2, whole[half:]))  # still there: complete
        await raw(channel, chunk("writer", "m0", 1, 2, whole[half:]))  # forgotten: no message
        writer.publish(channel, account(10))
        assert await reader.next_after(0) == account(9)
        assert await reader.next_after(1) == account(10)
    assert reader.received == [account(9), account(10)]
