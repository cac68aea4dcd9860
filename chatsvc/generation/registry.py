"""The registry of the replies running on this process (``Generations``): the task group
they run in, and the use cases on running replies: follow, abort, stop, interrupt all.

The life of one reply on one process: ``Launcher.start`` (``launch.py``) admits it,
stores the user's message and an empty ``streaming`` reply in one transaction,
publishes ``message`` and ``started``, and hands it to the registry, which starts
``Runner.run`` in the task group: the runner runs the ``Conversation`` in the reply's
scope, then stores the reply once and announces its end. An abort cancels that scope
(``runner.py`` says why that is enough).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Self
from uuid import UUID

import anyio
import anyio.abc

from chatsvc import store
from chatsvc.bus import EventBus
from chatsvc.context import ContextBudgets
from chatsvc.errors import InternalError, NotFound, NotRunning
from chatsvc.events import ChatEvents, Subscriber
from chatsvc.generation import frames
from chatsvc.generation.checkpoints import save_partial_replies
from chatsvc.generation.conversation import Conversation
from chatsvc.generation.launch import Launcher
from chatsvc.generation.naming import Naming
from chatsvc.generation.peers import Peers
from chatsvc.generation.reply import Aborting, Generation, Running
from chatsvc.generation.runner import Runner
from chatsvc.instances import Lease
from chatsvc.mappers import message_from_record
from chatsvc.providers import LLMProvider
from chatsvc.quotas import Quotas
from chatsvc.settings import Settings
from chatsvc.tasks import background_tasks
from chatsvc.telemetry import AbortedBy, Telemetry
from chatsvc.trees import Trees
from chatsvc.wire import Message, Snapshot

log = logging.getLogger("chatsvc.generation")


class Generations(anyio.AsyncContextManagerMixin):
    """The registry of running generations and the task group they run in."""

    def __init__(
        self,
        settings: Settings,
        provider: LLMProvider,
        events: ChatEvents,
        bus: EventBus,
        telemetry: Telemetry | None = None,
        trees: Trees | None = None,
        budgets: ContextBudgets | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self._settings = settings
        self._events = events
        self._bus = bus
        self._lease = Lease(bus.instance, settings.instance_lease_seconds)
        self._telemetry = telemetry or Telemetry()
        self._running = Running()
        self._peers = Peers(bus, events, self._lease, self._running)
        budgets = budgets or ContextBudgets(settings.context_budget_tokens, settings.llm_max_tokens)
        tools = trees if settings.tree_tools else None  # none: the model is offered no tools
        talk = Conversation(settings, provider, events, self._telemetry, budgets, tools)
        self._naming = Naming(provider, events)
        self._runner = Runner(
            settings,
            talk,
            events,
            self._telemetry,
            leave=self._running.remove,
            completed=self._name_chat if settings.auto_titles else None,
        )
        self._task_group: anyio.abc.TaskGroup | None = None
        self.launcher = Launcher(
            settings,
            running=self._running,
            lease=self._lease,
            conversation=talk,
            events=events,
            telemetry=self._telemetry,
            run=self._run,
            quotas=quotas,
        )
        """Starts the replies this registry runs (handlers send messages through it)."""

    @property
    def instance(self) -> str:
        return self._lease.id

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        """Hold the lease and run the task group of the replies until the body ends.

        What was entered is undone in reverse however entering or the body ends:
        the task group is always exited (its tasks cancelled), then the lease dropped.
        """
        await self._lease.take()
        try:
            # Without a shared bus this is the only instance: whatever still streams is a
            # crashed predecessor's, however fresh its lease (issue 12).
            announce = self._peers.announce_interrupted
            await self._lease.recover(announce, alone=not self._bus.shared)
            async with self._tasks():
                yield self
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self._lease.drop()

    @asynccontextmanager
    async def _tasks(self) -> AsyncGenerator[None]:
        """The task group of the replies and the background loops, cancelled when the body ends
        (the replies still running end ``interrupted``)."""
        async with background_tasks() as task_group:
            self._task_group = task_group
            try:
                seconds = self._settings.checkpoint_seconds
                task_group.start_soon(
                    save_partial_replies, self._running, seconds, name="checkpoints"
                )
                announce = self._peers.announce_interrupted
                task_group.start_soon(self._lease.keep, announce, name="lease")
                if self._bus.shared:
                    await self._peers.start_serving(task_group)
                yield
            finally:
                if self._running:
                    running = len(self._running)
                    log.info("shutting down: interrupting %d running generations", running)

    def _run(self, generation: Generation) -> None:
        """The reply's task (``Runner.run``) in the task group (``Launcher`` calls it)."""
        assert self._task_group is not None
        name = f"generation {generation.task_id}"
        self._task_group.start_soon(self._runner.run, generation, name=name)

    def _name_chat(self, generation: Generation) -> None:
        """After a reply completed (its ``done`` is out): a chat still titled with its
        first words is named by the model, in the task group, never on the reply's path."""
        if generation.wants_title and self._task_group is not None:
            name = f"title {generation.chat_id}"
            self._task_group.start_soon(self._naming.name, generation, name=name)

    # --- follow ---------------------------------------------------------------------------

    async def follow(self, chat_id: UUID, owner: int, subscriber: Subscriber) -> Snapshot | None:
        """Subscribe to a chat; if a reply streams there, what it has said so far.

        For a reply running here, subscribing and reading its text happen without
        an await in between, and events are published in the same way, so the
        next event the subscriber gets is the one numbered ``seq + 1``: no gap, no
        duplicate. For a reply running on another instance, the snapshot comes
        from there, later, and the events hub keeps the same promise.
        """
        if await self._peers.follow(chat_id, owner, subscriber):
            return None
        generation = self._running.in_chat(chat_id)
        self._events.subscribe(chat_id, subscriber)
        if generation is not None and not generation.finished.is_set():
            return frames.snapshot(generation)
        await self._events.feed_ready(chat_id)
        return None

    # --- abort and stop ---------------------------------------------------------------------

    async def abort(
        self,
        owner: int,
        *,
        task_id: UUID | None = None,
        chat_id: UUID | None = None,
        by: AbortedBy = "socket",
    ) -> Aborting:
        """Cancel a running reply of ``owner``'s, here or on another instance.

        ``NotRunning`` for anything else, but ``NotFound`` when ``chat_id`` names a chat
        that is not ``owner``'s (as ``subscribe`` and ``send_message`` answer). The
        handle tells how the reply ended.
        """
        if task_id is not None:
            generation = self._running.of_task(task_id)
        else:
            generation = self._running.in_chat(chat_id) if chat_id is not None else None
        if generation is not None and generation.owner == owner:
            ids = generation.task_id, generation.chat_id, generation.message_id
            aborting = Aborting(self._events, *ids)
            generation.abort(by)
            return aborting
        aborting = await self._peers.abort(owner, task_id=task_id, chat_id=chat_id, by=by)
        if aborting is not None:
            return aborting
        # Only on this path, so an abort that finds its reply waits for no query.
        if chat_id is not None and await store.get_chat(owner, chat_id) is None:
            raise NotFound("chat not found")
        raise NotRunning("no reply is being generated there")

    async def interrupt_all(self) -> int:
        """Stop every running reply as ``interrupted`` and wait until each is stored.

        Called first when the server stops, before sockets are closed, so that
        what is stored is what the clients were sent.
        """
        self.launcher.close()
        running = list(self._running)
        for generation in running:
            generation.interrupt()
        for generation in running:
            await generation.finished.wait()
        return len(running)

    async def stop(
        self, owner: int, chat_id: UUID, *, by: AbortedBy = "rest"
    ) -> tuple[UUID, Message] | None:
        """Abort the reply running in the chat, if any, and wait until it is stored.

        Gives the task id and the stored reply.
        """
        try:
            aborting = await self.abort(owner, chat_id=chat_id, by=by)
        except NotRunning:
            return None
        with anyio.move_on_after(self._settings.shutdown_timeout):
            await aborting.ended()
        generation = self._running.of_task(aborting.task_id)
        if generation is not None:  # interrupted here: no terminal event, but it is stored
            await generation.finished.wait()
        reply = await store.get_message(aborting.message_id)
        if reply is None:
            raise InternalError("the reply could not be stored")
        return aborting.task_id, message_from_record(reply)
