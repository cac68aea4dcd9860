"""The event bus between chatsvc instances, on Litestar's Channels plugin.

Instances share nothing but the database and this bus. Every channel's name
starts with the deployment's namespace (``chatsvc.<digest>``, from the database's
identity and the JWT secret, :meth:`EventBus.name_deployment`): one Redis (or bus
database) may serve several deployments, whose user ids are the same small numbers.
The channels:

- ``<namespace>.chat.<chat id>``: the events of one chat (``Envelope``), published
  by the instance running its reply and read by every instance with a socket
  following the chat;
- ``<namespace>.instance.<instance id>``: requests to one instance (``AbortRequest``,
  ``SnapshotRequest``), which it answers on the chat's channel;
- ``<namespace>.accounts``: ``AccountChanged``, read by every instance, which then
  re-checks the open sockets of that user (docs/operations.md);
- ``<namespace>.users``: ``UserEnvelope``, the events of a chat that go to every socket
  of its owner (``chat_created``, ``chat_updated``), read by every instance: they
  are few (a chat created, renamed, named or switched to another branch).

Backends (``EVENT_BUS_URL``): unset is Litestar's in-memory backend, for one
instance (nothing needs to travel, so nothing is published); ``redis://`` is
Redis pub/sub; ``postgresql://`` is PostgreSQL LISTEN/NOTIFY, whose payloads
stop at 8,000 bytes, so larger messages travel as numbered ``Chunk``s.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import Any, Self
from uuid import UUID

import anyio
import anyio.abc
import asyncpg
import msgspec
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.asyncpg import AsyncPgChannelsBackend
from litestar.channels.backends.base import ChannelsBackend
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from redis.asyncio import Redis

from chatsvc.telemetry import AbortedBy

log = logging.getLogger("chatsvc.bus")

#: PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more; stay well below.
NOTIFY_PAYLOAD_BYTES = 7_000
#: Messages read but not yet consumed, per subscription: the reader only hands them on.
BACKLOG = 10_000
#: Chunked messages being put together at once; the oldest is dropped past this.
ASSEMBLING = 256
PING_SECONDS = 3.0
#: How long an instance's start waits for the bus to confirm a channel is read.
READY_SECONDS = 5.0


class Envelope(msgspec.Struct, tag="event", tag_field="k", omit_defaults=True):
    """One chat event: ``data`` is the wire frame, already encoded, sent as is."""

    origin: str
    type: str
    task_id: UUID | None = None
    seq: int | None = None
    data: msgspec.Raw = msgspec.Raw(b"null")


class UserEnvelope(msgspec.Struct, tag="user", tag_field="k"):
    """A chat event for every socket of the chat's owner: ``data`` is the wire frame."""

    origin: str
    user_id: int
    chat_id: UUID
    type: str
    data: msgspec.Raw = msgspec.Raw(b"null")


class AbortRequest(msgspec.Struct, tag="abort", tag_field="k"):
    origin: str
    owner: int
    task_id: UUID
    by: AbortedBy


class SnapshotRequest(msgspec.Struct, tag="snapshot", tag_field="k"):
    """Answered on the chat's channel by an ``Envelope`` of type ``snapshot``."""

    origin: str
    chat_id: UUID


class AccountChanged(msgspec.Struct, tag="account", tag_field="k"):
    """A user's password, activity or staff rights changed: re-check their sockets."""

    origin: str
    user_id: int


class Probe(msgspec.Struct, tag="probe", tag_field="k"):
    """Sent by a new reader to its own channel: back at the reader, the subscription is live."""

    origin: str
    id: str


class Chunk(msgspec.Struct, tag="chunk", tag_field="k"):
    origin: str
    id: str
    index: int
    count: int
    part: str  # base64 of a slice of the encoded message


BusMessage = Envelope | UserEnvelope | AbortRequest | SnapshotRequest | AccountChanged
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(BusMessage | Probe | Chunk).decode


async def start_reader(
    task_group: anyio.abc.TaskGroup,
    read: Callable[[anyio.Event], Coroutine[Any, Any, None]],
    *,
    name: str,
    lost: str,
) -> None:
    """Start ``read`` (a reader of a channel, which sets its event once it reads) in
    ``task_group``; return once it reads, or after ``READY_SECONDS`` with an error naming
    what may be ``lost`` meanwhile: an instance starts anyway when the bus is down."""
    ready = anyio.Event()
    task_group.start_soon(read, ready, name=name)
    with anyio.move_on_after(READY_SECONDS):
        await ready.wait()
    if not ready.is_set():
        log.error("event bus: no answer in %g s; %s", READY_SECONDS, lost)


