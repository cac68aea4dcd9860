"""Per-chat fan-out of generation events to the sockets and SSE streams that follow a chat,
and per-user fan-out of chat events to every socket of the chat's owner.

A generation publishes each event once, already encoded; every subscriber of
the chat gets the same bytes. Delivery never blocks the publisher: a
subscriber that cannot keep up handles that itself (see ``Subscriber``).

Events about the chat itself (``chat_created``, ``chat_updated``) go further,
to every open socket of its owner (``publish_to_owner``; docs/protocol.md
section 4.2), so a tab that shows the chat list but follows no chat sees a new
chat or title. A socket joins its user's set for as long as it is open
(``join``/``leave``); one that also follows the chat gets such an event once,
as a follower. With a shared event bus these events also go out on one channel
for every instance (``USERS_CHANNEL``: they are few), read from start to stop.

Subscribers on this instance get an event straight from the publisher. With
a shared event bus the event also goes out on the chat's channel, and while
this instance has subscribers of a chat it reads that channel (a *feed*), so
events of replies running on other instances reach them too. A subscriber
that joins a reply running elsewhere waits behind a ``_SnapshotGate`` until
the owner's snapshot arrives (see ``follow_remote``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import NamedTuple, Protocol, Self, cast
from uuid import UUID

import anyio
import anyio.abc
import msgspec

from chatsvc.bus import (
    USERS_CHANNEL,
    Envelope,
    EventBus,
    SnapshotRequest,
    UserEnvelope,
    chat_channel,
    instance_channel,
    start_reader,
)
from chatsvc.tasks import background_tasks
from chatsvc.wire import EventType, encode_frame

log = logging.getLogger("chatsvc.events")

#: How long a subscriber waits for the snapshot of a reply running on another
#: instance before asking again, and how many times it asks.
SNAPSHOT_WAIT_SECONDS = 2.0
SNAPSHOT_ASKS = 3
#: Events held for a subscriber waiting for a snapshot (a snapshot is due in a round trip).
GATE_EVENTS = 5_000


class Event(NamedTuple):
    type: EventType
    task_id: UUID | None
    data: bytes
    seq: int | None = None

    @property
    def ends_task(self) -> bool:
        """``done``, ``aborted``, or an ``error`` that names its task."""
        return self.task_id is not None and self.type in ("done", "aborted", "error")


def event_of(frame: msgspec.Struct) -> Event:
    """The event of a server frame, encoded once for every subscriber."""
    # msgspec types a tag as str | int | None; a server frame's is one of EventType.
    tag = cast(EventType, type(frame).__struct_config__.tag)
    return Event(
        tag,
        getattr(frame, "task_id", None),
        encode_frame(frame),
        getattr(frame, "seq", None),
    )


class Subscriber(Protocol):
    def deliver(self, event: Event) -> None:
        """Take the event without blocking (drop or disconnect when full, never wait)."""
        ...


class _Feed:
    """This instance reading one chat's channel on the bus."""

    def __init__(self) -> None:
        self.ready = anyio.Event()
        self.scope = anyio.CancelScope()


