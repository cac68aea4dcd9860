"""How a reply starts (``Launcher``): the reply to a sent message, or a regenerated one.

A start checks the request, admits the reply against the replies running here,
stores its rows in one admitted transaction (``store.create_exchange`` or
``store.create_regeneration``), publishes what changed in the chat, then
``started``, and hands the reply to the registry, which runs ``Runner.run`` in its
task group.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import contextmanager
from typing import TypeVar
from uuid import UUID, uuid4

import anyio
from msgspec import UNSET, Struct, UnsetType

from chatsvc import store
from chatsvc.admission import Admission, admit
from chatsvc.errors import InternalError, InvalidInput, NotFound, TooLarge
from chatsvc.events import ChatEvents, Subscriber, event_of
from chatsvc.generation import frames
from chatsvc.generation.conversation import Conversation
from chatsvc.generation.reply import Generation, Running
from chatsvc.instances import Lease
from chatsvc.mappers import chat_from_record, message_from_record
from chatsvc.quotas import Quotas
from chatsvc.records import Exchange, Sampling
from chatsvc.settings import Settings
from chatsvc.telemetry import Telemetry
from chatsvc.titles import placeholder
from chatsvc.wire import ChatCreated, ChatUpdated, MessageEvent, Started


class NewChat(Struct, frozen=True, kw_only=True):
    """The settings of a chat made by its first message."""

    title: str | None = None  # none: the message's first line
    system_prompt: str = ""
    model: str | None = None
    sampling: Sampling = Sampling()


class Launcher:
    """Starts replies, ``start`` (to a message sent) and ``regenerate``, which the registry runs."""

    def __init__(
        self,
        settings: Settings,
        *,
        running: Running,
        lease: Lease,
        conversation: Conversation,
        events: ChatEvents,
        telemetry: Telemetry,
        run: Callable[[Generation], None],
        quotas: Quotas | None = None,
    ) -> None:
        self._settings = settings
        self._quotas = quotas or Quotas(settings)
        self._running = running
        self._lease = lease
        self._conversation = conversation
        self._events = events
        self._telemetry = telemetry
        self._run = run
        self._offered_models = frozenset(settings.model_choices)
        self._closed = False

    def close(self) -> None:
        """Start no more replies: the server is stopping."""
        self._closed = True

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
        new_chat = new_chat or NewChat()
        with self._admitted(owner, chat_id) as generation:
            exchange = await store.create_exchange(
                self._admission(generation),
                chat_id=chat_id,
                new_chat_title=new_chat.title or placeholder(content),
                # a chat titled by its user is never renamed by the model
                new_chat_title_source="user" if new_chat.title else "placeholder",
                new_chat_system_prompt=new_chat.system_prompt,
                new_chat_model=new_chat.model,
                new_chat_sampling=new_chat.sampling,
                user_content=content,
                parent=parent_id,
                max_chats=settings.max_chats_per_user,
            )
            stored = self._stored(generation, exchange)
        if subscriber is not None:
            self._events.subscribe(generation.chat_id, subscriber)
        if stored.created:
            chat = chat_from_record(stored.chat)
            self._announce(generation, ChatCreated(chat=chat, request_id=request_id))
        user_message = message_from_record(stored.question)
        self._publish(generation, MessageEvent(message=user_message, request_id=request_id))
        if parent_id is not UNSET:  # a new branch is the active one
            chat = chat_from_record(stored.chat)
            self._announce(generation, ChatUpdated(chat=chat, request_id=request_id))
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
        self._check_open()
        with self._admitted(owner, chat_id) as generation:
            exchange = await store.create_regeneration(
                self._admission(generation), chat_id=chat_id, message_id=message_id
            )
            stored = self._stored(generation, exchange)
        if subscriber is not None:
            self._events.subscribe(chat_id, subscriber)
        chat = chat_from_record(stored.chat)
        self._announce(generation, ChatUpdated(chat=chat, request_id=request_id))
        self._launch(generation, request_id)
        return generation

    def _check_open(self) -> None:
        if self._closed:
            raise InternalError("the server is shutting down; try again in a moment")

    @contextmanager
    def _admitted(self, owner: int, chat_id: UUID | None) -> Generator[Generation]:
        """A new reply, admitted and registered against the replies running here, and
        unregistered again if the body fails (its rows not stored, the chat not found):
        the one clean-up of a half-started reply.

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
        try:
            yield generation
        except BaseException:
            self._running.remove(generation)
            raise

    def _admission(self, generation: Generation) -> Admission:
        """What the store's admitted transaction is told about the reply, the token budgets
        at this moment included (refused there, before any upstream call)."""
        return Admission(
            owner=generation.owner,
            task_id=generation.task_id,
            reply_id=generation.message_id,
            instance=self._lease.id,
            live_after=self._lease.live_after(),
            per_user_cap=self._settings.max_concurrent_generations,
            default_model=self._settings.model_name,
            offered_models=self._offered_models,
            quota=self._quotas.rule(),
        )

    def _stored(self, generation: Generation, stored: Exchange | None) -> Exchange:
        """The stored exchange (``NotFound`` if there is none: not the owner's chat, or
        deleted in the meantime), and what it tells the reply: model, prompt, question, chat."""
        if stored is None:
            raise NotFound("chat not found")
        settings = self._settings
        generation.model = stored.reply.model or settings.model_name
        generation.system_prompt = stored.chat.system_prompt or settings.default_system_prompt
        # The chat's own sampling settings as stored now (a regenerate takes them too), each
        # unset one the server's; a length stored before the limit was lowered is capped.
        chat = stored.chat
        generation.temperature = _first(chat.temperature, settings.llm_temperature)
        generation.top_p = _first(chat.top_p, settings.llm_top_p)
        max_tokens = _first(chat.max_tokens, settings.llm_max_tokens)
        if max_tokens is not None:
            max_tokens = min(max_tokens, settings.llm_max_tokens_limit)
        generation.max_tokens = max_tokens
        generation.question_id = stored.question.id
        generation.wants_title = stored.chat.title_source == "placeholder"
        if stored.created:
            generation.chat_id = stored.chat.id
            self._running.add(generation)
        return stored

    def _launch(self, generation: Generation, request_id: str | None) -> None:
        """``started``, then the reply's task in the registry's task group."""
        self._publish(generation, frames.started(generation, request_id))
        self._run(generation)
        self._telemetry.generation_started(
            user_id=generation.owner, chat_id=generation.chat_id, task_id=generation.task_id
        )

    def _publish(self, generation: Generation, frame: MessageEvent | Started) -> None:
        """To the chat's subscribers."""
        self._events.publish(generation.chat_id, event_of(frame))

    def _announce(self, generation: Generation, frame: ChatCreated | ChatUpdated) -> None:
        """To the chat's subscribers and every socket of its owner (docs/protocol.md 4.2)."""
        self._events.publish_to_owner(generation.owner, generation.chat_id, event_of(frame))


_T = TypeVar("_T")


def _first(own: _T | None, default: _T | None) -> _T | None:
    """The chat's own setting, else the server's."""
    return own if own is not None else default
