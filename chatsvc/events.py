"""Per-chat fan-out of generation events to the sockets and SSE streams that follow a chat.

A generation publishes each event once, already encoded; every subscriber of
the chat gets the same bytes. Delivery never blocks the publisher: a
subscriber that cannot keep up handles that itself (see ``Subscriber``).
This in-process hub serves one instance; a shared event bus replaces it for
several instances.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple, Protocol
from uuid import UUID


class Event(NamedTuple):
    type: str
    task_id: UUID | None
    data: bytes

    @property
    def ends_task(self) -> bool:
        """``done``, ``aborted``, or an ``error`` that names its task."""
        return self.task_id is not None and self.type in ("done", "aborted", "error")


class Subscriber(Protocol):
    def deliver(self, event: Event) -> None:
        """Take the event without blocking (drop or disconnect when full, never wait)."""
        ...


class ChatEvents:
    def __init__(self) -> None:
        self._subscribers: defaultdict[UUID, set[Subscriber]] = defaultdict(set)

    def subscribe(self, chat_id: UUID, subscriber: Subscriber) -> None:
        self._subscribers[chat_id].add(subscriber)

    def is_subscribed(self, chat_id: UUID, subscriber: Subscriber) -> bool:
        return subscriber in self._subscribers.get(chat_id, ())

    def unsubscribe(self, chat_id: UUID, subscriber: Subscriber) -> None:
        subscribers = self._subscribers.get(chat_id)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._subscribers[chat_id]

    def unsubscribe_all(self, subscriber: Subscriber) -> None:
        for chat_id in [c for c, subs in self._subscribers.items() if subscriber in subs]:
            self.unsubscribe(chat_id, subscriber)

    def publish(self, chat_id: UUID, event: Event) -> None:
        for subscriber in tuple(self._subscribers.get(chat_id, ())):
            subscriber.deliver(event)