class ChatEvents(anyio.AsyncContextManagerMixin):
    """The subscribers of each chat; ``async with`` runs the bus readers it starts."""

    def __init__(self, bus: EventBus | None = None) -> None:
        self._subscribers: defaultdict[UUID, set[Subscriber]] = defaultdict(set)
        self._users: dict[int, set[Subscriber]] = {}  # the open sockets of each user
        self._bus = bus
        self._feeds: dict[UUID, _Feed] = {}
        self._task_group: anyio.abc.TaskGroup | None = None

    @property
    def _shared(self) -> bool:
        return self._bus is not None and self._bus.shared

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        """The feeds and snapshot requests run in this task group until the body ends."""
        async with background_tasks() as self._task_group:
            if self._shared:
                await start_reader(
                    self._task_group,
                    self._read_users,
                    name="user events",
                    lost="chat events of other instances may not reach sockets that follow no chat",
                )
            yield self

    def when_set(self, event: anyio.Event, then: Callable[[], object]) -> None:
        """Call ``then`` once ``event`` is set (or never, if the hub stops first).

        An SSE stream ends with its reply: a reply stopped with the server ends
        without a terminal event, so the stream is closed when the reply finishes.
        """
        assert self._task_group is not None
        self._task_group.start_soon(self._call_when_set, event, then)

    @staticmethod
    async def _call_when_set(event: anyio.Event, then: Callable[[], object]) -> None:
        await event.wait()
        then()

    # --- subscribing ------------------------------------------------------------------

    def subscribe(self, chat_id: UUID, subscriber: Subscriber) -> None:
        self._subscribers[chat_id].add(subscriber)
        if self._shared and chat_id not in self._feeds and self._task_group is not None:
            feed = self._feeds[chat_id] = _Feed()
            self._task_group.start_soon(self._read_feed, chat_id, feed)

    async def follow(self, chat_id: UUID, subscriber: Subscriber) -> None:
        """Subscribe, and return once events from other instances reach the subscriber too."""
        self.subscribe(chat_id, subscriber)
        await self.feed_ready(chat_id)

    async def feed_ready(self, chat_id: UUID) -> None:
        """Return once this instance reads the chat's channel (at once without a bus)."""
        feed = self._feeds.get(chat_id)
        if feed is not None:
            with anyio.move_on_after(SNAPSHOT_WAIT_SECONDS):
                await feed.ready.wait()

    async def follow_remote(
        self, chat_id: UUID, subscriber: Subscriber, *, task_id: UUID, owner_instance: str
    ) -> None:
        """Follow a chat whose reply ``task_id`` runs on another instance.

        The subscriber first gets that instance's ``snapshot``, then the events
        after it: events that arrive before the snapshot are held, and the
        tokens it already contains are dropped (by ``seq``).
        """
        assert self._task_group is not None
        gate = _SnapshotGate(self, chat_id, subscriber, task_id)
        await self.follow(chat_id, gate)
        self._task_group.start_soon(self._ask_for_snapshot, gate, owner_instance)

    def is_subscribed(self, chat_id: UUID, subscriber: Subscriber) -> bool:
        subscribers = self._subscribers.get(chat_id, ())
        return subscriber in subscribers or any(
            isinstance(s, _SnapshotGate) and s.subscriber is subscriber for s in subscribers
        )

    def unsubscribe(self, chat_id: UUID, subscriber: Subscriber) -> None:
        subscribers = self._subscribers.get(chat_id)
        if subscribers is None:
            return
        subscribers.discard(subscriber)
        for gate in [s for s in subscribers if isinstance(s, _SnapshotGate)]:
            if gate.subscriber is subscriber:
                subscribers.discard(gate)
        if not subscribers:
            del self._subscribers[chat_id]
            feed = self._feeds.pop(chat_id, None)
            if feed is not None:
                feed.scope.cancel()

    def unsubscribe_all(self, subscriber: Subscriber) -> None:
        for chat_id in [c for c in self._subscribers if self.is_subscribed(c, subscriber)]:
            self.unsubscribe(chat_id, subscriber)

    def swap_subscriber(self, chat_id: UUID, old: Subscriber, new: Subscriber) -> None:
        """Put ``new`` in ``old``'s place among the chat's subscribers, if ``old`` is one."""
        subscribers = self._subscribers.get(chat_id)
        if subscribers is not None and old in subscribers:
            subscribers.discard(old)
            subscribers.add(new)

    # --- the owner's sockets ----------------------------------------------------------

    def join(self, user_id: int, socket: Subscriber) -> None:
        """An open socket of the user: it gets the events of every chat of the user."""
        self._users.setdefault(user_id, set()).add(socket)

    def leave(self, user_id: int, socket: Subscriber) -> None:
        sockets = self._users.get(user_id)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self._users[user_id]

    def publish_to_owner(self, owner: int, chat_id: UUID, event: Event) -> None:
        """To the chat's subscribers, and to every socket of its owner, on every instance."""
        self.publish(chat_id, event)
        self._deliver_to_owner(owner, chat_id, event)
        if self._shared:
            assert self._bus is not None
            envelope = UserEnvelope(
                origin=self._bus.instance,
                user_id=owner,
                chat_id=chat_id,
                type=event.type,
                data=msgspec.Raw(event.data),
            )
            self._bus.publish(USERS_CHANNEL, envelope)

    def _deliver_to_owner(self, owner: int, chat_id: UUID, event: Event) -> None:
        """The owner's sockets that do not follow the chat: the others have it already."""
        for socket in tuple(self._users.get(owner, ())):
            if not self.is_subscribed(chat_id, socket):
                socket.deliver(event)

    # --- publishing -------------------------------------------------------------------

    def publish(self, chat_id: UUID, event: Event) -> None:
        self._deliver(chat_id, event)
        if self._shared:
            assert self._bus is not None
            self._bus.publish(chat_channel(chat_id), self._envelope(event))

    def publish_remote(self, chat_id: UUID, event: Event) -> None:
        """Only to other instances (a snapshot asked for, an end they must hear of)."""
        if self._shared:
            assert self._bus is not None
            self._bus.publish(chat_channel(chat_id), self._envelope(event))

    def _envelope(self, event: Event) -> Envelope:
        assert self._bus is not None
        return Envelope(
            origin=self._bus.instance,
            type=event.type,
            task_id=event.task_id,
            seq=event.seq,
            data=msgspec.Raw(event.data),
        )

    def _deliver(self, chat_id: UUID, event: Event) -> None:
        for subscriber in tuple(self._subscribers.get(chat_id, ())):
            if event.type == "snapshot" and not isinstance(subscriber, _SnapshotGate):
                continue  # a snapshot from the bus answers a waiting subscriber only
            subscriber.deliver(event)

    # --- the bus ----------------------------------------------------------------------

    async def _read_feed(self, chat_id: UUID, feed: _Feed) -> None:
        assert self._bus is not None
        with feed.scope:
            try:
                messages = self._bus.listen(chat_channel(chat_id), feed.ready)
                async with aclosing(messages):
                    async for message in messages:
                        if isinstance(message, Envelope):
                            # Instances of one deployment publish the same frame types.
                            kind = cast(EventType, message.type)
                            data = bytes(message.data)
                            self._deliver(chat_id, Event(kind, message.task_id, data, message.seq))
            except Exception:  # this feed's error boundary: local delivery goes on
                log.exception("event bus: stopped reading chat %s", chat_id)
        if self._feeds.get(chat_id) is feed:
            del self._feeds[chat_id]

    async def _read_users(self, ready: anyio.Event) -> None:
        """Chat events of other instances for the owner's sockets here (followers of the
        chat get them on the chat's channel)."""
        assert self._bus is not None
        try:
            messages = self._bus.listen(USERS_CHANNEL, ready)
            async with aclosing(messages):
                async for message in messages:
                    if isinstance(message, UserEnvelope) and message.user_id in self._users:
                        kind = cast(EventType, message.type)
                        event = Event(kind, None, bytes(message.data))
                        self._deliver_to_owner(message.user_id, message.chat_id, event)
        except Exception:  # this reader's error boundary: local delivery goes on
            log.exception("event bus: stopped reading user events")

    async def _ask_for_snapshot(self, gate: _SnapshotGate, owner_instance: str) -> None:
        assert self._bus is not None
        request = SnapshotRequest(origin=self._bus.instance, chat_id=gate.chat_id)
        for _ in range(SNAPSHOT_ASKS):
            self._bus.publish(instance_channel(owner_instance), request)
            with anyio.move_on_after(SNAPSHOT_WAIT_SECONDS):
                await gate.opened.wait()
                return
            if not self.is_subscribed(gate.chat_id, gate.subscriber):
                return
        log.warning("event bus: no snapshot of chat %s came from %s", gate.chat_id, owner_instance)
        gate.open(None)


