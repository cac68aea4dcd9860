"""The other instances, over the event bus: aborting and following their replies,
answering their requests about ours, and telling of replies whose instance stopped.

The registry stays per process; a reply's row records the instance running it
(docs/architecture.md, "Several instances"). Without a shared bus there are no peers:
every method here then finds nothing and sends nothing.
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from uuid import UUID

import anyio
import anyio.abc

from chatsvc import store
from chatsvc.bus import AbortRequest, EventBus, SnapshotRequest, instance_channel, start_reader
from chatsvc.events import ChatEvents, Event, Subscriber, event_of
from chatsvc.generation import frames
from chatsvc.generation.reply import Aborting, Running
from chatsvc.instances import Lease
from chatsvc.records import InterruptedReply
from chatsvc.telemetry import AbortedBy
from chatsvc.wire import encode_frame

log = logging.getLogger("chatsvc.generation")


class Peers:
    """This instance's side of the requests between instances about running replies."""

    def __init__(self, bus: EventBus, events: ChatEvents, lease: Lease, running: Running) -> None:
        self._bus = bus
        self._events = events
        self._lease = lease
        self._running = running

    # --- asking others ------------------------------------------------------------------

    async def follow(self, chat_id: UUID, owner: int, subscriber: Subscriber) -> bool:
        """Follow the chat's reply if it runs on another instance (the snapshot comes from
        there, later); false when it runs nowhere else."""
        if self._running.in_chat(chat_id) is not None or not self._bus.shared:
            return False
        running = await store.find_running(
            owner, task_id=None, chat_id=chat_id, live_after=self._lease.live_after()
        )
        if (
            running is None
            or running.instance == self._lease.id
            or self._running.in_chat(chat_id) is not None  # started here meanwhile
        ):
            return False
        await self._events.follow_remote(
            chat_id, subscriber, task_id=running.task_id, owner_instance=running.instance
        )
        return True

    async def abort(
        self, owner: int, *, task_id: UUID | None, chat_id: UUID | None, by: AbortedBy
    ) -> Aborting | None:
        """Ask the instance running ``owner``'s reply to abort it; none when no other does."""
        if not self._bus.shared:
            return None
        running = await store.find_running(
            owner, task_id=task_id, chat_id=chat_id, live_after=self._lease.live_after()
        )
        if running is None or running.instance == self._lease.id:
            return None
        aborting = Aborting(self._events, running.task_id, running.chat, running.id)
        await self._events.feed_ready(running.chat)
        request = AbortRequest(origin=self._lease.id, owner=owner, task_id=running.task_id, by=by)
        self._bus.publish(instance_channel(running.instance), request)
        return aborting

    async def announce_interrupted(self, replies: list[InterruptedReply]) -> None:
        """Subscribers of a reply interrupted by its instance's end hear that it ended."""
        for reply in replies:
            if reply.task_id is None:
                continue
            frame = frames.interrupted(reply.task_id, reply.chat)
            self._events.publish(reply.chat, event_of(frame))

    # --- answering others ---------------------------------------------------------------

    async def start_serving(self, task_group: anyio.abc.TaskGroup) -> None:
        """Answer other instances; wait a while for the bus, and start anyway if it is down."""
        await start_reader(
            task_group, self._serve, name="bus requests", lost="requests from others may be lost"
        )

    async def _serve(self, ready: anyio.Event) -> None:
        """Requests of other instances about the replies running here."""
        requests = self._bus.listen(instance_channel(self._lease.id), ready)
        async with aclosing(requests):
            async for request in requests:
                match request:
                    case AbortRequest():
                        generation = self._running.of_task(request.task_id)
                        if generation is not None and generation.owner == request.owner:
                            generation.abort(request.by)
                    case SnapshotRequest():
                        self._answer_snapshot(request.chat_id)
                    case _:  # the instance channel carries nothing else
                        pass

    def _answer_snapshot(self, chat_id: UUID) -> None:
        """The snapshot goes out on the chat's channel, in order with the tokens after it."""
        generation = self._running.in_chat(chat_id)
        if generation is None or generation.finished.is_set():
            self._events.publish_remote(chat_id, Event("snapshot", None, b"null"))
            return
        snapshot = frames.snapshot(generation)
        self._events.publish_remote(
            chat_id, Event("snapshot", generation.task_id, encode_frame(snapshot), generation.seq)
        )