# Channel names within the deployment's namespace, which the bus puts in front.


def chat_channel(chat_id: UUID) -> str:
    return f"chat.{chat_id}"


def instance_channel(instance: str) -> str:
    return f"instance.{instance}"


ACCOUNTS_CHANNEL = "accounts"
USERS_CHANNEL = "users"


# --- backends ------------------------------------------------------------------------


class _RedisBackend(RedisChannelsPubSubBackend):
    """Redis pub/sub; a failed publish is logged, not raised into Litestar's publisher task."""

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        try:
            await super().publish(data, channels)
        except Exception as exc:  # the bus's publishing boundary: keep publishing
            log.error("event bus: could not publish to Redis: %s", type(exc).__name__)

    async def ping(self) -> None:
        await self._redis.ping()  # pyright: ignore[reportUnknownMemberType] (redis-py's **kwargs)

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        await self._redis.aclose()


class _NotifyBackend(AsyncPgChannelsBackend):
    """PostgreSQL LISTEN/NOTIFY over one listening and one publishing connection.

    Litestar's backend opens a new connection for every publish, which a stream
    of token events cannot afford; this one keeps its publishing connection.
    """

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn=dsn)
        self._publisher: asyncpg.Connection | None = None

    async def on_startup(self) -> None:
        await super().on_startup()
        self._publisher = await self._open()

    async def on_shutdown(self) -> None:
        if self._publisher is not None:
            await self._publisher.close()  # pyright: ignore[reportUnknownMemberType] (asyncpg)
        await super().on_shutdown()

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        text = data.decode()
        for attempt in (1, 2):
            try:
                if self._publisher is None or self._publisher.is_closed():
                    self._publisher = await self._open()
                for channel in channels:
                    await self._publisher.execute("SELECT pg_notify($1, $2)", channel, text)  # pyright: ignore[reportUnknownMemberType] (asyncpg)
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if attempt == 2:
                    log.error("event bus: could not NOTIFY: %s", type(exc).__name__)
                self._publisher = None

    async def ping(self) -> None:
        connection = self._publisher
        if connection is None or connection.is_closed():
            raise ConnectionError("the event bus connection is closed")
        await connection.fetchval("SELECT 1")  # pyright: ignore[reportUnknownMemberType] (asyncpg)

    async def _open(self) -> asyncpg.Connection:
        """A new connection to the bus's database (Litestar's connection factory)."""
        # Litestar types its factory as a partial of asyncpg's untyped connect.
        return await self._connect()  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]


def channels_backend(url: str | None) -> ChannelsBackend:
    """The Channels backend ``EVENT_BUS_URL`` names."""
    if url is None:
        return MemoryChannelsBackend()
    if url.startswith(("redis://", "rediss://")):
        # redis-py leaves from_url's **kwargs untyped.
        redis = Redis.from_url(url)  # pyright: ignore[reportUnknownMemberType]
        return _RedisBackend(redis=redis, key_prefix="chatsvc")
    return _NotifyBackend(url)


# --- the bus -------------------------------------------------------------------------