class _SnapshotGate:
    """Holds one subscriber's events of a chat until the snapshot of its running reply."""

    def __init__(self, hub: ChatEvents, chat_id: UUID, subscriber: Subscriber, task_id: UUID):
        self._hub = hub
        self.chat_id = chat_id
        self.subscriber = subscriber
        self.task_id = task_id
        self.opened = anyio.Event()
        self._held: list[Event] = []

    def deliver(self, event: Event) -> None:
        if event.type == "snapshot":
            self.open(event)
            return
        self._held.append(event)
        if len(self._held) > GATE_EVENTS:
            self.open(None)

    def open(self, snapshot: Event | None) -> None:
        """Hand over: the snapshot (if one came and a reply runs), then what came after it."""
        if self.opened.is_set():
            return
        self.opened.set()
        self._hub.swap_subscriber(self.chat_id, self, self.subscriber)
        running = snapshot is not None and snapshot.data != b"null"
        last = -1
        if running:
            assert snapshot is not None
            self.task_id, last = snapshot.task_id, snapshot.seq if snapshot.seq is not None else -1
            self.subscriber.deliver(snapshot)
        for event in self._held:
            if event.task_id == self.task_id and event.seq is not None and event.seq <= last:
                continue  # already in the snapshot
            if event.seq is not None and not running:
                continue  # tokens without their beginning: the terminal event has the text
            self.subscriber.deliver(event)
        self._held.clear()
