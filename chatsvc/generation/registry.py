"""The registry of the replies running on this process (``Generations``): the task group
they run in, and the use cases on them: start, follow, abort, stop, interrupt all.

The life of one reply on one process: ``Generations.start`` admits it, stores the
user's message and an empty ``streaming`` reply in one transaction, publishes
``message`` and ``started``, and starts ``Runner.run`` in the task group, which runs
the ``Conversation`` in the reply's scope, then stores the reply once and announces
its end. An abort cancels that scope (``runner.py`` says why that is enough).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Self
from uuid import UUID, uuid4

import anyio
import anyio.abc
from msgspec import UNSET, Struct, UnsetType

from chatsvc import store
from chatsvc.admission import admit
from chatsvc.bus import EventBus
from chatsvc.context import ContextBudgets
from chatsvc.errors import (
    InternalError,
    InvalidInput,
    NotFound,
    NotRunning,
    TooLarge,
)
from chatsvc.events import ChatEvents, Subscriber, event_of
from chatsvc.generation import frames
from chatsvc.generation.checkpoints import save_partial_replies
from chatsvc.generation.conversation import Conversation
from chatsvc.generation.naming import Naming
from chatsvc.generation.peers import Peers
from chatsvc.generation.reply import Aborting, Generation, Running
from chatsvc.generation.runner import Runner
from chatsvc.instances import Lease
from chatsvc.mappers import chat_from_record, message_from_record
from chatsvc.providers import LLMProvider
from chatsvc.records import Exchange
from chatsvc.settings import Settings
from chatsvc.tasks import background_tasks
from chatsvc.telemetry import AbortedBy, Telemetry
from chatsvc.titles import placeholder
from chatsvc.trees import Trees
from chatsvc.wire import (
    ChatCreated,
    ChatUpdated,
    Message,
    MessageEvent,
    Snapshot,
    Started,
)

log = logging.getLogger("chatsvc.generation")


class NewChat(Struct, frozen=True, kw_only=True):
    """The settings of a chat made by its first message."""

    title: str | None = None  # none: the message's first line
    system_prompt: str = ""
    model: str | None = None


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
    ) -> None:
        self._settings = settings
        self._events = events
        self._bus = bus
        self._lease = Lease(bus.instance, settings.instance_lease_seconds)
        self._telemetry = telemetry or Telemetry()
        self._running = Running()
        self._offered_models = frozenset(settings.model_choices)
        self._peers = Peers(bus, events, self._lease, self._running)
        budgets = budgets or ContextBudgets(settings.context_budget_tokens, settings.llm_max_tokens)
        tools = trees if settings.tree_tools else None  # none: the model is offered no tools
        talk = Conversation(settings, provider, events, self._telemetry, budgets, tools)
        self._conversation = talk
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
        self._closing = False

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

    # --- start --------------------------------------------------------------------------

    async def start(
        self,
        owner: int,
        content: str,
        *,
        chat_id: UUID | None = None,
        parent_id: UUID | UnsetType | None = UNSET,
        new_chat: NewChat | None = None,
        request_id: str | None = None,
        subscriber: Subscriber | None = None,
    ) -> Generation:
        """Store the user's message, then launch the reply. The subscriber follows the chat.

        ``parent_id`` (edit and resend): the message the new one follows, so it starts a
        new branch; left out, it continues the active branch. Without ``chat_id`` a chat
        is made (``new_chat``: its settings; by default titled with the message).
        """
        settings = self._settings
        self._check_open()
        if len(content) > settings.max_message_chars:
            raise TooLarge(f"content: longer than {settings.max_message_chars} characters")
        if not content.strip():
            raise InvalidInput("content: must not be blank")
        if chat_id is None and isinstance(parent_id, UUID):
            raise NotFound("parent_id: no such message in this chat")
        self._conversation.check_fits(content, self._offered_models)
        generation = self._admit(owner, chat_id)
        new_chat = new_chat or NewChat()
        try:
            stored = await store.create_exchange(
                owner,
                chat_id=chat_id,
                new_chat_title=new_chat.title or placeholder(content),
                # a chat titled by its user is never renamed by the model
                new_chat_title_source="user" if new_chat.title else "placeholder",
                new_chat_system_prompt=new_chat.system_prompt,
                new_chat_model=new_chat.model,
                user_content=content,
                parent=parent_id,
                assistant_id=generation.message_id,
                default_model=settings.model_name,
                offered_models=self._offered_models,
                task_id=generation.task_id,
                instance=self.instance,
                live_after=self._lease.live_after(),
                per_user_cap=settings.max_concurrent_generations,
                max_chats=settings.max_chats_per_user,
            )
            if stored is None:  # deleted in the meantime
                raise NotFound("chat not found")
        except BaseException:
            self._running.remove(generation)
            raise
        self._stored(generation, stored)
        if subscriber is not None:
            self._events.subscribe(generation.chat_id, subscriber)
        if stored.created:
            chat = chat_from_record(stored.chat)
            self._publish(generation, ChatCreated(chat=chat, request_id=request_id))
        user_message = message_from_record(stored.question)
        self._publish(generation, MessageEvent(message=user_message, request_id=request_id))
        if parent_id is not UNSET:  # a new branch is the active one
            chat = chat_from_record(stored.chat)
            self._publish(generation, ChatUpdated(chat=chat, request_id=request_id))
        self._launch(generation, request_id)
        return generation

    async def regenerate(
        self,
        owner: int,
        chat_id: UUID,
        message_id: UUID,
        *,
        request_id: str | None = None,
        subscriber: Subscriber | None = None,
    ) -> Generation:
        """A new reply in place of the reply ``message_id``: its sibling, answering the same
        user message with the same history, made the active branch. The rules of any
        reply hold (one per chat, the user's cap); the subscriber follows the chat."""
        settings = self._settings
        self._check_open()
        generation = self._admit(owner, chat_id)
        try:
            stored = await store.create_regeneration(
                owner,
                chat_id=chat_id,
                message_id=message_id,
                assistant_id=generation.message_id,
                default_model=settings.model_name,
                offered_models=self._offered_models,
                task_id=generation.task_id,
                instance=self.instance,
                live_after=self._lease.live_after(),
                per_user_cap=settings.max_concurrent_generations,
            )
            if stored is None:
                raise NotFound("chat not found")
        except BaseException:
            self._running.remove(generation)
            raise
        self._stored(generation, stored)
        if subscriber is not None:
            self._events.subscribe(chat_id, subscriber)
        chat = chat_from_record(stored.chat)
        self._publish(generation, ChatUpdated(chat=chat, request_id=request_id))
        self._launch(generation, request_id)
        return generation

    def _check_open(self) -> None:
        if self._closing:
            raise InternalError("the server is shutting down; try again in a moment")

    def _admit(self, owner: int, chat_id: UUID | None) -> Generation:
        """A new reply, admitted and registered against the replies running here.

        From the checks to the registration nothing awaits: two requests cannot both pass.
        """
        settings = self._settings
        generation = Generation(
            task_id=uuid4(),
            chat_id=chat_id or uuid4(),  # a new chat's id is known once it is stored
            owner=owner,
            message_id=uuid4(),
            model=settings.model_name,  # the chat's own, once it is read
            system_prompt=settings.default_system_prompt,
            started_at=anyio.current_time(),
        )
        running = self._running.in_chat(chat_id) if chat_id is not None else None
        if running is not None and running.owner != owner:
            raise NotFound("chat not found")  # another user's chat, as everywhere
        admit(self._running.chats_of(owner), chat_id, settings.max_concurrent_generations)
        self._running.add(generation, in_chat=chat_id is not None)
        return generation

    def _stored(self, generation: Generation, stored: Exchange) -> None:
        """What the stored exchange tells the reply: its model, prompt, question, chat."""
        settings = self._settings
        generation.model = stored.reply.model or settings.model_name
        generation.system_prompt = stored.chat.system_prompt or settings.default_system_prompt
        generation.question_id = stored.question.id
        generation.wants_title = stored.chat.title_source == "placeholder"
        if stored.created:
            generation.chat_id = stored.chat.id
            self._running.add(generation)

    def _launch(self, generation: Generation, request_id: str | None) -> None:
        """``started``, then the reply's task in the registry's task group."""
        self._publish(generation, frames.started(generation, request_id))
        assert self._task_group is not None
        name = f"generation {generation.task_id}"
        self._task_group.start_soon(self._runner.run, generation, name=name)
        self._telemetry.generation_started(
            user_id=generation.owner, chat_id=generation.chat_id, task_id=generation.task_id
        )

    def _name_chat(self, generation: Generation) -> None:
        """After a reply completed (its ``done`` is out): a chat still titled with its
        first words is named by the model, in the task group, never on the reply's path."""
        if generation.wants_title and self._task_group is not None:
            name = f"title {generation.chat_id}"
            self._task_group.start_soon(self._naming.name, generation, name=name)

    def _publish(
        self, generation: Generation, frame: ChatCreated | ChatUpdated | MessageEvent | Started
    ) -> None:
        self._events.publish(generation.chat_id, event_of(frame))

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
        self._closing = True
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