class EventBus(anyio.AsyncContextManagerMixin):
    """Publishing to and reading from the bus, over a ``ChannelsPlugin``.

    ``shared`` is false for the in-memory backend: with one instance, nothing
    is published and no channel is read.
    """

    def __init__(self, plugin: ChannelsPlugin, backend: ChannelsBackend, instance: str) -> None:
        self._plugin = plugin
        self._backend = backend
        self.instance = instance
        self.shared = not isinstance(backend, MemoryChannelsBackend)
        self.namespace = "chatsvc"
        self._max_payload = NOTIFY_PAYLOAD_BYTES if isinstance(backend, _NotifyBackend) else None

    @classmethod
    def from_url(cls, url: str | None, instance: str | None = None) -> EventBus:
        """``instance`` names this process on the bus (a new random id by default)."""
        backend = channels_backend(url)
        plugin = ChannelsPlugin(
            backend,
            arbitrary_channels_allowed=True,
            subscriber_max_backlog=BACKLOG,
            subscriber_backlog_strategy="backoff",
        )
        return cls(plugin, backend, instance or uuid.uuid4().hex)

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        """The plugin's backend and publisher run until the body ends."""
        async with self._plugin:
            yield self

    def name_deployment(self, database: str, secret: str | None) -> None:
        """Put this deployment's channels apart on a bus other deployments may share.

        ``database`` is the identity of the database (``chatsvc.database.identity``)
        and ``secret`` the ``JWT_SECRET``: every instance of a deployment shares both,
        and another deployment differs in at least one (a copy of production's
        database has its own secret), so the namespace made of their digest is the
        same on every instance of this one and different on any other. Without a
        ``JWT_SECRET`` (each process makes up its own) the database alone names it.
        Called before the bus starts.
        """
        digest = hashlib.sha256(f"{database}\n{secret or ''}".encode()).hexdigest()
        # 12 hex digits keep the longest name (an instance's) at 62 bytes, under
        # PostgreSQL's 63 for a LISTEN channel.
        self.namespace = f"chatsvc.{digest[:12]}"

    def channel_name(self, channel: str) -> str:
        """``channel``'s name on the bus: within this deployment's namespace."""
        return f"{self.namespace}.{channel}"

    @property
    def kind(self) -> str:
        if not self.shared:
            return "memory"
        return "postgresql" if self._max_payload is not None else "redis"

    async def ping(self) -> None:
        """One round trip to the bus; raises when it cannot be reached."""
        ping = getattr(self._backend, "ping", None)
        if ping is not None:
            with anyio.fail_after(PING_SECONDS):
                await ping()

    def publish(self, channel: str, message: BusMessage) -> None:
        """Queue ``message`` for ``channel``; messages of one instance keep their order."""
        if not self.shared:
            return
        channel = self.channel_name(channel)
        data = _encode(message)
        if self._max_payload is None or len(data) <= self._max_payload:
            self._send(data, channel)
            return
        for chunk in _chunks(data, self.instance, self._max_payload):
            self._send(chunk, channel)

    def _send(self, data: bytes, channel: str) -> None:
        # Litestar's publish takes any encodable value, a union with unknown parts.
        self._plugin.publish(data, channel)  # pyright: ignore[reportUnknownMemberType]

    async def listen(self, channel: str, ready: anyio.Event) -> AsyncGenerator[BusMessage]:
        """The messages of other instances on ``channel``, put back together.

        ``ready`` is set once the subscription is live: a message published after
        that is read. Redis confirms a SUBSCRIBE only on the subscribing connection,
        after the call returned, so the reader sends itself a ``Probe`` and waits
        for it to come back.
        """
        channel = self.channel_name(channel)
        subscriber = await self._plugin.subscribe(channel)
        assembling: OrderedDict[tuple[str, str], list[str | None]] = OrderedDict()
        probe = Probe(origin=self.instance, id=uuid.uuid4().hex)
        try:
            self._send(_encode(probe), channel)
            async for data in subscriber.iter_events():
                try:
                    message = _decode(data)
                    if isinstance(message, Chunk):
                        whole = _assemble(assembling, message)
                        if whole is None:
                            continue
                        message = _decode(whole)
                except msgspec.DecodeError:
                    log.warning("event bus: ignored an unreadable message on %s", channel)
                    continue
                if isinstance(message, Probe):
                    if message == probe:
                        ready.set()
                elif message.origin != self.instance and not isinstance(message, Chunk):
                    yield message
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(PING_SECONDS):
                await self._plugin.unsubscribe(subscriber, channel)


def _chunks(data: bytes, origin: str, max_payload: int) -> list[bytes]:
    # base64 grows 4/3; the rest of a chunk is well under 200 bytes.
    size = (max_payload - 200) * 3 // 4
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    message_id = uuid.uuid4().hex
    return [
        _encode(
            Chunk(
                origin=origin,
                id=message_id,
                index=index,
                count=len(parts),
                part=base64.b64encode(part).decode(),
            )
        )
        for index, part in enumerate(parts)
    ]


def _assemble(
    assembling: OrderedDict[tuple[str, str], list[str | None]], chunk: Chunk
) -> bytes | None:
    """Add a chunk; the whole message once its last chunk is in."""
    key = (chunk.origin, chunk.id)
    parts = assembling.get(key)
    if parts is None:
        if not 0 < chunk.count <= 10_000:
            return None
        parts = assembling[key] = [None] * chunk.count
        while len(assembling) > ASSEMBLING:
            assembling.popitem(last=False)
    if not 0 <= chunk.index < len(parts):
        return None
    parts[chunk.index] = chunk.part
    if any(part is None for part in parts):
        return None
    del assembling[key]
    return b"".join(base64.b64decode(part) for part in parts if part is not None)
